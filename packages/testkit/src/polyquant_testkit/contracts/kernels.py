"""``KernelContract``: the conformance suite every kernel must pass.

A kernel is correct when it matches its op's pure-PyTorch reference (:mod:`polyquant.kernels.ops`)
within the tolerance of its arithmetic, and dispatch runs it when it is forced by name.

Example (in a test module of a plugin)::

    from polyquant_testkit import KernelContract
    import my_plugin

    class TestMyLinear(KernelContract):
        plugin = my_plugin
        op = "linear"
        kernel_name = "cpu_int4_pow2"
        format_name = "int4_pow2"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch

from polyquant_testkit.contracts.base import PluginContract

if TYPE_CHECKING:
    from polyquant.plugins import KernelContext, KernelSpec
    from polyquant.qtensor import QTensor

__all__ = ["KernelContract"]

#: Default shapes per op: linear ``(rows, in_features, out_features)``; dequantize the weight shape;
#: conv the weight shape ``(C_out, C_in, *kernel)`` (inputs are ``(2, C_in, 8[, 8])``).
DEFAULT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "linear": ((1, 256, 128), (7, 256, 64), (32, 512, 256)),
    "dequantize": ((64, 256), (128, 512)),
    "conv": ((16, 32, 3), (16, 32, 3, 3)),
}


class KernelContract(PluginContract):
    """Checks a registered :class:`~polyquant.plugins.KernelSpec` against its op's reference.

    Attributes:
        op: the op (``"linear"``, ``"dequantize"`` or ``"conv"``).
        kernel_name: the kernel's name (required).
        format_name: the weight format to test it with (required).
        shapes: call shapes (see :data:`DEFAULT_SHAPES` for their meaning per op).
        dtypes: input dtypes to test.
        device: where the test tensors live (the kernel's device when it names one).
        tolerance: bound on ``max|out − ref| / max|ref|``.
        seed: seed of the random inputs.

    Tests: the kernel is registered and handles the format, its availability check answers (an
    unavailable kernel skips the numeric tests with its reason), outputs match the reference for every
    shape and dtype, dispatch selects it when forced with :func:`polyquant.kernels.use`, and
    :func:`polyquant.kernels.explain` lists it.
    """

    op: ClassVar[str] = "linear"
    kernel_name: ClassVar[str]
    format_name: ClassVar[str]
    shapes: ClassVar[Sequence[tuple[int, ...]] | None] = None
    dtypes: ClassVar[Sequence[torch.dtype]] = (torch.float32, torch.bfloat16)
    device: ClassVar[str | None] = None
    tolerance: ClassVar[float] = 1e-5
    seed: ClassVar[int] = 0

    # ------------------------------------------------------------------ helpers
    @property
    def kernel(self) -> KernelSpec:
        """The kernel under test, from the current registry."""
        from polyquant.plugins import get_plugin_manager

        for kernel in get_plugin_manager().get_kernels(self.op):
            if kernel.name == self.kernel_name:
                return kernel
        raise AssertionError(f"no {self.op} kernel named {self.kernel_name!r} is registered")

    @property
    def tensor_device(self) -> str:
        """The device the test tensors live on."""
        if self.device is not None:
            return self.device
        return "cpu" if self.kernel.device == "*" else self.kernel.device

    @property
    def call_shapes(self) -> Sequence[tuple[int, ...]]:
        """:attr:`shapes`, or the op's defaults."""
        if self.shapes is not None:
            return self.shapes
        if self.op not in DEFAULT_SHAPES:
            raise AssertionError(f"KernelContract has no default shapes for op {self.op!r}; set `shapes`")
        return DEFAULT_SHAPES[self.op]

    @pytest.fixture
    def usable_kernel(self) -> KernelSpec:
        """The kernel, or a skip with the reason it cannot run on this machine."""
        from polyquant.kernels import kernel_availability

        kernel = self.kernel
        reason = kernel_availability(kernel)
        if reason is not None:
            pytest.skip(f"{self.op}/{self.kernel_name} is unavailable here: {reason}")
        if self.tensor_device.startswith("cuda") and not torch.cuda.is_available():
            pytest.skip(f"{self.op}/{self.kernel_name} runs on {self.tensor_device}, which this machine lacks")
        return kernel

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _weight(self, shape: tuple[int, ...], generator: torch.Generator) -> QTensor:
        import polyquant.formats

        w = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        return polyquant.formats.get(self.format_name).quantize(w).to(self.tensor_device)

    def _call(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[tuple[Any, ...], dict[str, Any], QTensor]:
        """Positional and keyword arguments of one call of the op, and its weight."""
        g = self._generator()
        dev = self.tensor_device
        if self.op == "linear":
            rows, k, n = shape
            weight = self._weight((n, k), g)
            x = torch.randn(rows, k, generator=g).to(dev, dtype)
            bias = torch.randn(n, generator=g).to(dev, dtype)
            return (x, weight, bias), {"act": None, "act_scale": None}, weight
        if self.op == "dequantize":
            weight = self._weight(shape, g)
            return (weight, dtype), {}, weight
        if self.op == "conv":
            weight = self._weight(shape, g)
            spatial = (8,) * (len(shape) - 2)
            x = torch.randn(2, shape[1], *spatial, generator=g).to(dev, dtype)
            return (x, weight, None), {"padding": 1, "act": None, "act_scale": None}, weight
        raise AssertionError(f"KernelContract cannot build calls for op {self.op!r}; test it with your own tests")

    def _context(self, args: tuple[Any, ...], weight: QTensor, dtype: torch.dtype) -> KernelContext:
        from polyquant.plugins import KernelContext

        rows = int(args[0].numel() // args[0].shape[-1]) if self.op == "linear" else None
        return KernelContext(
            op=self.op,
            format=self.format_name,
            device=self.tensor_device.split(":")[0],
            dtype=dtype,
            weight=weight,
            batch=rows,
        )

    def _run(self, kernel: KernelSpec, args: tuple[Any, ...], kwargs: dict[str, Any], weight: QTensor) -> torch.Tensor:
        prepared = None
        if kernel.prepare is not None:
            with torch.no_grad():
                prepared = kernel.prepare(weight)
        return kernel.fn(*args, **kwargs, prepared=prepared)

    # ------------------------------------------------------------------ tests
    def test_kernel_is_registered(self) -> None:
        """The kernel is registered for the op, handles the format, is described and outranks the reference."""
        from polyquant.plugins import KERNEL_OPS

        kernel = self.kernel
        assert kernel.op == self.op and self.op in KERNEL_OPS
        assert kernel.handles(self.format_name), f"{kernel.key} does not declare format {self.format_name!r}"
        assert kernel.description, f"{kernel.key}: give the kernel a one-line description for `polyquant kernels`"
        if kernel.name != "reference":
            assert kernel.priority > -100, f"{kernel.key}: a non-reference kernel must outrank the reference (-100)"

    def test_availability_is_reported(self) -> None:
        """``available()`` answers ``None`` or a reason (an unavailable kernel is skipped with it)."""
        from polyquant.kernels import kernel_availability

        reason = kernel_availability(self.kernel)
        assert reason is None or (isinstance(reason, str) and reason.strip()), (
            f"{self.kernel.key}: available() must return None or a non-empty reason, got {reason!r}"
        )
        if reason is not None:
            pytest.skip(f"{self.kernel.key} is unavailable here: {reason}")

    def test_matches_reference(self, usable_kernel: KernelSpec) -> None:
        """Outputs match the op's reference for every shape and dtype within :attr:`tolerance`."""
        from polyquant.kernels.ops import reference_kernel

        reference = reference_kernel(self.op)
        tested = 0
        for shape in self.call_shapes:
            for dtype in self.dtypes:
                args, kwargs, weight = self._call(shape, dtype)
                if _declines(usable_kernel, self._context(args, weight, dtype)) is not None:
                    continue  # dispatch never routes this call to the kernel
                tested += 1
                out = self._run(usable_kernel, args, kwargs, weight)
                ref = reference.fn(*args, **kwargs, prepared=None)
                assert out.shape == ref.shape, (
                    f"{shape} {dtype}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
                )
                assert out.dtype == ref.dtype, f"{shape} {dtype}: dtype {out.dtype} != reference {ref.dtype}"
                scale = float(ref.float().abs().max()) or 1.0
                error = float((out.float() - ref.float()).abs().max()) / scale
                assert error <= self.tolerance, (
                    f"{self.kernel_name} {shape} {dtype}: max error {error:.3g} (relative to max|ref|) exceeds "
                    f"tolerance {self.tolerance:.3g}"
                )
        assert tested, f"{self.kernel_name} declines every test call; set `shapes`/`dtypes` to calls it supports"

    def test_selected_when_forced(self, usable_kernel: KernelSpec) -> None:
        """``polyquant.kernels.use`` forces the kernel and the dispatched op returns its output."""
        from polyquant import kernels

        shape = self.call_shapes[0]
        dtype = self.dtypes[0]
        args, kwargs, weight = self._call(shape, dtype)
        ctx = self._context(args, weight, dtype)
        why = _declines(usable_kernel, ctx)
        if why is not None:
            pytest.skip(f"{usable_kernel.key} declines the first test shape: {why}")
        with kernels.use(**{self.op: self.kernel_name}):
            assert kernels.select_kernel(ctx).name == self.kernel_name
            dispatched = getattr(kernels, self.op)(*args, **kwargs)
        direct = self._run(usable_kernel, args, kwargs, weight)
        torch.testing.assert_close(dispatched, direct, rtol=0, atol=0)

    def test_explain_lists_the_kernel(self) -> None:
        """``polyquant.kernels.explain`` lists the kernel, with a reason for every decision."""
        from polyquant import kernels

        args, _, weight = self._call(self.call_shapes[0], self.dtypes[0])
        choices = kernels.explain(self.op, self._context(args, weight, self.dtypes[0]))
        names = [c.kernel.name for c in choices]
        assert self.kernel_name in names
        assert sum(c.selected for c in choices) <= 1
        for choice in choices:
            assert choice.reason, f"{choice.kernel.key}: explain gave no reason"


def _declines(kernel: KernelSpec, ctx: KernelContext) -> str | None:
    """Why ``kernel`` declines the call ``ctx`` (its ``supports`` answer), ``None`` when it accepts it."""
    return None if kernel.supports is None else kernel.supports(ctx)

"""``QuantizerContract``: the conformance suite every weight quantization algorithm must pass.

A quantizer may be smarter than round-to-nearest, never meaningfully worse: its error is compared
with RTN's on the same weight (and, for calibration-based quantizers, the same inputs).

Example (in a test module of a plugin)::

    from polyquant_testkit import QuantizerContract
    import my_plugin

    class TestMyGPTQ(QuantizerContract):
        plugin = my_plugin
        quantizer_name = "my-gptq"
        format_name = "int4"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from polyquant_testkit.contracts.base import PluginContract

if TYPE_CHECKING:
    from polyquant.formats import FormatSpec
    from polyquant.qtensor import QTensor
    from polyquant.quantizers import Quantizer

__all__ = ["QuantizerContract"]


class QuantizerContract(PluginContract):
    """Checks a registered quantizer (:class:`~polyquant.plugins.QuantizerInfo`).

    Attributes:
        quantizer_name: the registry name (a recipe's ``method``; required).
        format_name: the weight format to quantize to (required).
        method_args: keyword arguments for the quantizer's factory.
        group_size: applied to the format with ``with_options`` (``None`` keeps the format's default).
        weight_shape: ``(out_features, in_features)`` of the test weight.
        calibration_rows: rows of the correlated random inputs used for calibration statistics.
        slack: the error may exceed RTN's by at most this fraction.
        seed: seed of the weight and the inputs.

    Error measure: ``‖X Wᵀ − X Ŵᵀ‖`` on the calibration inputs for quantizers that need calibration (what
    they optimize), ``‖W − Ŵ‖`` otherwise.

    Tests: registered and constructible, returns a QTensor of the weight's shape in the format, error
    ≤ RTN's ×(1 + slack), deterministic, leaves the weight untouched.
    """

    quantizer_name: ClassVar[str]
    format_name: ClassVar[str]
    method_args: ClassVar[Mapping[str, Any]] = {}
    group_size: ClassVar[int | None] = None
    weight_shape: ClassVar[tuple[int, int]] = (64, 256)
    calibration_rows: ClassVar[int] = 512
    slack: ClassVar[float] = 0.05
    seed: ClassVar[int] = 0

    # ------------------------------------------------------------------ helpers
    @property
    def spec(self) -> FormatSpec:
        """The target format (with :attr:`group_size` applied)."""
        import polyquant.formats

        spec = polyquant.formats.get(self.format_name)
        return spec if self.group_size is None else spec.with_options(group_size=self.group_size)

    def make(self, name: str | None = None, args: Mapping[str, Any] | None = None) -> Quantizer:
        """Build the quantizer under test (or another registered one) through the registry."""
        from polyquant.quantizers import make_quantizer

        if name is None:
            return make_quantizer(self.quantizer_name, dict(self.method_args))
        return make_quantizer(name, dict(args or {}))

    def weight(self) -> torch.Tensor:
        """A seeded weight with a few large-magnitude columns (outliers make the comparison informative)."""
        generator = torch.Generator().manual_seed(self.seed)
        w = torch.randn(self.weight_shape, generator=generator) * 0.02
        w[:, :: max(1, self.weight_shape[1] // 8)] *= 4.0
        return w

    def inputs(self) -> torch.Tensor:
        """Correlated inputs ``(calibration_rows, in_features)`` with a few dominant channels."""
        generator = torch.Generator().manual_seed(self.seed + 1)
        k = self.weight_shape[1]
        mix = torch.randn(k, k, generator=generator) / k**0.5 + torch.eye(k)
        x = torch.randn(self.calibration_rows, k, generator=generator) @ mix
        x[:, :4] *= 10.0
        return x

    def stats(self, quantizer: Quantizer) -> dict[str, torch.Tensor] | None:
        """Calibration statistics for quantizers that need them (``None`` otherwise)."""
        if not quantizer.needs_calibration:
            return None
        from polyquant.quantizers.stats import InputStats

        stats = InputStats()
        stats.add(self.inputs())
        return stats.as_dict()

    def error(self, quantizer: Quantizer, w: torch.Tensor, qt: QTensor) -> float:
        """The error measure of this suite for ``qt`` (see the class docstring)."""
        diff = qt.dequantize(torch.float32) - w
        if quantizer.needs_calibration:
            return float((self.inputs() @ diff.T).norm())
        return float(diff.norm())

    def quantize(self, quantizer: Quantizer, w: torch.Tensor) -> QTensor:
        """``quantizer.quantize_weight`` with the statistics it needs."""
        return quantizer.quantize_weight(w, self.spec, stats=self.stats(quantizer))

    # ------------------------------------------------------------------ tests
    def test_quantizer_is_registered(self) -> None:
        """The quantizer is registered, described, and its factory builds a matching Quantizer."""
        from polyquant.plugins import get_plugin_manager
        from polyquant.quantizers import Quantizer

        info = get_plugin_manager().get_quantizers().get(self.quantizer_name)
        assert info is not None, f"no quantizer named {self.quantizer_name!r} is registered"
        assert info.description, f"quantizer {self.quantizer_name!r}: give it a one-line description"
        quantizer = self.make()
        assert isinstance(quantizer, Quantizer)
        assert quantizer.name == self.quantizer_name
        assert quantizer.needs_calibration == info.needs_calibration

    def test_returns_qtensor_of_the_weight_shape(self) -> None:
        """The result is a finite QTensor of the weight's shape in the requested format."""
        from polyquant.qtensor import QTensor

        w = self.weight()
        qt = self.quantize(self.make(), w)
        assert isinstance(qt, QTensor)
        assert tuple(qt.shape) == tuple(w.shape)
        assert qt.spec == self.spec, f"the quantizer changed the format: {qt.spec.summary()} != {self.spec.summary()}"
        assert bool(torch.isfinite(qt.dequantize()).all())

    def test_error_not_worse_than_rtn(self) -> None:
        """The error is at most RTN's times ``1 + slack``."""
        w = self.weight()
        quantizer, rtn = self.make(), self.make("rtn")
        # each quantizer gets its own copy: one that writes into its input must not move the reference
        error = self.error(quantizer, w, self.quantize(quantizer, w.clone()))
        baseline = self.error(quantizer, w, self.quantize(rtn, w.clone()))
        assert error <= baseline * (1 + self.slack), (
            f"{self.quantizer_name}: error {error:.5g} exceeds RTN's {baseline:.5g} by more than {self.slack:.0%}"
        )

    def test_is_deterministic(self) -> None:
        """Two runs on the same weight store identical tensors."""
        first, second = self.quantize(self.make(), self.weight()), self.quantize(self.make(), self.weight())
        for key, tensor in first.tensors().items():
            assert torch.equal(tensor, second.tensors()[key]), f"{self.quantizer_name}: {key} differs between runs"

    def test_leaves_the_weight_untouched(self) -> None:
        """The weight passed in is not modified."""
        w = self.weight()
        before = w.clone()
        self.quantize(self.make(), w)
        assert torch.equal(w, before), f"{self.quantizer_name} modified the weight it was given"

"""Generated conformance suite: every registered kernel of every op against the op's reference.

The cases are generated from the process-wide plugin manager, so the suite covers whatever kernels are
installed (this package's, the core's, third-party ones). For each non-reference kernel, each format it
handles that exists (every format for ``"*"``), and several input shapes (batch 1, batch 32, an odd
batch, a 3-D input), the test tries a few weight layouts and activation settings, runs those the kernel
supports, and compares its output with the reference implementation of the op.

Tolerance: ``max |y − y_ref| / max |y_ref|`` below the format's entry in :data:`TOLERANCE`. The fast CPU
kernels compute in bfloat16 (8 significant bits: each input and weight value is rounded by up to
2⁻⁹ ≈ 0.2%, the output once more), which puts their error near 0.4%; 1% leaves room for unlucky
cancellation without hiding a wrong scale or zero point (those are off by ≥ 1/16 of a code step
times K). Exact kernels (W8A8 integer sums, the Triton kernel in float32) are held to 1e-5 in
``test_kernels.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from polyquant.activations import ActivationSpec
from polyquant.kernels import kernel_availability, use
from polyquant.kernels import linear as dispatch_linear
from polyquant.kernels.ops import (
    conv_reference,
    dequantize_reference,
    linear_reference,
    quantize_activation_reference,
)
from polyquant.plugins import (
    KernelContext,
    KernelSpec,
    PluginManager,
    get_plugin_manager,
    hookimpl,
    using_plugin_manager,
)

#: Relative tolerance per weight format (see the module docstring); others use DEFAULT_TOLERANCE.
TOLERANCE = {"int4": 1e-2, "uint4": 1e-2, "int8": 1e-2, "uint8": 1e-2}
DEFAULT_TOLERANCE = 2e-2
#: Leading shapes of the input: batch 1 (decode), batch 32, an odd batch, and a (batch, sequence) input.
LEAD_SHAPES: dict[str, tuple[int, ...]] = {"b1": (1,), "b32": (32,), "b7": (7,), "b2x5": (2, 5)}
#: Weight layouts tried for every format (those a format or kernel rejects are skipped).
WEIGHT_OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"group_size": 32},
    {"group_size": 128},
    {"group_size": 64, "symmetric": False},
    {"group_size": 0, "symmetric": True},  # per channel, symmetric: the int8 engine's layout (W8A8, W4A8)
)
#: Activation settings tried for every linear/conv kernel: weight-only, dynamic per token, static per tensor.
ACTIVATIONS: tuple[tuple[ActivationSpec | None, float | None], ...] = (
    (None, None),
    (ActivationSpec("int8", granularity="token", dynamic=True), None),
    (ActivationSpec("int8", granularity="tensor", dynamic=False), 0.04),
)
LINEAR_SHAPE = (64, 256)  # (out_features, in_features)
CONV_SHAPE = (16, 8, 3, 3)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.double(), ref.double()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _weights(fmt: str, shape: tuple[int, ...]) -> list[tuple[str, Any]]:
    """``(label, QTensor)`` for every weight option the format accepts for ``shape``."""
    spec = get_plugin_manager().get_format(fmt)
    gen = torch.Generator().manual_seed(sum(map(ord, fmt)))
    dense = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
    out = []
    for options in WEIGHT_OPTIONS:
        try:
            qt = (spec.with_options(**options) if options else spec).quantize(dense)
        except Exception:  # noqa: BLE001 - the format does not take this option/shape: not a kernel case
            continue
        out.append((",".join(f"{k}={v}" for k, v in options.items()) or "default", qt))
    return out


@dataclass
class Outcome:
    """What one (kernel, format, shape) case ran and why the rest was skipped."""

    ran: list[str]
    skipped: list[str]


def _supported(kernel: KernelSpec, ctx: KernelContext) -> str | None:
    return None if kernel.supports is None else kernel.supports(ctx)


def _linear_cases(kernel: KernelSpec, fmt: str, lead: tuple[int, ...], tol: float, outcome: Outcome) -> None:
    gen = torch.Generator().manual_seed(7)
    for label, qt in _weights(fmt, LINEAR_SHAPE):
        n, k = LINEAR_SHAPE
        x = torch.randn(*lead, k, generator=gen)
        bias = torch.randn(n, generator=gen)
        for act, scale in ACTIVATIONS:
            act_scale = None if scale is None else torch.tensor(scale)
            case = f"{label}/{'w-only' if act is None else act.name}"
            ctx = KernelContext(
                op="linear",
                format=fmt,
                device="cpu",
                dtype=x.dtype,
                weight=qt,
                act_format=None if act is None else act.format,
                batch=x.numel() // k,
            )
            why = _supported(kernel, ctx)
            if why is not None:
                outcome.skipped.append(f"{case}: {why}")
                continue
            prepared = kernel.prepare(qt) if kernel.prepare is not None else None
            y = kernel.fn(x, qt, bias, act=act, act_scale=act_scale, prepared=prepared)
            ref = linear_reference(x, qt, bias, act=act, act_scale=act_scale)
            assert y.shape == ref.shape and y.dtype == ref.dtype, case
            err = relative_error(y, ref)
            assert err <= tol, f"{kernel.key} on {fmt} {case} batch {lead}: relative error {err:.2e} > {tol:.0e}"
            with use(linear=kernel.name):  # the same kernel through dispatch, forced by name
                routed = dispatch_linear(x, qt, bias, act=act, act_scale=act_scale, cache={})
            torch.testing.assert_close(routed, y, rtol=0, atol=0)
            outcome.ran.append(case)


def _conv_cases(kernel: KernelSpec, fmt: str, lead: tuple[int, ...], tol: float, outcome: Outcome) -> None:
    gen = torch.Generator().manual_seed(8)
    for label, qt in _weights(fmt, CONV_SHAPE):
        x = torch.randn(lead[0], CONV_SHAPE[1], 10, 10, generator=gen)
        for act, scale in ACTIVATIONS:
            act_scale = None if scale is None else torch.tensor(scale)
            case = f"{label}/{'w-only' if act is None else act.name}"
            ctx = KernelContext(
                op="conv",
                format=fmt,
                device="cpu",
                dtype=x.dtype,
                weight=qt,
                act_format=None if act is None else act.format,
                batch=lead[0],
            )
            why = _supported(kernel, ctx)
            if why is not None:
                outcome.skipped.append(f"{case}: {why}")
                continue
            prepared = kernel.prepare(qt) if kernel.prepare is not None else None
            y = kernel.fn(x, qt, None, padding=1, act=act, act_scale=act_scale, prepared=prepared)
            ref = conv_reference(x, qt, None, padding=1, act=act, act_scale=act_scale)
            err = relative_error(y, ref)
            assert err <= tol, f"{kernel.key} on {fmt} {case}: relative error {err:.2e} > {tol:.0e}"
            outcome.ran.append(case)


def _dequantize_cases(kernel: KernelSpec, fmt: str, lead: tuple[int, ...], tol: float, outcome: Outcome) -> None:
    for label, qt in _weights(fmt, LINEAR_SHAPE):
        ctx = KernelContext(op="dequantize", format=fmt, device="cpu", dtype=torch.float32, weight=qt)
        why = _supported(kernel, ctx)
        if why is not None:
            outcome.skipped.append(f"{label}: {why}")
            continue
        prepared = kernel.prepare(qt) if kernel.prepare is not None else None
        err = relative_error(kernel.fn(qt, torch.float32, prepared=prepared), dequantize_reference(qt, torch.float32))
        assert err <= tol, f"{kernel.key} on {fmt} {label}: relative error {err:.2e} > {tol:.0e}"
        outcome.ran.append(label)


def _quantize_activation_cases(
    kernel: KernelSpec, fmt: str, lead: tuple[int, ...], tol: float, outcome: Outcome
) -> None:
    x = torch.randn(*lead, 96, generator=torch.Generator().manual_seed(9))
    for act, scale in ACTIVATIONS[1:]:
        if act is None or (fmt != "*" and act.format != fmt):
            continue
        act_scale = None if scale is None else torch.tensor(scale)
        ctx = KernelContext(
            op="quantize_activation", format=act.format, device="cpu", dtype=x.dtype, act_format=act.format
        )
        why = _supported(kernel, ctx)
        if why is not None:
            outcome.skipped.append(f"{act.name}: {why}")
            continue
        codes, s = kernel.fn(x, act, act_scale)
        ref_codes, ref_s = quantize_activation_reference(x, act, act_scale)
        err = relative_error(codes * s, ref_codes * ref_s)
        assert err <= tol, f"{kernel.key} {act.name}: relative error {err:.2e} > {tol:.0e}"
        outcome.ran.append(act.name)


CASES: dict[str, Callable[[KernelSpec, str, tuple[int, ...], float, Outcome], None]] = {
    "linear": _linear_cases,
    "conv": _conv_cases,
    "dequantize": _dequantize_cases,
    "quantize_activation": _quantize_activation_cases,
}


def check_kernel(kernel: KernelSpec, fmt: str, lead: tuple[int, ...]) -> Outcome:
    """Run every supported case of ``kernel`` on ``fmt`` and compare with the reference (AssertionError if off)."""
    outcome = Outcome([], [])
    if kernel.op in CASES:
        CASES[kernel.op](kernel, fmt, lead, TOLERANCE.get(fmt, DEFAULT_TOLERANCE), outcome)
    return outcome


def _formats_of(kernel: KernelSpec) -> list[str]:
    known = get_plugin_manager().get_formats()
    if kernel.op == "quantize_activation":
        return [f for f in ("int8", "int4", "fp8_e4m3", "fp8_e5m2") if kernel.handles(f)]
    return sorted(known) if "*" in kernel.formats else [f for f in kernel.formats if f in known]


def _generated_cases() -> list[Any]:
    params = []
    for kernel in get_plugin_manager().get_kernels():
        if kernel.backend == "reference" or kernel.op not in CASES:
            continue  # the references define the ops; they are checked in core/tests
        for fmt in _formats_of(kernel):
            for label, lead in LEAD_SHAPES.items():
                params.append(pytest.param(kernel, fmt, lead, id=f"{kernel.key}-{fmt}-{label}"))
    return params


@pytest.mark.parametrize(("kernel", "fmt", "lead"), _generated_cases())
def test_kernel_matches_reference(kernel: KernelSpec, fmt: str, lead: tuple[int, ...]) -> None:
    unavailable = kernel_availability(kernel)
    if unavailable is not None:
        pytest.skip(f"{kernel.key} is unavailable here: {unavailable}")
    if kernel.device not in ("cpu", "*"):
        pytest.skip(f"{kernel.key} runs on {kernel.device}; this suite runs on CPU")
    outcome = check_kernel(kernel, fmt, lead)
    if not outcome.ran:
        pytest.skip(f"{kernel.key} supports no generated case for {fmt}: {'; '.join(outcome.skipped)}")


def test_the_suite_covers_this_packages_kernels() -> None:
    generated = {p.values[0].key for p in _generated_cases()}
    assert {"linear/cpu_int4pack", "linear/cpu_int8pack", "linear/cpu_w8a8_intmm", "linear/triton_int4"} <= generated


def test_every_available_cpu_kernel_runs_some_case() -> None:
    for kernel in get_plugin_manager().get_kernels():
        if kernel.backend == "reference" or kernel.device != "cpu" or kernel_availability(kernel) is not None:
            continue
        ran = [c for fmt in _formats_of(kernel) for c in check_kernel(kernel, fmt, (3,)).ran]
        assert ran, f"{kernel.key} ran no conformance case"


# ------------------------------------------------------------------- the checker itself catches mistakes
def _wrapped(op: str, fn: Callable[..., Any], name: str) -> KernelSpec:
    return KernelSpec(op=op, name=name, formats=("int8",), device="cpu", backend="test", fn=fn)


def _off_by(factor: float, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrong(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        return (out[0] * factor, out[1]) if isinstance(out, tuple) else out * factor

    return wrong


REFERENCES: dict[str, Callable[..., Any]] = {
    "linear": linear_reference,
    "conv": conv_reference,
    "dequantize": dequantize_reference,
    "quantize_activation": quantize_activation_reference,
}


@pytest.mark.parametrize("op", list(REFERENCES))
def test_checker_accepts_a_correct_kernel_and_rejects_a_wrong_one(op: str) -> None:
    good = _wrapped(op, REFERENCES[op], "good")
    bad = _wrapped(op, _off_by(1.05, REFERENCES[op]), "bad")

    class Plugin:
        @hookimpl
        def polyquant_register_kernels(self) -> list[KernelSpec]:
            return [good, bad]

    with using_plugin_manager(PluginManager(entry_points=False)) as pm:
        pm.register(Plugin(), "checker-test")
        assert check_kernel(good, "int8", (3,)).ran
        with pytest.raises(AssertionError, match="relative error"):
            check_kernel(bad, "int8", (3,))

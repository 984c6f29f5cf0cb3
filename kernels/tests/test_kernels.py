"""The kernels of polyquant-kernels against the references: exactness, dtypes, shapes, capability checks.

Two kinds of numeric checks:

* **bit-exact** on inputs where bfloat16 arithmetic is exact (power-of-two scales, integer-valued
  zero points, sparse ±1 inputs, small sums): any error in packing, zero-point mapping or scale layout
  shows up as a mismatch, without tolerance hiding it;
* **tolerance** on random data: bfloat16 paths within 1% relative error (see ``test_conformance.py``),
  exact paths (W8A8 int32 sums, the Triton kernel in float32) within 1e-5.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import polyquant
from polyquant.activations import ActivationSpec
from polyquant.formats import QParams
from polyquant.kernels import explain, kernel_availability, select_kernel
from polyquant.kernels import linear as dispatch_linear
from polyquant.kernels.ops import linear_reference
from polyquant.plugins import KernelContext, get_plugin_manager
from polyquant_kernels import cpu_int4, cpu_int8, triton_int4
from polyquant_kernels.layout import affine_groups
from polyquant_kernels.plugin import polyquant_register_kernels

BF16_TOL = 1e-2
EXACT_TOL = 1e-5


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref.double()).abs().max() / ref.double().abs().max())


def spec(fmt: str, **options: Any) -> Any:
    base = polyquant.formats.get(fmt)
    return base.with_options(**options) if options else base


def ctx(qt: Any, dtype: torch.dtype = torch.float32, act: str | None = None, batch: int = 4) -> KernelContext:
    return KernelContext(
        op="linear", format=qt.spec.name, device="cpu", dtype=dtype, weight=qt, act_format=act, batch=batch
    )


def exact_weight(fmt_spec: Any, n: int, k: int, seed: int = 0) -> Any:
    """A QTensor whose codes are random and whose scales are 0.5 or 1 (zeros integers): bf16-exact."""
    gen = torch.Generator().manual_seed(seed)
    scale_shape = fmt_spec.granularity.scale_shape((n, k))
    scale = 2.0 ** -torch.randint(0, 2, scale_shape, generator=gen).float()
    lo, hi = fmt_spec.element.qmin, fmt_spec.element.qmax
    zero = None if fmt_spec.symmetric else torch.randint(lo, hi + 1, scale_shape, generator=gen).float()
    values = torch.randint(lo, hi + 1, (n, k), generator=gen).float()
    group = k // scale.reshape(n, -1).shape[1] if scale.dim() else k
    expand = scale.reshape(n, -1).repeat_interleave(group, 1) if scale.dim() else scale
    shift = 0.0 if zero is None else zero.reshape(n, -1).repeat_interleave(group, 1)
    qt = fmt_spec.quantize((values - shift) * expand, qparams=QParams(scale, zero))
    assert torch.equal(fmt_spec.decode(qt.codes()), values)
    return qt


def sparse_signs(rows: int, k: int, nonzeros: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(rows, k)
    for r in range(rows):
        cols = torch.randperm(k, generator=gen)[:nonzeros]
        x[r, cols] = torch.randint(0, 2, (nonzeros,), generator=gen).float() * 2 - 1
    return x


# ------------------------------------------------------------------------------------------ registry
def test_plugin_registers_every_kernel_with_a_description() -> None:
    kernels = {k.name: k for k in polyquant_register_kernels()}
    assert set(kernels) == {"cpu_int4pack", "cpu_int8pack", "cpu_w8a8_intmm", "triton_int4"}
    assert all(k.description and k.prepare is not None for k in kernels.values())
    assert get_plugin_manager().plugin("kernels").status == "loaded"


def test_cpu_kernels_are_available_here_and_triton_explains_why_not() -> None:
    assert cpu_int4.available() is None
    assert cpu_int8.available_int8pack() is None
    assert cpu_int8.available_int_mm() is None
    reason = kernel_availability(triton_int4.KERNEL)
    if not torch.cuda.is_available():
        assert reason in ("no CUDA device", "triton is not installed (pip install 'polyquant-kernels[triton]')")


def test_other_formats_stay_on_the_reference() -> None:
    for fmt in ("nf4", "mxfp4", "int3", "fp8_e4m3"):
        qt = spec(fmt).quantize(torch.randn(32, 128))
        choices = {c.name: c.reason for c in explain("linear", ctx(qt))}
        assert choices["reference"] == "selected", (fmt, choices)
        assert choices["cpu_int4pack"].startswith("format not handled")


# ------------------------------------------------------------------------------------------ int4
@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("int4", {"group_size": 32}),
        ("int4", {"group_size": 128}),
        ("int4", {"group_size": 256}),
        ("int4", {"group_size": 512}),
        ("int4", {"group_size": 0}),
        ("uint4", {"group_size": 64}),
        ("int4", {"group_size": 64, "symmetric": False}),
    ],
    ids=["int4-g32", "int4-g128", "int4-g256", "int4-g512", "int4-channel", "uint4-g64", "int4-asym-g64"],
)
def test_int4_kernel_is_bit_exact_where_bf16_is_exact(fmt: str, options: dict[str, Any]) -> None:
    qt = exact_weight(spec(fmt, **options), 32, 512)
    assert cpu_int4.supports(ctx(qt)) is None
    x = sparse_signs(5, 512, nonzeros=3)
    y = cpu_int4.linear_int4(x, qt, prepared=cpu_int4.prepare(qt))
    assert torch.equal(y, linear_reference(x, qt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lead", [(1,), (32,), (7,), (2, 3)], ids=["b1", "b32", "b7", "3d"])
def test_int4_kernel_on_every_input_dtype(dtype: torch.dtype, lead: tuple[int, ...]) -> None:
    qt = spec("int4", group_size=128).quantize(torch.randn(48, 256))
    x = torch.randn(*lead, 256).to(dtype)
    bias = torch.randn(48).to(dtype)
    assert cpu_int4.supports(ctx(qt, dtype)) is None
    y = cpu_int4.linear_int4(x, qt, bias, prepared=cpu_int4.prepare(qt))
    ref = linear_reference(x, qt, bias)
    assert y.dtype == dtype and y.shape == (*lead, 48)
    assert rel_err(y, ref) < BF16_TOL


def test_int4_supports_explains_every_refusal() -> None:
    assert cpu_int4.supports(ctx(spec("int4", group_size=16).quantize(torch.randn(32, 64)))) == (
        "needs group size multiple of 32 (got 16)"
    )
    assert cpu_int4.supports(ctx(spec("int4", group_size=32).quantize(torch.randn(24, 64)))) == (
        "needs out_features multiple of 16 (got 24)"
    )
    qt = spec("int4", group_size=32).quantize(torch.randn(32, 64))
    assert cpu_int4.supports(ctx(qt, act="int8")) == "weight-only kernel: activations must not be quantized (got int8)"
    assert cpu_int4.supports(ctx(qt, torch.float64)) == "needs a float32, float16 or bfloat16 input, got torch.float64"
    assert cpu_int4.supports(ctx(spec("int8").quantize(torch.randn(32, 64)))) == "needs 16 code values, int8 has 256"
    three_d = spec("int4", group_size=32).quantize(torch.randn(2, 32, 64))
    assert cpu_int4.supports(ctx(three_d)) == "needs a 2-D weight, got shape (2, 32, 64)"
    reasons = {
        c.name: c.reason for c in explain("linear", ctx(spec("int4", group_size=16).quantize(torch.randn(32, 64))))
    }
    assert reasons["cpu_int4pack"] == "unsupported: needs group size multiple of 32 (got 16)"
    assert reasons["reference"] == "selected"


# ------------------------------------------------------------------------------------------ int8
@pytest.mark.parametrize("options", [{}, {"group_size": 0}], ids=["default", "channel"])
def test_int8_weight_only_is_bit_exact_where_bf16_is_exact(options: dict[str, Any]) -> None:
    qt = exact_weight(spec("int8", **options), 24, 256)
    x = sparse_signs(3, 256, nonzeros=2)
    y = cpu_int8.linear_int8_weight_only(x, qt, prepared=cpu_int8.prepare(qt))
    assert torch.equal(y, linear_reference(x, qt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_int8_weight_only_on_every_input_dtype(dtype: torch.dtype) -> None:
    qt = spec("int8").quantize(torch.randn(40, 96))
    x = torch.randn(6, 96).to(dtype)
    y = cpu_int8.linear_int8_weight_only(x, qt, torch.ones(40, dtype=dtype), prepared=cpu_int8.prepare(qt))
    assert y.dtype == dtype
    assert rel_err(y, linear_reference(x, qt, torch.ones(40, dtype=dtype))) < BF16_TOL


W8A8_ACTS = {
    "token-dyn": (ActivationSpec("int8", granularity="token"), None),
    "tensor-dyn": (ActivationSpec("int8", granularity="tensor"), None),
    "tensor-static": (ActivationSpec("int8", granularity="tensor", dynamic=False), torch.tensor(0.02)),
    "token-dyn-asym": (ActivationSpec("int8", granularity="token", symmetric=False), None),
}


@pytest.mark.parametrize("act_name", list(W8A8_ACTS))
@pytest.mark.parametrize("lead", [(1,), (32,), (5,), (2, 3)], ids=["b1", "b32", "b5", "3d"])
def test_w8a8_matches_the_reference_to_float32_rounding(act_name: str, lead: tuple[int, ...]) -> None:
    act, act_scale = W8A8_ACTS[act_name]
    qt = spec("int8").quantize(torch.randn(40, 160))
    x = torch.randn(*lead, 160) + 0.5  # an offset makes the asymmetric zero point non-trivial
    bias = torch.randn(40)
    assert cpu_int8.supports_w8a8(ctx(qt, act="int8")) is None
    y = cpu_int8.linear_w8a8(x, qt, bias, act=act, act_scale=act_scale, prepared=cpu_int8.prepare(qt))
    ref = linear_reference(x, qt, bias, act=act, act_scale=act_scale)
    assert y.shape == ref.shape
    assert rel_err(y, ref) < EXACT_TOL


@pytest.mark.parametrize("k", [2, 3, 17])
def test_w8a8_small_reductions_are_exact(k: int) -> None:
    qt = spec("int8").quantize(torch.randn(8, k))
    act = ActivationSpec("int8")
    x = torch.randn(4, k)
    y = cpu_int8.linear_w8a8(x, qt, act=act, prepared=cpu_int8.prepare(qt))
    assert rel_err(y, linear_reference(x, qt, act=act)) < EXACT_TOL


def test_w8a8_half_inputs_return_their_dtype() -> None:
    qt = spec("int8").quantize(torch.randn(16, 64))
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(3, 64).to(dtype)
        y = cpu_int8.linear_w8a8(x, qt, act=ActivationSpec("int8"))
        assert y.dtype == dtype
        assert rel_err(y, linear_reference(x, qt, act=ActivationSpec("int8"))) < BF16_TOL


def test_int8_supports_explain_every_refusal() -> None:
    int8 = spec("int8").quantize(torch.randn(16, 64))
    assert cpu_int8.supports_int8pack(ctx(int8, act="int8")).startswith("weight-only kernel")
    assert cpu_int8.supports_w8a8(ctx(int8)) == "needs int8 activations (W8A8), got unquantized activations"
    assert cpu_int8.supports_w8a8(ctx(int8, act="fp8_e4m3")) == "needs int8 activations (W8A8), got fp8_e4m3"
    grouped = spec("int8", group_size=32).quantize(torch.randn(16, 64))
    assert (
        cpu_int8.supports_int8pack(ctx(grouped)) == "needs per-channel or per-tensor weight scales, got per-group(32)"
    )
    asym = spec("int8", symmetric=False, group_size=0).quantize(torch.randn(16, 64))
    assert cpu_int8.supports_w8a8(ctx(asym, act="int8")) == "needs symmetric weights (no zero point)"
    assert cpu_int8.supports_w8a8(ctx(spec("int8").quantize(torch.randn(16, 1)), act="int8")) == (
        "needs in_features >= 2 (got 1)"
    )


def test_dispatch_picks_the_int8_kernel_by_activation_setting() -> None:
    qt = spec("int8").quantize(torch.randn(16, 64))
    assert select_kernel(ctx(qt)).name == "cpu_int8pack"
    assert select_kernel(ctx(qt, act="int8")).name == "cpu_w8a8_intmm"
    assert select_kernel(ctx(qt, act="fp8_e4m3")).name == "reference"


# ------------------------------------------------------------------------------------------ dispatch
def test_module_cache_repacks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    original = cpu_int4.Int4PackedWeight

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cpu_int4, "Int4PackedWeight", counting)
    qt = spec("int4", group_size=64).quantize(torch.randn(32, 128))
    cache: dict[str, Any] = {}
    outputs = [dispatch_linear(torch.randn(b, 128), qt, cache=cache) for b in (1, 4, 33, 1)]
    assert len(calls) == 1 and [o.shape[0] for o in outputs] == [1, 4, 33, 1]


def test_layout_round_trips_every_integer_weight() -> None:
    for fmt, options in [("int4", {"group_size": 32}), ("uint4", {}), ("int8", {}), ("int3", {"group_size": 0})]:
        qt = spec(fmt, **options).quantize(torch.randn(16, 128))
        assert torch.equal(affine_groups(qt).dequantize(), qt.dequantize(torch.float32)), fmt


# ------------------------------------------------------------------------------------------ triton
@pytest.mark.triton
@pytest.mark.parametrize("fmt_options", [("int4", {"group_size": 32}), ("uint4", {"group_size": 0})], ids=str)
def test_triton_kernel_matches_the_reference_on_qtensors(fmt_options: tuple[str, dict[str, Any]]) -> None:
    pytest.importorskip("triton", reason="triton is not installed (pip install 'polyquant-kernels[triton]')")
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not isinstance(tl.zeros, InterpretedFunction):
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 was set; run kernels/tests in their own pytest process"
        )
    fmt, options = fmt_options
    qt = spec(fmt, **options).quantize(torch.randn(48, 128)).to(device)
    assert triton_int4.supports(ctx(qt)) is None
    x = torch.randn(3, 128, device=device)
    y = triton_int4.linear_triton_int4(x, qt, torch.ones(48, device=device), prepared=triton_int4.prepare(qt))
    assert rel_err(y.cpu(), linear_reference(x, qt, torch.ones(48, device=device)).cpu()) < EXACT_TOL

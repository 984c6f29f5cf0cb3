"""The reference implementations of the kernel ops, and the ops run end to end through dispatch.

The references define what every kernel must compute, so they are checked against independent
computations: dense ``F.linear``/``F.conv*`` on the dequantized weight, ml_dtypes for fp8 rounding, and
hypothesis properties of activation quantization.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import polyquant
from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, KernelError, RecipeError
from polyquant.kernels import conv, dequantize, linear, quantize_activation, use
from polyquant.kernels.ops import (
    REFERENCE_PRIORITY,
    activation_qparams,
    conv_reference,
    dequantize_reference,
    fake_quantize_activation,
    linear_reference,
    quantize_activation_reference,
    reference_kernels,
)
from polyquant.plugins import PluginManager, using_plugin_manager


@pytest.fixture(autouse=True)
def core_only() -> Any:
    """Only the core's kernels: these tests are about the references."""
    with using_plugin_manager(PluginManager(entry_points=False)) as pm:
        yield pm


def qtensor(fmt: str, shape: tuple[int, ...], seed: int = 0, **options: Any) -> Any:
    spec = polyquant.formats.get(fmt)
    spec = spec.with_options(**options) if options else spec
    return spec.quantize(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))


# ------------------------------------------------------------------------------------------ records
def test_one_reference_kernel_per_op() -> None:
    kernels = {k.op: k for k in reference_kernels()}
    assert set(kernels) == {"linear", "conv", "dequantize", "quantize_activation"}
    for k in kernels.values():
        assert (k.name, k.formats, k.device, k.backend, k.priority) == ("reference", ("*",), "*", "reference", -100)
        assert k.description
    assert REFERENCE_PRIORITY == -100


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("fmt", ["int4", "uint4", "int8", "nf4", "mxfp4", "fp8_e4m3", "ternary"])
def test_linear_reference_is_f_linear_on_the_dequantized_weight(fmt: str) -> None:
    qt = qtensor(fmt, (32, 128))
    x, bias = torch.randn(2, 3, 128), torch.randn(32)
    expected = F.linear(x, qt.dequantize(torch.float32), bias)
    assert torch.equal(linear_reference(x, qt, bias), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_reference_computes_half_inputs_in_float32(dtype: torch.dtype) -> None:
    qt = qtensor("int4", (16, 128))
    x = torch.randn(4, 128).to(dtype)
    y = linear_reference(x, qt)
    assert y.dtype == dtype
    assert torch.equal(y, F.linear(x.float(), qt.dequantize(torch.float32)).to(dtype))


def test_linear_reference_with_activations_fake_quantizes_the_input() -> None:
    qt = qtensor("int8", (16, 64))
    x = torch.randn(5, 64)
    act = ActivationSpec("int8", granularity="token")
    codes, scale = quantize_activation_reference(x, act)
    assert torch.equal(linear_reference(x, qt, act=act), F.linear(codes * scale, qt.dequantize(torch.float32)))


def test_linear_reference_errors_name_the_problem() -> None:
    qt = qtensor("int8", (16, 64))
    with pytest.raises(KernelError, match=r"input has shape \(2, 32\) but the weight expects 64 input features"):
        linear_reference(torch.randn(2, 32), qt)
    with pytest.raises(KernelError, match=r"floating-point tensor, got dtype torch\.int64"):
        linear_reference(torch.ones(2, 64, dtype=torch.long), qt)
    with pytest.raises(KernelError, match="must be 2-D, got shape"):
        linear_reference(torch.randn(2, 3), qtensor("int8", (4, 3, 3)))
    with pytest.raises(KernelError, match="quantized weight is on meta; move the module"):
        linear_reference(torch.randn(2, 64), qt.to("meta"))


# ------------------------------------------------------------------------------------------ conv
@pytest.mark.parametrize(
    ("weight_shape", "x_shape", "kwargs", "fn"),
    [
        ((8, 4, 3), (2, 4, 12), {"stride": 2, "padding": 1}, F.conv1d),
        ((8, 4, 3, 3), (2, 4, 9, 9), {"padding": 1, "dilation": 2}, F.conv2d),
        ((8, 2, 3, 3), (1, 4, 6, 6), {"groups": 2}, F.conv2d),
        ((8, 4, 3, 3), (4, 6, 6), {}, F.conv2d),  # unbatched input
    ],
    ids=["conv1d", "conv2d-dilated", "conv2d-groups", "conv2d-unbatched"],
)
def test_conv_reference_is_f_conv_on_the_dequantized_weight(
    weight_shape: tuple[int, ...], x_shape: tuple[int, ...], kwargs: dict[str, Any], fn: Any
) -> None:
    qt = qtensor("int8", weight_shape)
    x, bias = torch.randn(x_shape), torch.randn(weight_shape[0])
    assert torch.equal(conv_reference(x, qt, bias, **kwargs), fn(x, qt.dequantize(torch.float32), bias, **kwargs))


def test_conv_token_activation_scales_span_the_channels_of_one_position() -> None:
    qt = qtensor("int8", (8, 4, 3, 3))
    x = torch.randn(2, 4, 5, 5)
    x[0, :, 1, 1] *= 100  # one loud position must not coarsen the others' scales
    act = ActivationSpec("int8", granularity="token")
    expected_input = fake_quantize_activation(x.movedim(1, -1), act).movedim(-1, 1)
    expected = F.conv2d(expected_input, qt.dequantize(torch.float32), None, 1, 1)
    assert torch.equal(conv_reference(x, qt, padding=1, act=act), expected)
    quiet = fake_quantize_activation(x[1, :, 0, 0], act)
    assert torch.equal(expected_input[1, :, 0, 0], quiet)


def test_conv_reference_reports_shape_mismatches() -> None:
    with pytest.raises(KernelError, match=r"check the input shape \(1, 3, 8, 8\) against the weight"):
        conv_reference(torch.randn(1, 3, 8, 8), qtensor("int8", (8, 4, 3, 3)))


# ------------------------------------------------------------------------------------------ dequantize
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_dequantize_reference(dtype: torch.dtype | None) -> None:
    qt = qtensor("nvfp4", (16, 64))
    assert torch.equal(dequantize_reference(qt, dtype), qt.dequantize(dtype))
    assert torch.equal(dequantize(qt, dtype), qt.dequantize(dtype))


# ------------------------------------------------------------------------------------------ activations
def test_int8_token_codes_and_scales() -> None:
    x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]])
    codes, scale = quantize_activation_reference(x, ActivationSpec("int8"))
    assert scale.shape == (3, 1)
    torch.testing.assert_close(scale.flatten(), torch.tensor([1.0 / 127, 1.0, 3.0 / 127]))
    assert codes.tolist() == [[64.0, -127.0, 32.0], [0.0, 0.0, 0.0], [127.0, 64.0, -32.0]]


def test_tensor_granularity_gives_one_scale() -> None:
    codes, scale = quantize_activation_reference(torch.randn(4, 8) * 3, ActivationSpec("int4", granularity="tensor"))
    assert scale.shape == ()
    assert int(codes.abs().max()) == 7 and bool((codes == codes.round()).all())


@pytest.mark.parametrize(
    ("fmt", "np_dtype"), [("fp8_e4m3", ml_dtypes.float8_e4m3fn), ("fp8_e5m2", ml_dtypes.float8_e5m2)]
)
def test_fp8_codes_round_like_ml_dtypes(fmt: str, np_dtype: Any) -> None:
    x = torch.randn(6, 256) * torch.logspace(-3, 3, 256)
    codes, scale = quantize_activation_reference(x, ActivationSpec(fmt))
    scaled = (x / scale).numpy().astype(np.float32)
    expected = torch.from_numpy(scaled.astype(np_dtype).astype(np.float32))
    assert torch.equal(codes, expected)
    assert float(codes.abs().max()) == float(ml_dtypes.finfo(np_dtype).max)


def test_asymmetric_codes_fold_the_zero_point() -> None:
    x = torch.rand(3, 32) * 4 + 1  # all positive: the zero point sits at the bottom of the range
    act = ActivationSpec("int8", symmetric=False)
    codes, scale = quantize_activation_reference(x, act)
    _, zero = activation_qparams(x, act)
    assert zero is not None and bool((zero == zero.round()).all())
    q = codes + zero
    assert float(q.min()) >= -128 and float(q.max()) <= 127
    assert float((codes * scale - x).abs().max()) <= float(scale.max()) / 2 + 1e-6


def test_static_scales() -> None:
    act = ActivationSpec("int8", granularity="tensor", dynamic=False)
    codes, scale = quantize_activation_reference(torch.tensor([0.1, -0.3, 9.0]), act, torch.tensor(0.01))
    assert codes.tolist() == [10.0, -30.0, 127.0] and float(scale) == pytest.approx(0.01)
    with pytest.raises(CalibrationError, match="no calibrated scale was given; calibrate the model"):
        quantize_activation_reference(torch.randn(3), act)
    with pytest.raises(CalibrationError, match="expected one value, got shape"):
        quantize_activation_reference(torch.randn(3), act, torch.ones(2))
    with pytest.raises(CalibrationError, match="positive and finite"):
        quantize_activation_reference(torch.randn(3), act, torch.tensor(-1.0))
    with pytest.raises(RecipeError, match="static activation scales are symmetric only"):
        quantize_activation_reference(torch.randn(3), ActivationSpec("int8", "tensor", dynamic=False, symmetric=False))


def test_empty_and_non_float_inputs() -> None:
    codes, scale = quantize_activation_reference(torch.empty(0, 16), ActivationSpec("int8"))
    assert codes.shape == (0, 16) and scale.shape == (0, 1)
    with pytest.raises(KernelError, match="floating-point"):
        quantize_activation_reference(torch.ones(3, dtype=torch.int32), ActivationSpec("int8"))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 40),
    magnitude=st.floats(1e-4, 1e4),
    fmt=st.sampled_from(["int8", "int4"]),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["token", "tensor"]),
    seed=st.integers(0, 2**16),
)
def test_integer_activation_quantization_properties(
    rows: int, cols: int, magnitude: float, fmt: str, symmetric: bool, granularity: str, seed: int
) -> None:
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * magnitude
    act = ActivationSpec(fmt, granularity=granularity, symmetric=symmetric)  # type: ignore[arg-type]
    codes, scale = quantize_activation_reference(x, act)
    qmin, qmax = (-128, 127) if fmt == "int8" else (-8, 7)
    assert bool((codes == codes.round()).all())
    if symmetric:
        assert float(codes.min()) >= qmin and float(codes.max()) <= qmax
    # dynamic scales cover the whole range: the error is at most half a step (plus float32 rounding)
    err = (codes * scale - x).abs()
    assert bool((err <= scale / 2 * (1 + 1e-5) + 1e-6 * x.abs()).all())


# ------------------------------------------------------------------------------------------ through dispatch
def test_ops_run_through_dispatch_with_the_reference() -> None:
    qt = qtensor("int4", (16, 64), group_size=32)
    x = torch.randn(3, 64)
    assert torch.equal(linear(x, qt, cache={}), linear_reference(x, qt))
    cw = qtensor("int8", (4, 3, 3))
    xc = torch.randn(1, 3, 10)
    assert torch.equal(conv(xc, cw, padding=1, cache={}), conv_reference(xc, cw, padding=1))
    act = ActivationSpec("fp8_e4m3")
    got, want = quantize_activation(x, act), quantize_activation_reference(x, act)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with use(linear="reference"):
        assert torch.equal(linear(x, qt), linear_reference(x, qt))

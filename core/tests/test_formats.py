"""FormatSpec and the built-in formats: scale rules, error bounds, bits per weight, validation, registry."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import polyquant.formats as formats
from polyquant.errors import FormatError
from polyquant.formats import (
    FP4_E2M1,
    BinaryElement,
    CodebookElement,
    FloatElement,
    FormatSpec,
    Granularity,
    IntElement,
    LUTElement,
    QParams,
    TernaryElement,
)
from polyquant.formats.builtin import builtin_formats
from polyquant.formats.layout import GroupLayout
from polyquant.plugins import PluginManager, using_plugin_manager

BUILTINS = {spec.name: spec for spec in builtin_formats()}
SHAPE = (16, 256)  # divisible by every built-in granularity (group 16..128, flat 4096)
REQUIRED = (
    [f"int{b}" for b in range(1, 9)]
    + [f"uint{b}" for b in range(1, 9)]
    + ["binary", "ternary", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]
    + ["mxfp8", "mxfp6", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxfp4_rceil", "nvfp4"]
    + ["int8_blockwise", "nf4", "codebook2", "codebook3", "codebook4", "codebook8"]
)


@pytest.fixture(scope="module")
def manager() -> PluginManager:
    return PluginManager(entry_points=False)


def weights(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen)
    w[..., ::37] *= 4  # some outliers so groups differ in range
    return w


def grid(spec: FormatSpec) -> torch.Tensor:
    """All finite element values of a (non-codebook) spec, ascending."""
    el = spec.element
    if isinstance(el, IntElement):
        return torch.arange(el.qmin, el.qmax + 1, dtype=torch.float32)
    if isinstance(el, FloatElement):
        values = el.decode(torch.arange(1 << el.bits, dtype=torch.uint8))
        return torch.unique(values[torch.isfinite(values)])
    if isinstance(el, LUTElement):
        return torch.tensor(el.levels)
    if isinstance(el, BinaryElement):
        return torch.tensor([-1.0, 1.0])
    assert isinstance(el, TernaryElement)
    return torch.tensor([-1.0, 0.0, 1.0])


def expanded(spec: FormatSpec, qp: QParams, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element total scale and zero point."""
    layout = GroupLayout.of(spec.granularity, shape)
    scale = layout.broadcastable(qp.scale).expand(layout.view_shape).reshape(shape)
    if qp.tensor_scale is not None:
        scale = scale * qp.tensor_scale
    zero = torch.zeros(shape)
    if qp.zero is not None:
        zero = layout.broadcastable(qp.zero).expand(layout.view_shape).reshape(shape)
    return scale, zero


# ---------------------------------------------------------------------------------------------- registry
def test_registry_has_every_required_format(manager: PluginManager) -> None:
    registered = manager.get_formats()
    assert set(REQUIRED) <= set(registered)
    assert manager.get_format("int4") is BUILTINS["int4"]
    assert all(spec.description for spec in builtin_formats())
    assert len({s.name for s in builtin_formats()}) == len(builtin_formats())


def test_get_and_available_use_the_plugin_manager(manager: PluginManager) -> None:
    with using_plugin_manager(manager):
        assert formats.get("nf4") is BUILTINS["nf4"]
        assert formats.available() == sorted(manager.get_formats())
        with pytest.raises(FormatError, match=r"unknown format 'int17'.*int4.*nvfp4"):
            formats.get("int17")


def test_documented_defaults() -> None:
    b = BUILTINS
    assert b["int4"].granularity == Granularity.per_group(128) and b["int4"].scale_dtype == "fp16"
    assert b["int8"].granularity == Granularity.per_channel(0)
    assert not b["uint4"].symmetric and b["uint4"].element == IntElement(4, signed=False)
    assert b["mxfp6"].element == b["mxfp6_e2m3"].element
    assert (b["mxfp4_rceil"].scale_rounding, b["mxfp4"].scale_rounding) == ("rceil", "floor")
    assert b["nvfp4"].granularity == Granularity.per_group(16) and b["nvfp4"].tensor_scale
    assert b["nf4"].granularity == Granularity.per_group(64)
    assert b["int8_blockwise"].granularity == Granularity.per_flat_block(4096)
    assert b["ternary"].granularity == Granularity.per_tensor() and b["ternary"].scale_method == "absmean"


# ---------------------------------------------------------------------------------------------- error bounds
@pytest.mark.parametrize("name", [n for n in BUILTINS if not n.startswith("codebook")])
def test_every_element_goes_to_the_nearest_scaled_value(name: str) -> None:
    spec = BUILTINS[name]
    w = weights()
    qt = spec.quantize(w)
    dq = qt.dequantize()
    scale, zero = expanded(spec, qt.qparams(), SHAPE)
    g = grid(spec)
    y = w / scale + zero
    dist = (y.unsqueeze(-1) - g).abs().amin(dim=-1)  # distance to the nearest grid value, in scale units
    err = (dq - w).abs()
    # float32 noise: y carries ~1e-7·|y| (zero points up to 255 included), dq ~1e-7·|w|
    assert bool((err <= scale * dist + scale * 1e-4 + w.abs() * 1e-6).all())
    # global bounds: half the largest gap, plus clipping where the scale rule allows it
    half_gap = float((g[1:] - g[:-1]).max()) / 2
    if spec.scale_method == "absmean":
        return
    if not spec.symmetric:
        bound = 0.5 + 1e-3
    elif spec.scale_dtype == "e8m0":
        el = spec.element
        assert isinstance(el, FloatElement)
        bound = max(half_gap, 2.0 ** (el.emax + 1) - el.max_value)
    else:
        slack = {"fp32": 1e-5, "fp16": 2**-10, "bf16": 2**-7, "e4m3": 2**-3}[spec.scale_dtype]
        top = float(g.abs().max())
        # amax maps to qmax (ints) or max_value; int1's grid {-1, 0} cannot reach +1: positives clip by 1
        clipped = 1.0 - float(g.max()) if name == "int1" else 0.0
        bound = max(half_gap, clipped) + top * slack
    assert float(dist.max()) <= bound


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("int8", 0.0, 0.02),
        ("int4", 0.05, 0.2),
        ("uint4", 0.05, 0.2),
        ("fp8_e4m3", 0.01, 0.05),
        ("mxfp8", 0.01, 0.06),
        ("nf4", 0.05, 0.15),
        ("mxfp4", 0.05, 0.2),
        ("nvfp4", 0.05, 0.15),
        ("int8_blockwise", 0.0, 0.05),
        ("codebook4", 0.05, 0.25),
    ],
)
def test_relative_error_is_in_the_expected_range(name: str, low: float, high: float) -> None:
    w = torch.randn(64, 1024, generator=torch.Generator().manual_seed(5))
    rel = float((BUILTINS[name].fake_quantize(w) - w).norm() / w.norm())
    assert low <= rel <= high


def test_zero_tensor_quantizes_to_zero_for_every_format() -> None:
    w = torch.zeros(SHAPE)
    for spec in builtin_formats():
        dq = spec.fake_quantize(w)
        if spec.kind == "binary":  # no zero code: ±(tiny scale)
            assert float(dq.abs().max()) <= torch.finfo(torch.float32).tiny
        else:
            assert torch.isfinite(dq).all() and float(dq.abs().max()) == 0.0, spec.name
        assert torch.isfinite(spec.compute_qparams(w).scale).all()


# ---------------------------------------------------------------------------------------------- bits per weight
def test_bits_per_weight_exact_values() -> None:
    b = BUILTINS
    big = (4096, 4096)
    assert b["int4"].bits_per_weight(big) == 4 + 16 / 128
    assert b["uint4"].bits_per_weight(big) == 4 + 32 / 128
    assert b["int8"].bits_per_weight(big) == 8 + 16 / 4096
    assert b["mxfp4"].bits_per_weight(big) == 4 + 8 / 32
    assert b["mxfp6"].bits_per_weight(big) == 6 + 8 / 32
    assert b["nvfp4"].bits_per_weight(big) == 4 + 8 / 16 + 32 / 4096**2
    assert b["nf4"].bits_per_weight(big) == 4 + 32 / 64
    assert b["fp8_e4m3"].bits_per_weight(big) == 8 + 32 / 4096
    assert b["ternary"].bits_per_weight(big) == 2 + 32 / 4096**2
    assert b["codebook4"].bits_per_weight(big) == 4 + 16 * 32 / 4096**2
    assert b["int8_blockwise"].bits_per_weight(big) == 8 + 32 / 4096
    # rows are padded to whole bytes: 100 codes of 3 bits take 38 bytes
    assert b["int3"].with_options(group_size=0).bits_per_weight((2, 100)) == (38 * 8 * 2 + 2 * 16) / 200


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_bits_per_weight_matches_the_stored_bytes(name: str) -> None:
    spec = BUILTINS[name]
    qt = spec.quantize(weights())
    assert spec.bits_per_weight(SHAPE) == qt.bits_per_weight == 8 * qt.nbytes / qt.numel


# ---------------------------------------------------------------------------------------------- input errors
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_nan_and_inf_inputs_are_rejected(name: str) -> None:
    spec = BUILTINS[name]
    for bad in (math.nan, math.inf):
        w = weights()
        w[3, 5] = bad
        with pytest.raises(FormatError, match="NaN/Inf"):
            spec.quantize(w)


def test_non_divisible_shapes_name_the_problem_and_fix() -> None:
    with pytest.raises(FormatError, match=r"not divisible by group size 128.*\(100\).*choose a group size"):
        BUILTINS["int4"].quantize(torch.randn(4, 100))
    with pytest.raises(FormatError, match="not a multiple of the block size 4096"):
        BUILTINS["int8_blockwise"].quantize(torch.randn(3, 100))
    with pytest.raises(FormatError, match="group size 32"):
        BUILTINS["mxfp4"].compute_qparams(torch.randn(2, 48))


@pytest.mark.parametrize("name", [n for n, s in BUILTINS.items() if s.granularity.kind in ("group", "flat")])
def test_every_grouped_format_rejects_indivisible_shapes(name: str) -> None:
    spec = BUILTINS[name]
    size = spec.granularity.group_size
    with pytest.raises(FormatError, match=rf"{size}.*(choose a group size|choose a block size)"):
        spec.quantize(torch.randn(1, size + 1))


def test_other_input_errors() -> None:
    spec = BUILTINS["int8"]
    with pytest.raises(FormatError, match="floating-point"):
        spec.quantize(torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(FormatError, match="0-dim"):
        spec.quantize(torch.tensor(1.0))
    with pytest.raises(FormatError, match=r"torch.Tensor"):
        spec.quantize([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="overflows fp16"):
        BUILTINS["int4"].quantize(torch.full((1, 128), 1e6))
    assert torch.isfinite(
        BUILTINS["int4"].with_options(scale_dtype="fp32").fake_quantize(torch.full((1, 128), 1e6))
    ).all()


# ---------------------------------------------------------------------------------------------- scale rules
def test_symmetric_int_scale_is_amax_over_qmax_and_stored_scale_is_exact() -> None:
    w = torch.tensor([[0.3, -0.7, 0.1, 0.2]])
    spec = FormatSpec("t", IntElement(4), Granularity.per_channel(0), scale_dtype="fp16")
    qp = spec.compute_qparams(w)
    assert qp.scale.item() == torch.tensor(0.7 / 7).half().float().item()
    assert spec.quantize_codes(w, qp).tolist() == [[3, 0b1001, 1, 2]]  # -7 → 0b1001
    # -8 is only reachable with a smaller (e.g. clipped) scale
    small = QParams(scale=torch.tensor([[0.08]]))
    assert spec.fake_quantize(w, qparams=small)[0, 1].item() == pytest.approx(-8 * torch.tensor(0.08).half().item())


def test_asymmetric_rules() -> None:
    spec = FormatSpec("a", IntElement(4, signed=False), Granularity.per_channel(0), symmetric=False)
    w = torch.tensor([[-1.0, 2.0, 0.5, 0.0], [1.0, 2.0, 3.0, 1.5], [0.0, 0.0, 0.0, 0.0]])
    qp = spec.compute_qparams(w)
    assert qp.zero is not None
    assert qp.scale[:, 0].tolist() == pytest.approx([3 / 15, 3 / 15, 1.0])  # row 2 range forced to include 0
    assert qp.zero[:, 0].tolist() == [5.0, 0.0, 0.0]  # round(1/0.2) = 5; all-positive → 0; zero range → 0
    dq = spec.fake_quantize(w)
    assert dq[2].tolist() == [0.0] * 4 and dq[1, 2].item() == pytest.approx(3.0)
    assert float((dq - w).abs().max()) <= 0.5 * 3 / 15 + 1e-6


def test_mx_scale_is_power_of_two_floor_and_rceil() -> None:
    # algorithms.md §9: MX floor clips amax 7·2^k to 6·2^k, RCEIL does not
    for k in (-3, 0, 5):
        w = torch.zeros(1, 32)
        w[0, 0], w[0, 1] = 7 * 2.0**k, -0.25 * 2.0**k
        floor = BUILTINS["mxfp4"]
        rceil = BUILTINS["mxfp4_rceil"]
        assert floor.compute_qparams(w).scale.item() == 2.0**k  # 2^(floor(log2 7·2^k) − 2)
        assert floor.fake_quantize(w)[0, 0].item() == 6 * 2.0**k
        assert rceil.compute_qparams(w).scale.item() == 2.0 ** (k + 1)  # ceil(log2(7/6·2^k))
        assert rceil.fake_quantize(w)[0, 0].item() >= 7 * 2.0**k
    # amax exactly max·2^k: both roundings agree and nothing is clipped
    w = torch.full((1, 32), 6.0)
    assert BUILTINS["mxfp4"].compute_qparams(w).scale.item() == BUILTINS["mxfp4_rceil"].compute_qparams(w).scale.item()
    e4m3 = BUILTINS["mxfp8"].compute_qparams(torch.full((1, 32), 448.0 * 4))
    assert e4m3.scale.item() == 4.0  # emax 8 for E4M3: 2^(floor(log2 1792) − 8)


def test_nvfp4_reference_check() -> None:
    # algorithms.md §9: NVFP4 on N(0,1) ≈ 8–10% relative error with scales in E4M3 range
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(7))
    spec = BUILTINS["nvfp4"]
    qt = spec.quantize(w)
    rel = float((qt.dequantize() - w).norm() / w.norm())
    assert 0.08 <= rel <= 0.10
    assert qt.scale is not None and qt.scale.dtype == torch.uint8 and qt.tensor_scale is not None
    assert qt.tensor_scale.item() == pytest.approx(float(w.abs().max()) / (6 * 448), rel=1e-6)
    block_scales = qt.qparams().scale
    assert float(block_scales.max()) <= 448 and float(block_scales.min()) > 0
    codes = qt.codes()
    assert torch.equal(qt.packed[:, 0], codes[:, 0] | (codes[:, 1] << 4))  # low nibble = even element


def test_bitnet_ternary_and_binary_reference_checks() -> None:
    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(8))
    ternary = BUILTINS["ternary"]
    qp = ternary.compute_qparams(w)
    assert qp.scale.item() == pytest.approx(float(w.abs().mean()), rel=1e-6)  # s = mean|W|
    codes = ternary.quantize_codes(w, qp)
    wq = ternary.element.decode(codes)
    assert torch.equal(wq, (w / qp.scale).round().clamp(-1, 1))
    # mean|W_q·s| = s · P(|W| ≥ s/2): for Gaussian weights 2(1 − Φ(0.399)) ≈ 0.69 of mean|W|
    ratio = float((wq * qp.scale).abs().mean() / w.abs().mean())
    assert ratio == pytest.approx(0.69, abs=0.03)
    binary = BUILTINS["binary"]
    dq = binary.fake_quantize(w)
    torch.testing.assert_close(dq.abs().mean(dim=1), w.abs().mean(dim=1))  # α = mean|W| per channel, exactly
    assert torch.equal(torch.sign(dq), torch.where(w >= 0, 1.0, -1.0))


def test_nf4_blocks_keep_their_extremes() -> None:
    w = weights((4, 128))
    dq = BUILTINS["nf4"].fake_quantize(w)
    blocks, dblocks = w.reshape(-1, 64), dq.reshape(-1, 64)
    idx = blocks.abs().argmax(dim=1, keepdim=True)
    assert torch.equal(dblocks.gather(1, idx), blocks.gather(1, idx))  # ±1 levels times absmax


def test_int8_blockwise_uses_flat_blocks() -> None:
    w = weights((8, 1024))  # 8192 elements: two flat blocks spanning four rows each
    spec = BUILTINS["int8_blockwise"]
    qp = spec.compute_qparams(w)
    assert qp.scale.shape == (2,)
    torch.testing.assert_close(qp.scale, w.reshape(2, -1).abs().amax(dim=1))
    assert float((spec.fake_quantize(w) - w).abs().max()) <= float(qp.scale.max()) * 0.04


def test_codebook_levels_are_quantiles_and_can_be_learned() -> None:
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(9))
    spec = BUILTINS["codebook4"]
    qp = spec.compute_qparams(w)
    assert qp.levels is not None and qp.levels.shape == (16,)
    flat = w.flatten().sort().values
    expected = flat[((torch.arange(16) + 0.5) * flat.numel() / 16).long()]
    assert torch.equal(qp.levels, expected)
    dq = spec.fake_quantize(w)
    nearest = (w.unsqueeze(-1) - qp.levels).abs().amin(-1)
    torch.testing.assert_close((dq - w).abs(), nearest)
    learned = QParams(torch.tensor(1.0), levels=torch.linspace(-2, 2, 16))  # e.g. from k-means
    assert set(spec.fake_quantize(w, qparams=learned).unique().tolist()) <= set(torch.linspace(-2, 2, 16).tolist())
    per_row = spec.with_options(group_size=0)
    rows = per_row.compute_qparams(w)
    assert rows.levels is not None and rows.levels.shape == (64, 1, 16)
    assert per_row.bits_per_weight((64, 64)) == 4 + 64 * 16 * 32 / 64**2
    with pytest.raises(FormatError, match="levels"):
        spec.fake_quantize(w, qparams=QParams(torch.tensor(1.0), levels=torch.zeros(8)))
    with pytest.raises(FormatError, match="levels"):
        spec.fake_quantize(w, qparams=QParams(torch.tensor(1.0)))


def test_clip_scales_the_range() -> None:
    w = weights()
    spec = BUILTINS["int4"]
    full, half = spec.compute_qparams(w), spec.compute_qparams(w, clip=0.5)
    torch.testing.assert_close(half.scale, (full.scale * 0.5).half().float(), rtol=1e-3, atol=0)
    per_group = torch.full(spec.granularity.scale_shape(SHAPE), 0.9)
    assert spec.compute_qparams(w, clip=per_group).scale.shape == full.scale.shape
    assert spec.compute_qparams(w, clip=torch.full((16, 1), 0.9)).scale.shape == full.scale.shape
    with pytest.raises(FormatError, match="broadcast"):
        spec.compute_qparams(w, clip=torch.ones(3))
    with pytest.raises(FormatError, match="positive"):
        spec.compute_qparams(w, clip=0.0)
    with pytest.raises(FormatError, match="either qparams or clip"):
        spec.quantize(w, qparams=full, clip=0.9)


def test_qparams_validation() -> None:
    w = weights()
    spec = BUILTINS["int4"]
    with pytest.raises(FormatError, match=r"qparams.scale has shape \(16,\), expected \(16, 2\)"):
        spec.quantize(w, qparams=QParams(torch.ones(16)))
    with pytest.raises(FormatError, match="positive and finite"):
        spec.quantize(w, qparams=QParams(-torch.ones(16, 2)))
    with pytest.raises(FormatError, match=r"does not use qparams.zero"):
        spec.quantize(w, qparams=QParams(torch.ones(16, 2), zero=torch.zeros(16, 2)))
    with pytest.raises(FormatError, match=r"needs qparams.zero"):
        BUILTINS["uint4"].quantize(w, qparams=QParams(torch.ones(16, 2)))
    with pytest.raises(FormatError, match=r"needs qparams.tensor_scale"):
        BUILTINS["nvfp4"].quantize(w, qparams=QParams(torch.ones(16, 16)))
    with pytest.raises(FormatError, match="must be a QParams"):
        spec.quantize(w, qparams={"scale": 1})  # type: ignore[arg-type]


def test_user_scales_are_rounded_to_storage() -> None:
    w = weights((2, 32))
    mx = BUILTINS["mxfp4"]
    qp = mx.cast_qparams(QParams(torch.tensor([[0.3], [3.0]])), (2, 32))
    assert qp.scale.flatten().tolist() == [0.25, 2.0]  # floor to a power of two
    assert torch.equal(
        mx.fake_quantize(w, qparams=QParams(torch.tensor([[0.3], [3.0]]))), mx.fake_quantize(w, qparams=qp)
    )


# ---------------------------------------------------------------------------------------------- options
def test_with_options() -> None:
    int4 = BUILTINS["int4"]
    assert int4.with_options(group_size=0).granularity == Granularity.per_channel(0)
    assert int4.with_options(group_size=-1).granularity == Granularity.per_channel(0)
    assert int4.with_options(group_size=64).granularity == Granularity.per_group(64)
    asym = int4.with_options(symmetric=False)
    assert asym.element == IntElement(4, signed=False) and asym.name == "int4"
    assert asym.with_options(symmetric=True) == int4
    assert int4.with_options(name="my4").name == "my4"
    blocks = int4.with_options(granularity=Granularity.per_block(8, 32))
    assert blocks.compute_qparams(weights()).scale.shape == (2, 8)
    fp4 = BUILTINS["fp4_e2m1"]
    mx = fp4.with_options(scale_dtype="e8m0")
    assert mx.scale_rounding == "floor" and mx.with_options(scale_dtype="fp16").scale_rounding == "nearest"
    with pytest.raises(FormatError, match=r"asymmetric.*integer element.*symmetric=True.*uint4"):
        fp4.with_options(symmetric=False)
    with pytest.raises(FormatError, match="scale_dtype 'fp12' is unknown"):
        int4.with_options(scale_dtype="fp12")
    with pytest.raises(FormatError, match=r"e8m0.*minifloat"):
        int4.with_options(scale_dtype="e8m0")
    with pytest.raises(FormatError, match="either group_size or granularity"):
        int4.with_options(group_size=32, granularity=Granularity.per_tensor())
    with pytest.raises(FormatError, match="group_size"):
        int4.with_options(group_size=-5)


def test_spec_validation_messages() -> None:
    with pytest.raises(FormatError, match="unsigned codes"):
        FormatSpec("x", IntElement(4), symmetric=False)
    with pytest.raises(FormatError, match="signed codes"):
        FormatSpec("x", IntElement(4, signed=False))
    with pytest.raises(FormatError, match="codebook"):
        FormatSpec("x", CodebookElement(4))
    with pytest.raises(FormatError, match="scale type"):
        FormatSpec("x", formats.E8M0)
    with pytest.raises(FormatError, match="tensor_scale"):
        FormatSpec("x", FP4_E2M1, tensor_scale=True)
    with pytest.raises(FormatError, match="ElementCodec"):
        FormatSpec("x", object())  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="non-empty"):
        FormatSpec("", FP4_E2M1)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_dict_round_trip_through_json(name: str) -> None:
    spec = BUILTINS[name]
    assert FormatSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_from_dict_errors() -> None:
    with pytest.raises(FormatError, match="unknown keys"):
        FormatSpec.from_dict({**BUILTINS["int4"].to_dict(), "colour": "red"})
    with pytest.raises(FormatError, match="must be a dict"):
        FormatSpec.from_dict([1])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- properties
def test_encode_decode_delegate_to_the_element() -> None:
    x = torch.tensor([0.4, -2.6, 100.0])
    for spec in (BUILTINS["int4"], BUILTINS["fp4_e2m1"], BUILTINS["nf4"]):
        assert torch.equal(spec.encode(x), spec.element.encode(x))
        assert torch.equal(spec.decode(spec.encode(x)), spec.element.round(x))
        assert (spec.bits, spec.kind) == (spec.element.bits, spec.element.kind)


def test_output_dtype_follows_the_input() -> None:
    w = weights().to(torch.bfloat16)
    for name in ("int4", "mxfp4", "nf4"):
        assert BUILTINS[name].fake_quantize(w).dtype == torch.bfloat16
        assert BUILTINS[name].quantize(w).dequantize().dtype == torch.bfloat16


FAST_NAMES = [
    "int3",
    "uint4",
    "int8",
    "fp8_e4m3",
    "fp6_e3m2",
    "mxfp4",
    "nvfp4",
    "nf4",
    "ternary",
    "binary",
    "codebook3",
]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(FAST_NAMES),
    rows=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    magnitude=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_fake_quantize_is_idempotent(name: str, rows: int, seed: int, magnitude: float) -> None:
    spec = BUILTINS[name].with_options(group_size=32) if BUILTINS[name].granularity.kind == "group" else BUILTINS[name]
    w = torch.randn(rows, 64, generator=torch.Generator().manual_seed(seed)) * magnitude
    qp = spec.compute_qparams(w)
    once = spec.fake_quantize(w, qparams=qp)
    assert torch.equal(spec.fake_quantize(once, qparams=qp), once)  # a projection for fixed qparams
    if spec.scale_method == "absmax":  # absmean is no projection: mean|Q(w)| != mean|w| for ternary
        again = spec.fake_quantize(once)  # recomputed qparams: equal up to scale rounding
        torch.testing.assert_close(again, once, rtol=1e-5, atol=1e-6 * magnitude)

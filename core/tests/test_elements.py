"""Element codecs: bit-exact against ml_dtypes / torch float8, rounding rules, saturation, validation."""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyquant.errors import FormatError
from polyquant.formats.elements import (
    DYNAMIC8,
    E8M0,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    NF4,
    NF4_LEVELS,
    BinaryElement,
    CodebookElement,
    E8M0Element,
    ElementCodec,
    FloatElement,
    IntElement,
    LUTElement,
    TernaryElement,
    dynamic_map_levels,
    element_from_dict,
)

MINIFLOATS = [
    pytest.param(FP8_E4M3, ml_dtypes.float8_e4m3fn, id="fp8_e4m3"),
    pytest.param(FP8_E5M2, ml_dtypes.float8_e5m2, id="fp8_e5m2"),
    pytest.param(FP6_E3M2, ml_dtypes.float6_e3m2fn, id="fp6_e3m2"),
    pytest.param(FP6_E2M3, ml_dtypes.float6_e2m3fn, id="fp6_e2m3"),
    pytest.param(FP4_E2M1, ml_dtypes.float4_e2m1fn, id="fp4_e2m1"),
]


def ml_codes(x: np.ndarray, dtype: type) -> np.ndarray:
    """ml_dtypes' encoding of float32 values (low bits of the uint8 view hold the code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(x, dtype=np.float32).astype(dtype).view(np.uint8)


def all_values(dtype: type, bits: int) -> np.ndarray:
    """Every code of an ml_dtypes type decoded to float32 (index = code)."""
    return np.arange(1 << bits, dtype=np.uint8).view(dtype).astype(np.float32)


def finite_sorted(dtype: type, bits: int) -> np.ndarray:
    values = all_values(dtype, bits)
    return np.unique(values[np.isfinite(values)])  # sorted, -0 merged with 0


def midpoints(values: np.ndarray) -> np.ndarray:
    """Exact midpoints between consecutive values (all representable in float32 for these formats)."""
    mids = (values[1:].astype(np.float64) + values[:-1]) / 2
    assert np.array_equal(mids.astype(np.float32).astype(np.float64), mids)
    return mids.astype(np.float32)


# ---------------------------------------------------------------------------------------------- minifloats
@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_decode_every_code_matches_ml_dtypes(elem: FloatElement, ref: type) -> None:
    codes = torch.arange(1 << elem.bits, dtype=torch.uint8)
    expected = all_values(ref, elem.bits)
    got = elem.decode(codes).numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # NaN positions must match too
    assert np.array_equal(np.signbit(got), np.signbit(expected))  # -0.0 included


@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_encode_every_value_round_trips(elem: FloatElement, ref: type) -> None:
    codes = np.arange(1 << elem.bits, dtype=np.uint8)
    values = all_values(ref, elem.bits)
    finite = np.isfinite(values)
    got = elem.encode(torch.from_numpy(values[finite])).numpy()
    np.testing.assert_array_equal(got, codes[finite])


@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_ties_and_their_neighbours_match_ml_dtypes(elem: FloatElement, ref: type) -> None:
    mids = midpoints(finite_sorted(ref, elem.bits))
    probes = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))])
    probes = probes[np.abs(probes) <= elem.max_value]
    got = elem.encode(torch.from_numpy(probes)).numpy()
    np.testing.assert_array_equal(got, ml_codes(probes, ref))
    # ties go to the even code (lowest mantissa bit 0)
    tie_codes = elem.encode(torch.from_numpy(mids)).numpy()
    assert np.all(tie_codes & 1 == 0)


@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_subnormals_and_tiny_inputs_match_ml_dtypes(elem: FloatElement, ref: type) -> None:
    rng = np.random.default_rng(0)
    min_normal = math.ldexp(1.0, elem.emin)
    x = rng.uniform(-min_normal, min_normal, 5000).astype(np.float32)
    tiny = np.array([1e-45, -1e-45, 1e-40, 2.0**-126, elem.min_subnormal / 2, -elem.min_subnormal / 2], np.float32)
    x = np.concatenate([x, tiny])
    np.testing.assert_array_equal(elem.encode(torch.from_numpy(x)).numpy(), ml_codes(x, ref))
    assert elem.min_subnormal == float(ml_dtypes.finfo(ref).smallest_subnormal)


@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_random_in_range_values_match_ml_dtypes(elem: FloatElement, ref: type, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(20000, generator=gen) * elem.max_value / 3).clamp(-elem.max_value, elem.max_value).to(dtype)
    x64 = x.double().numpy()  # ml_dtypes converts float64 directly: no double rounding on either side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = x64.astype(ref).view(np.uint8)
    np.testing.assert_array_equal(elem.encode(x).numpy(), expected)
    np.testing.assert_array_equal(elem.round(x).numpy(), expected.view(ref).astype(np.float32))


@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_properties_match_ml_dtypes_finfo(elem: FloatElement, ref: type) -> None:
    info = ml_dtypes.finfo(ref)
    assert elem.max_value == float(info.max)
    assert elem.emin == int(math.log2(float(info.smallest_normal)))
    assert elem.emax == math.floor(math.log2(elem.max_value))
    assert isinstance(elem, ElementCodec)
    assert elem.kind == "float"


@pytest.mark.parametrize(
    ("elem", "torch_dtype"), [(FP8_E4M3, torch.float8_e4m3fn), (FP8_E5M2, torch.float8_e5m2)], ids=["e4m3", "e5m2"]
)
def test_fp8_matches_torch_casting(elem: FloatElement, torch_dtype: torch.dtype) -> None:
    values = torch.arange(256, dtype=torch.uint8).view(torch_dtype).float()
    finite = values[torch.isfinite(values)]
    gen = torch.Generator().manual_seed(2)
    rand = (torch.randn(20000, generator=gen) * 64).clamp(-elem.max_value, elem.max_value)
    x = torch.cat([finite, rand, torch.tensor(midpoints(np.unique(finite.numpy())))])
    torch.testing.assert_close(elem.encode(x), x.to(torch_dtype).view(torch.uint8), rtol=0, atol=0)
    torch.testing.assert_close(elem.decode(torch.arange(256, dtype=torch.uint8)), values, equal_nan=True)


def test_algorithms_reference_constants() -> None:
    # algorithms.md §9: OCP E2M1 magnitudes, E4M3FN / E5M2 extremes
    assert sorted(set(FP4_E2M1.decode(torch.arange(8, dtype=torch.uint8)).tolist())) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert (FP8_E4M3.max_value, FP8_E4M3.min_subnormal, math.ldexp(1, FP8_E4M3.emin)) == (448, 2**-9, 2**-6)
    assert FP8_E5M2.max_value == 57344
    assert FP8_E4M3.nan_code == 0x7F and FP8_E4M3.inf_code is None
    assert FP8_E5M2.inf_code == 0x7C
    assert FP6_E3M2.max_value == 28 and FP6_E2M3.max_value == 7.5
    assert [e.emax for e in (FP4_E2M1, FP8_E4M3, FP8_E5M2, FP6_E3M2, FP6_E2M3)] == [2, 8, 15, 4, 2]


# ---------------------------------------------------------------------------------------------- saturation
@pytest.mark.parametrize(("elem", "ref"), MINIFLOATS)
def test_out_of_range_saturates(elem: FloatElement, ref: type) -> None:
    big = np.array([elem.max_value * 1.01, elem.max_value * 1.5, 1e30, -1e30, -elem.max_value * 4], np.float32)
    codes = elem.encode(torch.from_numpy(big))
    top = elem.max_code
    sign = 1 << (elem.bits - 1)
    assert codes.tolist() == [top, top, top, top | sign, top | sign]
    assert elem.round(torch.from_numpy(big)).tolist() == [elem.max_value] * 3 + [-elem.max_value] * 2


def test_saturation_deviates_from_plain_ml_dtypes_cast_where_documented() -> None:
    over = np.array([1000.0, -1000.0], np.float32)
    # ml_dtypes: E4M3FN overflows to NaN, E5M2 to ±Inf; fp6/fp4 saturate like polyquant
    assert np.isnan(over.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)).all()
    assert np.isinf(np.array([1e6], np.float32).astype(ml_dtypes.float8_e5m2).astype(np.float32)).all()
    assert FP8_E4M3.encode(torch.from_numpy(over)).tolist() == [0x7E, 0xFE]
    assert FP8_E5M2.encode(torch.tensor([1e6, -1e6])).tolist() == [0x7B, 0xFB]
    np.testing.assert_array_equal(
        FP4_E2M1.encode(torch.from_numpy(over)).numpy(), ml_codes(over, ml_dtypes.float4_e2m1fn)
    )


def test_infinities() -> None:
    inf = torch.tensor([math.inf, -math.inf])
    assert FP8_E4M3.encode(inf).tolist() == [0x7E, 0xFE]  # finite-only: saturate
    assert FP8_E5M2.encode(inf).tolist() == [0x7C, 0xFC]  # IEEE-like: keep Inf
    assert FP4_E2M1.encode(inf).tolist() == [0x7, 0xF]
    assert FP8_E5M2.round(inf).tolist() == [math.inf, -math.inf]
    assert FP8_E5M2.decode(torch.tensor([0x7C], dtype=torch.uint8)).item() == math.inf


def test_nan_handling() -> None:
    nan = torch.tensor([math.nan, -math.nan, 1.0])
    assert FP8_E4M3.encode(nan).tolist() == [0x7F, 0xFF, 0x38]
    assert FP8_E5M2.encode(nan).tolist() == [0x7E, 0xFE, 0x3C]
    assert torch.isnan(FP8_E4M3.round(nan)[:2]).all()
    for elem in (FP6_E3M2, FP6_E2M3, FP4_E2M1):
        with pytest.raises(FormatError, match="NaN"):
            elem.encode(nan)
        with pytest.raises(FormatError, match="NaN"):
            elem.round(nan)


def test_float_element_validation_and_naming() -> None:
    assert FloatElement(2, 1, 1).name == "fp4_e2m1"
    assert FloatElement(2, 1, 1) == FP4_E2M1.__class__(2, 1, 1, "finite", "fp4_e2m1")
    with pytest.raises(FormatError, match="at most 8 bits"):
        FloatElement(5, 3, 15)
    with pytest.raises(FormatError, match="special"):
        FloatElement(4, 3, 7, "bogus")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="floating-point"):
        FP8_E4M3.encode(torch.tensor([1, 2]))


# ---------------------------------------------------------------------------------------------- e8m0
def test_e8m0_decode_every_code_matches_ml_dtypes() -> None:
    expected = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    got = E8M0.decode(torch.arange(256, dtype=torch.uint8)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert got[0] == 2.0**-127 and got[254] == 2.0**127 and np.isnan(got[255])


def test_e8m0_encode_floor_and_ceil() -> None:
    powers = torch.tensor([2.0**k for k in range(-127, 128)], dtype=torch.float64)
    exact = torch.arange(255, dtype=torch.uint8)
    assert torch.equal(E8M0Element("floor").encode(powers), exact)
    assert torch.equal(E8M0Element("ceil").encode(powers), exact)
    between = torch.tensor([3.0, 0.75, 1.0000001])
    assert E8M0Element("floor").encode(between).tolist() == [128, 126, 127]
    assert E8M0Element("ceil").encode(between).tolist() == [129, 127, 128]
    edge = torch.tensor([1e-45, math.inf, 1e38 * 3, math.nan])
    assert E8M0Element("floor").encode(edge).tolist() == [0, 254, 254, 255]
    assert E8M0.round(torch.tensor([5.0])).item() == 4.0


def test_e8m0_rejects_zero_negative_and_bad_rounding() -> None:
    with pytest.raises(FormatError, match="positive"):
        E8M0.encode(torch.tensor([1.0, 0.0]))
    with pytest.raises(FormatError, match="positive"):
        E8M0.encode(torch.tensor([-2.0]))
    with pytest.raises(FormatError, match="floor"):
        E8M0Element("nearest")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- integers
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [True, False])
def test_int_codes_round_trip_every_value(bits: int, signed: bool) -> None:
    elem = IntElement(bits, signed)
    values = torch.arange(elem.qmin, elem.qmax + 1, dtype=torch.float32)
    codes = elem.encode(values)
    assert codes.dtype == torch.uint8
    assert sorted(codes.tolist()) == list(range(1 << bits))
    assert torch.equal(elem.decode(codes), values)
    assert elem.max_value == max(-elem.qmin, elem.qmax)


def test_int_twos_complement_rounding_and_clamping() -> None:
    int4 = IntElement(4)
    assert (int4.qmin, int4.qmax, IntElement(4, signed=False).qmax) == (-8, 7, 15)
    assert int4.encode(torch.tensor([-1.0, -8.0, 7.0, 0.0])).tolist() == [0b1111, 0b1000, 7, 0]
    assert int4.round(torch.tensor([2.5, 3.5, -2.5, -0.5, 0.5, 1.5])).tolist() == [2, 4, -2, 0, 0, 2]
    assert int4.round(torch.tensor([100.0, -100.0, math.inf, -math.inf])).tolist() == [7, -8, 7, -8]
    assert IntElement(8).encode(torch.tensor([-128.0, -1.0])).tolist() == [0x80, 0xFF]
    assert IntElement(1).decode(torch.tensor([0, 1], dtype=torch.uint8)).tolist() == [0, -1]
    with pytest.raises(FormatError, match="NaN"):
        int4.encode(torch.tensor([math.nan]))
    with pytest.raises(FormatError, match=r"1..8"):
        IntElement(9)
    with pytest.raises(FormatError, match="out of range"):
        IntElement(3).decode(torch.tensor([8], dtype=torch.uint8))
    with pytest.raises(FormatError, match="uint8"):
        int4.decode(torch.tensor([1], dtype=torch.int32))


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 8),
    signed=st.booleans(),
    values=st.lists(st.floats(-300, 300, allow_nan=False, width=32), min_size=1, max_size=40),
)
def test_int_encode_decode_idempotent(bits: int, signed: bool, values: list[float]) -> None:
    elem = IntElement(bits, signed)
    x = torch.tensor(values, dtype=torch.float32)
    codes = elem.encode(x)
    decoded = elem.decode(codes)
    assert torch.equal(elem.encode(decoded), codes)
    assert torch.equal(elem.round(x), decoded)
    assert bool(((decoded - x.clamp(elem.qmin, elem.qmax)).abs() <= 0.5).all())


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=40))
def test_minifloat_round_is_idempotent_and_matches_codes(values: list[float]) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    for elem in (FP8_E4M3, FP8_E5M2, FP6_E3M2, FP6_E2M3, FP4_E2M1):
        r = elem.round(x)
        assert torch.equal(elem.round(r), r)
        assert torch.equal(elem.decode(elem.encode(x)), r)


# ---------------------------------------------------------------------------------------------- lookup tables
def test_nf4_table_matches_reference() -> None:
    reference = [-1, -0.6961928, -0.5250731, -0.3949175, -0.2844414, -0.1847734, -0.0910500, 0]
    reference += [0.0795803, 0.1609302, 0.2461123, 0.3379152, 0.4407098, 0.5626170, 0.7229568, 1]
    assert NF4.bits == 4 and NF4.max_value == 1.0
    np.testing.assert_allclose(NF4.decode(torch.arange(16, dtype=torch.uint8)).numpy(), reference, atol=5e-8)
    assert NF4.levels == tuple(np.float32(v).item() for v in NF4_LEVELS)


def test_lut_nearest_level_and_ties_to_smaller() -> None:
    table = torch.tensor(NF4.levels)
    x = torch.randn(5000, generator=torch.Generator().manual_seed(3))
    best = (x[:, None].double() - table[None].double()).abs().argmin(dim=1)  # argmin picks the lower index on ties
    assert torch.equal(NF4.encode(x).long(), best)
    mids = (table[1:].double() + table[:-1].double()) / 2
    exact_ties = mids[mids.float().double() == mids].float()
    lower = torch.searchsorted(table, exact_ties)  # index of the level just below... or equal
    assert torch.equal(NF4.encode(exact_ties).long(), lower - 1)
    tiny = LUTElement((-1.0, 0.0, 0.5, 1.0), "tiny")
    assert tiny.encode(torch.tensor([0.25, 0.75, -0.5, 9.0, -9.0])).tolist() == [1, 2, 0, 3, 0]
    assert tiny.round(torch.tensor([0.3])).tolist() == [0.5]


def test_lut_validation() -> None:
    with pytest.raises(FormatError, match="ascending"):
        LUTElement((0.0, 1.0, 0.5), "bad")
    with pytest.raises(FormatError, match=r"2..256"):
        LUTElement((0.0,), "bad")
    with pytest.raises(FormatError, match="finite"):
        LUTElement((0.0, math.inf), "bad")
    with pytest.raises(FormatError, match="NaN"):
        NF4.encode(torch.tensor([math.nan]))
    with pytest.raises(FormatError, match="out of range"):
        LUTElement((0.0, 1.0, 2.0), "three").decode(torch.tensor([3], dtype=torch.uint8))


def test_dynamic_map_structure() -> None:
    levels = dynamic_map_levels()
    assert len(levels) == 256 and list(levels) == sorted(levels) and len(set(levels)) == 256
    assert levels[-1] == 1.0 and -1.0 not in levels and 0.0 in levels
    positives = [v for v in levels if v > 0]
    assert len(positives) == 128  # 127 fractions·decades plus 1.0; 127 negatives; one zero
    # the smallest magnitude: 1e-6 · mean(0.1, 1); the largest below 1: 1 - 0.9/128
    assert positives[0] == pytest.approx(0.55e-6, rel=1e-6)
    assert positives[-2] == pytest.approx(1 - 0.9 / 128, rel=1e-7)
    assert sorted(-v for v in levels if v < 0) == positives[:-1]  # symmetric except +1.0
    assert DYNAMIC8.bits == 8 and DYNAMIC8.levels == levels
    with pytest.raises(FormatError, match="256"):
        dynamic_map_levels(6)


def test_codebook_element_with_data_levels() -> None:
    cb = CodebookElement(2)
    assert cb.name == "codebook2" and cb.size == 4
    assert cb.default_levels().tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    levels = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])  # one table per row, any order
    x = torch.tensor([[0.4, 2.6], [0.4, 2.6]])
    codes = cb.encode(x, levels)
    assert codes.tolist() == [[0, 3], [3, 0]]
    assert cb.decode(codes, levels).tolist() == [[0.0, 3.0], [0.0, 3.0]]
    with pytest.raises(FormatError, match="4 levels"):
        cb.encode(x, torch.zeros(3))
    with pytest.raises(FormatError, match=r"1..8"):
        CodebookElement(0)


# ---------------------------------------------------------------------------------------------- binary / ternary
def test_binary_and_ternary() -> None:
    b, t = BinaryElement(), TernaryElement()
    assert b.encode(torch.tensor([-0.1, 0.0, -0.0, 3.0])).tolist() == [0, 1, 1, 1]
    assert b.decode(torch.tensor([0, 1], dtype=torch.uint8)).tolist() == [-1, 1]
    assert t.encode(torch.tensor([-5.0, -0.5, 0.49, 0.5, 1.5])).tolist() == [0, 1, 1, 1, 2]
    assert t.decode(torch.tensor([0, 1, 2], dtype=torch.uint8)).tolist() == [-1, 0, 1]
    with pytest.raises(FormatError, match="out of range"):
        t.decode(torch.tensor([3], dtype=torch.uint8))
    with pytest.raises(FormatError, match="NaN"):
        b.encode(torch.tensor([math.nan]))
    assert (b.bits, t.bits, b.kind, t.kind) == (1, 2, "binary", "ternary")


# ---------------------------------------------------------------------------------------------- serialization
@pytest.mark.parametrize(
    "elem",
    [
        IntElement(3),
        IntElement(8, signed=False),
        FP8_E4M3,
        FP8_E5M2,
        FP4_E2M1,
        E8M0Element("ceil"),
        NF4,
        DYNAMIC8,
        CodebookElement(4),
        BinaryElement(),
        TernaryElement(),
    ],
    ids=lambda e: e.name,
)
def test_element_dict_round_trip(elem: ElementCodec) -> None:
    assert element_from_dict(elem.to_dict()) == elem


def test_element_from_dict_errors() -> None:
    with pytest.raises(FormatError, match="unknown"):
        element_from_dict({"type": "quantum"})
    with pytest.raises(FormatError, match="malformed"):
        element_from_dict({"type": "int"})

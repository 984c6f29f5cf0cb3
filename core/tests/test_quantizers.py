"""Weight quantizers: RTN, the MSE clipping search, the protocol and the calibration statistics."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import polyquant.formats as formats
from polyquant.errors import FormatError, RecipeError
from polyquant.formats.granularity import Granularity
from polyquant.quantizers import MSEQuantizer, Quantizer, RTNQuantizer, builtin_quantizers, make_quantizer
from polyquant.quantizers.mse import group_reduce
from polyquant.quantizers.stats import InputStats, input_rows


def _weight(rows: int, cols: int, seed: int, heavy: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * 0.02
    if heavy:  # Student-t-like tails: a few large weights per row, where clipping pays off
        z = torch.randn(2, rows, cols, generator=gen)
        w = w / (z.square().mean(0).sqrt() + 1e-3)
    return w


def _err(w: torch.Tensor, deq: torch.Tensor, p: float) -> torch.Tensor:
    return (w - deq.float()).abs().pow(p)


def test_rtn_is_the_formats_own_rounding() -> None:
    w = _weight(16, 64, 0)
    spec = formats.get("int4").with_options(group_size=32, symmetric=False)
    qt = RTNQuantizer().quantize_weight(w, spec)
    assert torch.equal(qt.dequantize(), spec.fake_quantize(w))
    assert qt.dtype == w.dtype


SPECS = [
    ("int4", {"group_size": 32}),
    ("int3", {"group_size": 32, "symmetric": False}),
    ("int2", {"group_size": 16, "symmetric": False}),
    ("int8", {}),
    ("nf4", {}),
    ("mxfp4", {}),
    ("nvfp4", {}),
    ("fp4_e2m1", {}),
    ("int4", {"group_size": 0}),
]


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(SPECS),
    seed=st.integers(min_value=0, max_value=10_000),
    heavy=st.booleans(),
    norm=st.sampled_from([2.0, 2.4]),
)
def test_mse_never_worse_than_rtn_per_group(case: tuple[str, dict], seed: int, heavy: bool, norm: float) -> None:
    """Per scale group, the searched error in the chosen norm is at most RTN's (RTN's range is candidate 0)."""
    name, options = case
    spec = formats.get(name).with_options(**options) if options else formats.get(name)
    w = _weight(8, 64, seed, heavy)
    mse = MSEQuantizer(grid=20, norm=norm).quantize_weight(w, spec).dequantize()
    rtn = spec.fake_quantize(w)
    per_group_mse = group_reduce(_err(w, mse, norm), spec.granularity)
    per_group_rtn = group_reduce(_err(w, rtn, norm), spec.granularity)
    assert bool((per_group_mse <= per_group_rtn * (1 + 1e-6) + 1e-30).all())


@pytest.mark.parametrize(("fmt", "ratio"), [("int4", 0.95), ("int3", 0.9), ("int2", 0.7)])
def test_mse_gains_grow_as_bits_shrink(fmt: str, ratio: float) -> None:
    """On Gaussian weights, clipping pays off more the fewer levels there are (measured: .93, .82, .60)."""
    spec = formats.get(fmt).with_options(group_size=64, symmetric=False)
    w = _weight(64, 128, 3)
    mse = MSEQuantizer(norm=2.0).quantize_weight(w, spec).dequantize()
    rtn = spec.fake_quantize(w)
    assert float(_err(w, mse, 2).sum()) < ratio * float(_err(w, rtn, 2).sum())


def test_mse_defaults_and_grid() -> None:
    q = MSEQuantizer()
    assert (q.grid, q.norm, q.maxshrink) == (100, 2.4, 0.8)
    ratios = q.ratios()
    assert len(ratios) == 79 and ratios[0] == 0.99 and abs(ratios[-1] - 0.21) < 1e-12
    assert MSEQuantizer(grid=10, maxshrink=0.5).ratios() == [0.9, 0.8, 0.7, 0.6]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": 0}, "grid: 0"),
        ({"norm": -1}, "norm: -1"),
        ({"maxshrink": 1.0}, "maxshrink: 1.0"),
        ({"grid": True}, "grid"),
    ],
)
def test_mse_argument_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        MSEQuantizer(**kwargs)


@pytest.mark.parametrize(
    "granularity",
    [
        Granularity.per_tensor(),
        Granularity.per_channel(0),
        Granularity.per_group(8),
        Granularity.per_block(4, 8),
        Granularity.per_flat_block(32),
    ],
)
def test_group_reduce_sums_each_group(granularity: Granularity) -> None:
    values = torch.rand(8, 32, generator=torch.Generator().manual_seed(0))
    reduced = group_reduce(values, granularity)
    assert reduced.shape == torch.Size(granularity.scale_shape((8, 32)))
    assert torch.allclose(reduced.sum(), values.sum())
    if granularity.kind == "group":
        assert torch.allclose(reduced[2, 1], values[2, 8:16].sum())


def test_quantizers_check_their_input() -> None:
    for quantizer in (RTNQuantizer(), MSEQuantizer()):
        with pytest.raises(FormatError, match="2-D"):
            quantizer.quantize_weight(torch.randn(2, 3, 4), formats.get("int8"))
        with pytest.raises(FormatError, match="meta"):
            quantizer.quantize_weight(torch.empty(4, 4, device="meta"), formats.get("int8"))
        with pytest.raises(FormatError, match="floating-point"):
            quantizer.quantize_weight(torch.ones(4, 4, dtype=torch.int32), formats.get("int8"))


def test_protocol_registry_and_factory() -> None:
    infos = {info.name: info for info in builtin_quantizers()}
    assert set(infos) == {"rtn", "mse", "gptq", "awq", "hqq", "kmeans"}
    assert [n for n, info in sorted(infos.items()) if info.needs_calibration] == ["awq", "gptq"]
    assert isinstance(RTNQuantizer(), Quantizer) and isinstance(MSEQuantizer(), Quantizer)
    q = make_quantizer("mse", {"grid": 7, "norm": 2})
    assert isinstance(q, MSEQuantizer) and (q.grid, q.norm) == (7, 2.0)
    with pytest.raises(
        RecipeError, match="method: 'spqr' is not a registered quantizer; allowed: awq, gptq, hqq, kmeans, mixed, mse"
    ):
        make_quantizer("spqr")
    with pytest.raises(RecipeError, match="accepted: no arguments"):
        make_quantizer("rtn", {"grid": 3})


# ------------------------------------------------------------------------------------------- stats
def test_input_stats_equal_explicit_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 6, generator=gen) for n in (3, 10, 1)]
    stats = InputStats()
    for b in batches:
        stats.add(b)
    x = torch.cat(batches)
    out = stats.as_dict()
    assert torch.allclose(out["hessian"], 2.0 / x.shape[0] * x.T @ x, atol=1e-5)
    assert torch.allclose(out["input_absmean"], x.abs().mean(0))
    assert torch.equal(out["input_absmax"], x.abs().amax(0))
    assert int(out["num_samples"]) == 14
    assert InputStats().as_dict() == {}


@pytest.mark.parametrize(
    "conv",
    [nn.Conv1d(3, 5, 3, padding=2, dilation=2, stride=2), nn.Conv2d(3, 4, (3, 2), padding=(1, 0), stride=(2, 1))],
)
def test_input_rows_times_gemm_view_is_the_conv(conv: nn.Module) -> None:
    """The unfolded rows multiply ``weight.flatten(1)`` exactly like the convolution does."""
    x = torch.randn(2, 3, *([9] * (conv.weight.dim() - 2)), generator=torch.Generator().manual_seed(1))
    rows = input_rows(conv, x)
    assert rows is not None
    with torch.no_grad():
        y = conv(x) - conv.bias.reshape(1, -1, *([1] * (x.dim() - 2)))
        gemm = rows @ conv.weight.flatten(1).T  # (B·positions, out)
    expected = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    assert torch.allclose(gemm, expected, atol=1e-5)


def test_input_rows_for_linear_and_unsupported_modules() -> None:
    assert input_rows(nn.Linear(4, 2), torch.zeros(2, 3, 4)).shape == (6, 4)  # type: ignore[union-attr]
    assert input_rows(nn.Conv1d(4, 4, 3, groups=2), torch.zeros(1, 4, 8)) is None
    assert input_rows(nn.Embedding(4, 2), torch.zeros(3, dtype=torch.long)) is None

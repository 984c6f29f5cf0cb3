"""Activation observers: streaming statistics, exact scales, and errors naming the module."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, RecipeError
from polyquant.kernels.ops import activation_qparams, fake_quantize_activation
from polyquant.quantizers.observers import (
    HistogramObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    activation_qmax,
    make_observer,
)


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8_e4m3", "fp8_e5m2"])
def test_minmax_scale_equals_kernels_dynamic_per_tensor_scale(fmt: str) -> None:
    """A min-max static scale is exactly the scale the kernels compute dynamically for the same tensor."""
    x = torch.randn(4, 33) * 3
    obs = MinMaxObserver("fc")
    for chunk in x.split(1):  # streaming over batches gives the same answer as one batch
        obs.observe(chunk)
    dynamic, _ = activation_qparams(x, ActivationSpec(format=fmt, granularity="tensor", dynamic=True))
    assert torch.equal(obs.scale(fmt), dynamic.reshape(()))


def test_activation_qmax_matches_formats() -> None:
    assert activation_qmax("int8") == 127.0
    assert activation_qmax("int4") == 7.0
    assert activation_qmax("fp8_e4m3") == float(torch.finfo(torch.float8_e4m3fn).max)
    assert activation_qmax("fp8_e5m2") == float(torch.finfo(torch.float8_e5m2).max)
    with pytest.raises(RecipeError, match="allowed: int8"):
        activation_qmax("int3")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=6),
    st.floats(min_value=0.01, max_value=1e4),
    st.integers(min_value=0, max_value=2**16),
    st.sampled_from([0.5, 0.9, 0.99, 0.999]),
)
def test_streamed_quantile_within_one_bin_of_exact(sizes: list[int], spread: float, seed: int, q: float) -> None:
    """Range doubling keeps counts exact, so any quantile lies in the bin of the exact order statistic."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randn(n, generator=gen) * spread * (i + 1) for i, n in enumerate(sizes)]
    obs = HistogramObserver(bins=64)
    for batch in batches:
        obs.observe(batch)
    values = torch.cat(batches).abs().double().sort().values
    assert obs.count == values.numel()
    assert obs.quantile(1.0) == float(values[-1])
    exact = float(values[math.ceil(q * values.numel()) - 1])
    width = obs.upper / obs.bins
    assert abs(obs.quantile(q) - exact) <= width * (1 + 1e-9)


def test_percentile_matches_exact_quantile_within_one_bin() -> None:
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    obs = PercentileObserver("fc", percentile=99.9)
    for chunk in x.split(10_000):
        obs.observe(chunk)
    exact = float(torch.quantile(x.abs()[:100_000], 0.999))  # torch.quantile has an input size limit
    exact_all = float(x.abs().sort().values[int(0.999 * x.numel())])
    bin_width = obs.upper / obs.bins
    assert abs(obs.clip() - exact_all) <= 2 * bin_width
    assert abs(obs.clip() - exact) < 0.1  # sanity against an independent estimate
    assert obs.clip() < float(x.abs().max())


def test_percentile_100_is_minmax() -> None:
    x = torch.randn(1000)
    p, m = PercentileObserver("fc", percentile=100.0), MinMaxObserver("fc")
    p.observe(x)
    m.observe(x)
    assert torch.equal(p.scale("int8"), m.scale("int8"))


def test_percentile_robust_to_outlier() -> None:
    x = torch.cat([torch.randn(100_000), torch.tensor([1000.0])])
    obs = PercentileObserver("fc", percentile=99.99)
    obs.observe(x)
    assert obs.clip() < 10.0


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8_e4m3"])
def test_mse_observer_beats_minmax_on_laplace_activations(fmt: str) -> None:
    """The error-minimizing clip never loses to min-max, and wins big where levels are scarce (int4)."""
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(50_000, generator=gen) - 0.5
    x = -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace(0, 1)
    mse, mm = MSEObserver("fc"), MinMaxObserver("fc")
    for chunk in x.split(5_000):
        mse.observe(chunk)
        mm.observe(chunk)
    spec = ActivationSpec(format=fmt, granularity="tensor", dynamic=False)

    def err(scale: torch.Tensor) -> float:
        return float((fake_quantize_activation(x, spec, scale) - x).square().mean())

    assert mse.clip(fmt) < mm.amax
    assert err(mse.scale(fmt)) <= err(mm.scale(fmt))
    if fmt == "int4":
        assert err(mse.scale(fmt)) < 0.3 * err(mm.scale(fmt))


@pytest.mark.parametrize("observer", [MinMaxObserver, PercentileObserver, MSEObserver])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_activations_name_the_module(observer: type, bad: float) -> None:
    obs = observer("model.layers.3.mlp.down_proj")
    with pytest.raises(CalibrationError, match=r"model\.layers\.3\.mlp\.down_proj.*non-finite"):
        obs.observe(torch.tensor([1.0, bad]))


@pytest.mark.parametrize("observer", [MinMaxObserver, PercentileObserver, MSEObserver])
def test_unobserved_module_is_an_error(observer: type) -> None:
    with pytest.raises(CalibrationError, match="never called"):
        observer("head").scale("int8")


def test_all_zero_activations_are_an_error() -> None:
    obs = MinMaxObserver("fc")
    obs.observe(torch.zeros(8))
    with pytest.raises(CalibrationError, match="zero"):
        obs.scale("int8")


def test_make_observer_follows_the_spec() -> None:
    static = {"format": "int8", "granularity": "tensor", "dynamic": False}
    assert isinstance(make_observer(ActivationSpec(**static), "a"), MinMaxObserver)
    obs = make_observer(ActivationSpec(**static, observer="percentile", percentile=99.5), "a")
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.5
    assert isinstance(make_observer(ActivationSpec(**static, observer="mse"), "a"), MSEObserver)
    with pytest.raises(RecipeError, match="symmetric"):
        make_observer(ActivationSpec(**{**static, "symmetric": False}), "a")

"""HQQ: the shared document's check (L1 error falls monotonically to a few percent below min-max) and guards."""

from __future__ import annotations

import itertools

import pytest
import torch

import polyquant
import polyquant.formats as formats
from polyquant.errors import RecipeError
from polyquant.quantizers import HQQQuantizer, make_quantizer
from polyquant.recipes import resolve

UINT4_G64 = formats.get("int4").with_options(group_size=64, symmetric=False)


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    return 0.02 * torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))


def _l1(w: torch.Tensor, q: torch.Tensor) -> float:
    return float((w - q).abs().mean())


def test_l1_error_falls_monotonically_below_min_max(weight: torch.Tensor) -> None:
    minmax = _l1(weight, UINT4_G64.quantize(weight).dequantize())
    errors = [
        _l1(weight, HQQQuantizer(iters=n, early_stop=False).quantize_weight(weight, UINT4_G64).dequantize())
        for n in (1, 2, 5, 10, 20)
    ]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(errors)), errors
    assert 0.90 < errors[-1] / minmax < 0.97  # the document: ≈5% below min-max


def test_default_matches_the_full_run_and_zeros_are_fractional(weight: torch.Tensor) -> None:
    qt = HQQQuantizer().quantize_weight(weight, UINT4_G64)
    assert qt.zero is not None and bool((qt.zero.float() != qt.zero.float().round()).any())
    rtn_scale = UINT4_G64.quantize(weight).scale
    assert torch.equal(qt.scale, rtn_scale), "HQQ moves only the zero points"
    assert _l1(weight, qt.dequantize()) < _l1(weight, UINT4_G64.quantize(weight).dequantize())


@pytest.mark.parametrize(("bits", "group"), [(2, 16), (3, 64), (8, 0)])
def test_other_widths_and_per_channel_improve(weight: torch.Tensor, bits: int, group: int) -> None:
    spec = formats.get(f"int{bits}").with_options(group_size=group, symmetric=False)
    assert _l1(weight, HQQQuantizer().quantize_weight(weight, spec).dequantize()) <= _l1(
        weight, spec.quantize(weight).dequantize()
    )


def test_constant_groups_stay_finite() -> None:
    w = torch.zeros(4, 64)
    w[1] = 0.5
    q = HQQQuantizer().quantize_weight(w, UINT4_G64).dequantize()
    assert torch.isfinite(q).all() and torch.allclose(q, w, atol=1e-3)


def test_errors_are_clear(weight: torch.Tensor) -> None:
    with pytest.raises(RecipeError, match="asymmetric integer"):
        HQQQuantizer().quantize_weight(weight, formats.get("int4"))
    with pytest.raises(RecipeError, match="asymmetric integer"):
        HQQQuantizer().quantize_weight(weight, formats.get("nf4"))
    for args, field in (({"iters": 0}, "iters"), ({"p": 1.5}, "p"), ({"kappa": 0.5}, "kappa"), ({"beta": -1}, "beta")):
        with pytest.raises(RecipeError, match=field):
            make_quantizer("hqq", args)


@pytest.mark.parametrize("preset", ["w4a16-hqq", "w3a16-hqq", "w2a16-hqq"])
def test_presets_beat_rtn_at_the_same_format(preset: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    x = torch.randn(32, 256)
    reference = model(x)
    rtn_recipe = {**resolve(preset).to_dict(), "name": f"{preset} with rtn", "method": "rtn"}
    hqq_model, report = polyquant.quantize(model, preset, inplace=False, progress=False)
    rtn_model, _ = polyquant.quantize(model, rtn_recipe, inplace=False, progress=False)
    assert report.summary.method == "hqq"
    with torch.no_grad():
        hqq_err = float((hqq_model(x) - reference).norm())
        rtn_err = float((rtn_model(x) - reference).norm())
    assert hqq_err < rtn_err

"""AWQ: the shared document's scale-search check, clip search, and end to end through the norms of a Llama."""

from __future__ import annotations

import pytest
import torch

import polyquant
import polyquant.formats as formats
from polyquant.errors import CalibrationError, RecipeError
from polyquant.quantizers import AWQQuantizer, make_quantizer
from polyquant.quantizers.awq import RATIOS, search_scales
from polyquant.quantizers.stats import InputStats

INT4_G128 = formats.get("int4").with_options(group_size=128, symmetric=False)


@pytest.fixture(scope="module")
def salient() -> tuple[torch.Tensor, torch.Tensor]:
    """8 salient input channels ×30 (the document's check 2)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 256, generator=g)
    x[:, :8] *= 30
    w = 0.02 * torch.randn(256, 256, generator=g)
    return x, w


def _mse(x: torch.Tensor, w: torch.Tensor, q: torch.Tensor) -> float:
    return float(((x @ (w - q).T) ** 2).mean())


def test_scale_search_picks_a_moderate_ratio_and_protects_salient_channels(salient) -> None:
    x, w = salient
    found = search_scales(x, [w], INT4_G128)
    assert 0.25 <= found.ratio <= 0.45  # the document: ≈ 0.3–0.4
    assert len(found.losses) == len(RATIOS) == 20 and found.losses[0] > 2.0 * min(found.losses)
    s = found.scales
    q_plain = INT4_G128.fake_quantize(w)
    q_awq = INT4_G128.fake_quantize(w * s) / s
    xs = x[:, :8]
    salient_plain = _mse(xs, w[:, :8], q_plain[:, :8])
    salient_awq = _mse(xs, w[:, :8], q_awq[:, :8])
    assert salient_plain > 2.5 * salient_awq  # error on the salient channels drops several-fold
    assert float(s[:8].mean()) > 2.5 * float(s[8:].mean())  # 30^0.3 ≈ 2.8


def test_clip_search_never_worse_than_rtn_on_the_calibration_objective(salient) -> None:
    x, w = salient
    stats = InputStats()
    stats.add(x)
    clipped = AWQQuantizer().quantize_weight(w, INT4_G128, stats=stats.as_dict()).dequantize()
    rtn = INT4_G128.quantize(w).dequantize()
    assert _mse(x, w, clipped) < 0.8 * _mse(x, w, rtn)
    plain = AWQQuantizer(clip=False).quantize_weight(w, INT4_G128, stats=stats.as_dict()).dequantize()
    assert torch.equal(plain, rtn)


def test_arguments_are_checked() -> None:
    for args, field in (({"steps": 0}, "steps"), ({"steps": 30}, "steps"), ({"clip": "no"}, "clip")):
        with pytest.raises(RecipeError, match=field):
            make_quantizer("awq", args)
    with pytest.raises(CalibrationError, match="no calibration rows"):
        search_scales(torch.zeros(0, 8), [torch.ones(4, 8)], INT4_G128)


def test_awq_on_a_tiny_llama_folds_scales_and_beats_rtn(tiny_llama) -> None:
    model = tiny_llama()
    with torch.no_grad():  # trained-looking norms: a few outlier channels AWQ should protect
        for module in model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight[:4] *= 25
    calib = {"input_ids": torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(1))}
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(ids).logits

    def error(preset: str, **kw: object) -> tuple[float, polyquant.QuantizationReport]:
        qmodel, report = polyquant.quantize(model, preset, inplace=False, progress=False, **kw)  # type: ignore[arg-type]
        with torch.no_grad():
            return float((qmodel(ids).logits - reference).norm() / reference.norm()), report

    awq, report = error("w4a16-awq", calibration=calib)
    rtn, _ = error("w4a16-g128")
    assert awq < rtn, (awq, rtn)
    assert any(note.startswith("awq: scaled 4 norm") for note in report.summary.notes), report.summary.notes
    assert report.summary.method == "awq" and report.summary.modules_quantized == 14


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_prepare_keeps_the_function_and_scales_linear_pairs(kv_heads: int, tiny_llama) -> None:
    model = tiny_llama(hidden=64, intermediate=128, kv_heads=kv_heads, vocab=96)
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    spec = formats.get("int4").with_options(group_size=32, symmetric=False)
    plan = {name: spec for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    notes = AWQQuantizer().prepare_model(model, [{"input_ids": ids}], plan)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference, atol=1e-4, rtol=1e-4)
    pairs = 4 if kv_heads == 4 else 2  # v → o is skipped under grouped-query attention
    assert notes[-1] == f"awq: scaled {pairs} linear → linear pair(s) (v → o, up → down)"

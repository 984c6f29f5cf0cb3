"""Recipe transforms end to end: ``transforms: [hadamard]`` (QuaRot) before GPTQ on a tiny Llama."""

from __future__ import annotations

import pytest
import torch

import polyquant
from polyquant.errors import RecipeError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def outlier_llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 3] *= 30  # one outlier channel in the residual stream
    return model


CALIB = {"input_ids": torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(1))}
IDS = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))


def _error(model: torch.nn.Module, preset: str) -> tuple[float, polyquant.QuantizationReport, torch.nn.Module]:
    with torch.no_grad():
        reference = model(IDS).logits
    qmodel, report = polyquant.quantize(model, preset, calibration=CALIB, inplace=False, progress=False)
    with torch.no_grad():
        return float((qmodel(IDS).logits - reference).norm() / reference.norm()), report, qmodel


@pytest.mark.parametrize(
    ("rotated", "plain"), [("w4a16-hadamard-gptq", "w4a16-gptq"), ("w2a16-hadamard-gptq", "w2a16-gptq")]
)
def test_rotation_lowers_the_error_with_an_outlier_channel(outlier_llama, rotated: str, plain: str) -> None:
    err_rotated, report, qmodel = _error(outlier_llama, rotated)
    err_plain, _, _ = _error(outlier_llama, plain)
    assert err_rotated < 0.9 * err_plain, (err_rotated, err_plain)
    names = [row.name for row in report.rows]
    assert "model.layers.0.mlp.down_proj.linear" in names and len(names) == 14
    assert type(qmodel.model.layers[0].mlp.down_proj).__name__ == "OnlineHadamard"
    assert any(note.startswith("quarot: residual rotation hadamard 128×128") for note in report.summary.notes)


def test_rotation_keeps_the_function_before_quantization(outlier_llama) -> None:
    recipe = {"weights": {"format": "int8", "group_size": 0}, "transforms": [{"hadamard": {"seed": 3}}], "include": []}
    with torch.no_grad():
        reference = outlier_llama(IDS).logits
    qmodel, report = polyquant.quantize(outlier_llama, recipe, inplace=False, progress=False)
    assert report.summary.modules_quantized == 0  # nothing planned: the rotated model alone
    with torch.no_grad():
        assert torch.allclose(qmodel(IDS).logits, reference, atol=1e-3, rtol=1e-3)


def test_hadamard_needs_a_model_it_understands() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(RecipeError, match="llama"):
        polyquant.quantize(model, {"weights": "int8", "transforms": ["hadamard"]}, progress=False)

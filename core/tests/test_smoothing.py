"""SmoothQuant: data-flow discovery of norm → linear groups, exact folding, and the α check of the document."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyquant
from polyquant.errors import CalibrationError, RecipeError
from polyquant.smoothing import (
    NormGroup,
    collect_input_absmax,
    find_norm_groups,
    smooth_model,
    smoothing_scales,
)

transformers = pytest.importorskip("transformers")


def _llama(tied: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # trained-looking norms: a few outlier channels
        for module in model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.uniform_(0.5, 1.5)
                module.weight[:3] *= 20
    return model


def test_groups_found_from_the_data_flow() -> None:
    model = _llama()
    ids = torch.randint(0, 96, (1, 8))
    groups = find_norm_groups(model, ids)
    by_norm = {g.norm: g.linears for g in groups}
    attn = tuple(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")
    assert by_norm["model.layers.0.input_layernorm"] == attn
    assert by_norm["model.layers.1.post_attention_layernorm"] == (
        "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj",
    )
    # transformers slices the final hidden states before lm_head, so the final norm's output tensor never
    # reaches it directly: conservatively, that pair is not a group.
    assert "model.norm" not in by_norm
    assert len(groups) == 4


def test_tied_heads_are_left_alone() -> None:
    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(32, 16)
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, 32, bias=False)
            self.head.weight = self.embed.weight  # tied

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.embed(ids)))

    model = TinyLM()
    assert find_norm_groups(model, torch.randint(0, 32, (1, 4))) == []
    model.head.weight = nn.Parameter(model.embed.weight.detach().clone())  # untied: now it can be smoothed
    assert find_norm_groups(model, torch.randint(0, 32, (1, 4))) == [NormGroup("norm", ("head",))]


def test_folding_keeps_the_logits_and_shrinks_the_outliers() -> None:
    model = _llama()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    groups = find_norm_groups(model, ids)
    absmax = collect_input_absmax(model, [g.linears[0] for g in groups], [ids])
    before = absmax["model.layers.0.self_attn.q_proj"]
    smooth_model(model, groups, absmax, alpha=0.5, check_input=ids)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference, atol=1e-4, rtol=1e-4)
    after = collect_input_absmax(model, ["model.layers.0.self_attn.q_proj"], [ids])["model.layers.0.self_attn.q_proj"]
    assert float(after.max() / after.median()) < 0.5 * float(before.max() / before.median())


def _per_tensor_w8a8_error(alpha: float | None) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 256))
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.5)
        model[0].weight[:4] *= 30  # four outlier channels
        model[1].weight.normal_(0, 0.05)
    x = torch.randn(64, 256)
    with torch.no_grad():
        reference = model(x)
    if alpha is not None:
        groups = find_norm_groups(model, x)
        smooth_model(model, groups, collect_input_absmax(model, ["1"], [x]), alpha=alpha, check_input=x)
    recipe = {
        "weights": {"format": "int8", "group_size": 0},
        "activations": {"format": "int8", "granularity": "tensor", "dynamic": True},
    }
    qmodel, _ = polyquant.quantize(model, recipe, inplace=False, progress=False)
    with torch.no_grad():
        return float((qmodel(x) - reference).norm() / reference.norm())


def test_w8a8_per_tensor_error_falls_as_alpha_grows() -> None:
    errors = [_per_tensor_w8a8_error(a) for a in (0.0, 0.25, 0.5)]
    baseline = _per_tensor_w8a8_error(None)
    assert errors[0] == pytest.approx(baseline, rel=0.3)  # α = 0 only rescales by the weights' ranges
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * baseline


def test_scales_formula() -> None:
    s = smoothing_scales(torch.tensor([9.0, 1.0, 0.0]), [torch.tensor([[1.0, 4.0, 1.0]]), torch.ones(1, 3)], 0.5)
    assert torch.allclose(s[:2], torch.tensor([3.0, 0.5]))
    assert float(s[2]) >= 1e-5


def test_errors_restore_the_weights() -> None:
    model = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4))
    original = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RecipeError, match="alpha"):
        smooth_model(model, [NormGroup("0", ("1",))], {"1": torch.ones(8)}, alpha=1.5)
    with pytest.raises(CalibrationError, match="no activation statistics"):
        smooth_model(model, [NormGroup("0", ("1",))], {}, alpha=0.5)

    class Shifted(nn.Module):  # has a per-channel weight, but the output is not f(x)·weight
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.weight

    bad = nn.Sequential(Shifted(), nn.Linear(8, 4))
    x = torch.randn(4, 8) * torch.linspace(1, 10, 8)
    with pytest.raises(CalibrationError, match="changed the model's output"):
        smooth_model(bad, [NormGroup("0", ("1",))], collect_input_absmax(bad, ["1"], [x]), check_input=x)
    assert torch.equal(bad[0].weight, torch.ones(8)), "restored after the failed check"
    assert all(torch.equal(a, b) for a, b in zip(original, model.parameters(), strict=True))


def test_smoothquant_recipe_transform_and_preset() -> None:
    model = _llama()
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(ids).logits

    def error(recipe: object) -> tuple[float, tuple[str, ...]]:
        qmodel, report = polyquant.quantize(
            model, recipe, calibration={"input_ids": ids}, inplace=False, progress=False
        )  # type: ignore[arg-type]
        with torch.no_grad():
            return float((qmodel(ids).logits - reference).norm() / reference.norm()), report.summary.notes

    plain, _ = error("w8a8")
    smoothed, notes = error("w8a8-smoothquant")
    assert smoothed < 0.8 * plain, (smoothed, plain)
    assert notes == ("smoothquant: smoothed 4 norm → linear group(s) with alpha 0.5",)
    custom = polyquant.recipes.resolve(
        {"weights": {"format": "int8", "group_size": 0}, "transforms": [{"smoothquant": {"alpha": 0.85}}]}
    )
    assert custom.transforms == ("smoothquant",) and custom.transform_args == {"smoothquant": {"alpha": 0.85}}
    assert polyquant.recipes.resolve(custom.to_dict()) == custom
    assert error(custom)[1] == ("smoothquant: smoothed 4 norm → linear group(s) with alpha 0.85",)
    with pytest.raises(CalibrationError, match="transforms smoothquant need calibration data"):
        polyquant.quantize(model, "w8a8-smoothquant", inplace=False, progress=False)
    with pytest.raises(RecipeError, match="alpha"):
        polyquant.quantize(
            model, {"weights": "int8", "transforms": [{"smoothquant": {"alpha": 2}}]}, calibration={"input_ids": ids}
        )
    with pytest.raises(RecipeError, match="does not accept the arguments"):
        polyquant.quantize(
            model, {"weights": "int8", "transforms": [{"smoothquant": {"beta": 2}}]}, calibration={"input_ids": ids}
        )

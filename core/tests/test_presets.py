"""Every built-in preset quantizes a small transformers Llama and keeps its logits close to full precision."""

from __future__ import annotations

import pytest
import torch

import polyquant
from polyquant.nn import QLinear
from polyquant.plugins import get_plugin_manager
from polyquant.recipes import resolve
from polyquant.recipes.presets import builtin_presets

transformers = pytest.importorskip("transformers")

# Relative logit error bounds; measured on this model: w8a16 .010, w8a8 .012, fp8 .045, w8a8-fp8 .056, w4a16 .158,
# nvfp4 .158, nf4 .154, mxfp4 .183, w3a16 .334, w2a16 .59, ternary .79 (random weights are hard on ternary).
BOUNDS = {
    "w8a16": 0.02,
    "w8a8": 0.025,
    "fp8": 0.08,
    "w8a8-fp8": 0.1,
    "w4a16": 0.25,
    "w4a16-g128": 0.25,
    "nvfp4": 0.25,
    "nf4": 0.25,
    "mxfp4": 0.3,
    "w3a16": 0.45,
    "w2a16": 0.8,
    "ternary": 0.95,
}
BITS = {"w8a16": 8, "w8a8": 8, "fp8": 8, "w8a8-fp8": 8, "w4a16": 4, "w4a16-g128": 4, "nvfp4": 4, "nf4": 4, "mxfp4": 4}
BITS |= {"w3a16": 3, "w2a16": 2, "ternary": 2}


@pytest.fixture(scope="module")
def llama() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    config = transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    return model, ids, logits


def test_required_presets_exist_and_validate() -> None:
    names = [p.name for p in builtin_presets()]
    assert set(BOUNDS) <= set(names)
    registered = get_plugin_manager().get_recipes()
    for name in names:
        recipe = resolve(name)
        assert recipe.name == name and recipe.description == registered[name].description


def test_preset_choices() -> None:
    assert resolve("w4a16").weights.group_size == 0 and resolve("w4a16-g128").weights.group_size == 128
    assert resolve("w3a16").method == resolve("w2a16").method == "mse"
    assert resolve("w2a16").weights.group_size == 64
    assert resolve("w8a8").activations is not None and resolve("w8a8").activations.dynamic
    assert resolve("w8a8-fp8").activations.format == "fp8_e4m3"  # type: ignore[union-attr]
    assert all(resolve(n).activations is None for n in ("w8a16", "w4a16", "fp8", "nvfp4", "mxfp4", "nf4", "ternary"))


@pytest.mark.parametrize("preset", list(BOUNDS))
def test_preset_on_tiny_llama(llama: tuple[torch.nn.Module, torch.Tensor, torch.Tensor], preset: str) -> None:
    model, ids, reference = llama
    qmodel, report = polyquant.quantize(model, preset, inplace=False, progress=False)
    quantized = [name for name, m in qmodel.named_modules() if isinstance(m, QLinear)]
    assert len(quantized) == 14 and "lm_head" not in quantized  # 7 linears per layer; the head stays
    assert [s.name for s in report.skipped] == ["lm_head"]
    with torch.no_grad():
        logits = qmodel(ids).logits
    error = float((logits - reference).norm() / reference.norm())
    assert error < BOUNDS[preset]
    bits = report.summary.avg_bits_per_weight
    assert BITS[preset] <= bits < BITS[preset] + 0.6  # the format's bits plus scales/zeros

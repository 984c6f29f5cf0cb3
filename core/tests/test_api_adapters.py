"""The generic adapter (blocks, default excludes) and adapter selection."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from polyquant.adapters import GenericAdapter, builtin_adapters, select_adapter
from polyquant.errors import RecipeError
from polyquant.plugins import AdapterInfo, ModelAdapter, PluginManager, hookimpl, using_plugin_manager


class _Block(nn.Module):
    def __init__(self, dim: int, experts: int = 0) -> None:
        super().__init__()
        self.attn = nn.Linear(dim, dim)
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(experts))


class _Net(nn.Module):
    def __init__(self, layers: int = 2, experts: int = 0, tie: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 8)
        self.layers = nn.ModuleList(_Block(8, experts) for _ in range(layers))
        self.out = nn.Linear(8, 32, bias=False)
        if tie:
            self.out.weight = self.embed.weight


def test_generic_adapter_satisfies_protocol_and_matches_everything() -> None:
    adapter = GenericAdapter()
    assert isinstance(adapter, ModelAdapter)
    assert adapter.matches(nn.Linear(2, 2)) and adapter.matches(_Net())


def test_blocks_are_the_layer_stack_not_the_experts() -> None:
    """Three layers of eight experts each: the layer list holds more parameters than any expert list."""
    names = [name for name, _ in GenericAdapter().blocks(_Net(layers=3, experts=8))]
    assert names == ["layers.0", "layers.1", "layers.2"]


def test_blocks_fall_back_to_whole_model() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert GenericAdapter().blocks(model) == [("", model)]


def test_blocks_ignore_lists_of_different_modules() -> None:
    model = nn.Module()
    model.mixed = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 8)])
    assert GenericAdapter().blocks(model) == [("", model)]


def test_blocks_of_a_transformers_model() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
    )
    model = transformers.LlamaForCausalLM(config)
    names = [name for name, _ in GenericAdapter().blocks(model)]
    assert names == ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert GenericAdapter().default_exclude(model) == ["model.embed_tokens", "lm_head"]


def test_default_exclude_embeddings_heads_and_tied_weights() -> None:
    assert GenericAdapter().default_exclude(_Net()) == ["embed"]
    assert GenericAdapter().default_exclude(_Net(tie=True)) == ["embed", "out"]
    model = nn.Module()
    model.lm_head = nn.Linear(4, 4)
    assert GenericAdapter().default_exclude(model) == ["lm_head"]


def test_default_exclude_uses_get_output_embeddings() -> None:
    model = _Net()
    model.get_output_embeddings = lambda: model.out  # type: ignore[method-assign]
    assert GenericAdapter().default_exclude(model) == ["embed", "out"]


def test_builtin_adapters_record() -> None:
    (info,) = builtin_adapters()
    assert info.name == "generic" and info.priority == -100
    assert isinstance(info.factory(), GenericAdapter)


class _ConvAdapter:
    name = "convnets"

    def matches(self, model: nn.Module) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in model.modules())

    def blocks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [("", model)]

    def default_exclude(self, model: nn.Module) -> list[str]:
        return []


@pytest.fixture
def pm_with_conv_adapter() -> PluginManager:
    pm = PluginManager(entry_points=False)
    plugin = types.SimpleNamespace(
        polyquant_register_adapters=hookimpl(lambda: [AdapterInfo("convnets", _ConvAdapter, priority=10)])
    )
    pm.register(plugin, "convplugin")
    return pm


def test_select_adapter_prefers_highest_priority_match(pm_with_conv_adapter: PluginManager) -> None:
    with using_plugin_manager(pm_with_conv_adapter):
        assert select_adapter(nn.Sequential(nn.Conv2d(3, 3, 3))).name == "convnets"
        assert select_adapter(nn.Linear(3, 3)).name == "generic"
        assert select_adapter(nn.Sequential(nn.Conv2d(3, 3, 3)), "generic").name == "generic"


def test_select_adapter_accepts_instances_and_rejects_unknown_names() -> None:
    adapter = _ConvAdapter()
    assert select_adapter(nn.Linear(2, 2), adapter) is adapter  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match=r"'llama' is not registered; registered adapters: generic"):
        select_adapter(nn.Linear(2, 2), "llama")
    with pytest.raises(RecipeError, match="does not implement ModelAdapter"):
        select_adapter(nn.Linear(2, 2), object())  # type: ignore[arg-type]


def test_tied_weights_detected_by_identity() -> None:
    model = _Net(tie=True)
    assert model.out.weight is model.embed.weight
    model.out.weight = nn.Parameter(torch.zeros(32, 8))
    assert "out" not in GenericAdapter().default_exclude(model)

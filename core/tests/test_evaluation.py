"""Evaluators: output error statistics against exact references, model size accounting, the registry."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyquant.errors import PolyquantError
from polyquant.evaluation import (
    builtin_evaluators,
    evaluate,
    model_size,
    output_error,
    primary_output,
    quantized_weights,
    tensor_key,
)
from polyquant.plugins import PluginManager, using_plugin_manager


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    pm = PluginManager(entry_points=False)
    with using_plugin_manager(pm):
        yield pm


def _linear(seed: int, n_in: int = 16, n_out: int = 8) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out)


# --------------------------------------------------------------------------------------------- output_error
def test_identical_models_have_zero_error() -> None:
    ref = _linear(0)
    stats = output_error(ref, copy.deepcopy(ref), torch.randn(6, 16))
    assert stats["relative_l2"] == 0.0 and stats["max_abs_error"] == 0.0 and stats["mse"] == 0.0
    assert stats["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)
    assert stats["num_samples"] == 6.0 and stats["nonfinite"] == 0.0


def test_scaled_outputs_give_exact_relative_error_and_unit_cosine() -> None:
    ref = _linear(1).double()
    scaled = copy.deepcopy(ref)
    with torch.no_grad():  # float32 values times 1.25 are exact in float64
        scaled.weight.mul_(1.25)
        scaled.bias.mul_(1.25)
    x = torch.randn(5, 16, dtype=torch.float64)
    stats = output_error(ref, scaled, x)
    with torch.no_grad():
        expected_max = float((scaled(x) - ref(x)).abs().max())
    assert stats["relative_l2"] == pytest.approx(0.25, rel=1e-12)
    assert stats["cosine_similarity"] == pytest.approx(1.0, rel=1e-12)
    assert stats["max_abs_error"] == pytest.approx(expected_max, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 5), n_in=st.integers(1, 12), n_out=st.integers(1, 6))
def test_statistics_match_direct_formulas(seed: int, rows: int, n_in: int, n_out: int) -> None:
    ref, other = _linear(seed, n_in, n_out).double(), _linear(seed + 1, n_in, n_out).double()
    x = torch.randn(rows, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    stats = output_error(ref, other, x)
    with torch.no_grad():
        r, q = ref(x), other(x)
    assert stats["relative_l2"] == pytest.approx(float((q - r).norm() / r.norm()), rel=1e-9)
    assert stats["max_abs_error"] == pytest.approx(float((q - r).abs().max()), rel=1e-12)
    expected_cos = float(torch.nn.functional.cosine_similarity(q.flatten(), r.flatten(), dim=0, eps=0.0))
    assert stats["cosine_similarity"] == pytest.approx(expected_cos, rel=1e-9, abs=1e-12)
    assert stats["mse"] == pytest.approx(float((q - r).square().mean()), rel=1e-9)
    assert -1.0 - 1e-12 <= stats["cosine_similarity"] <= 1.0 + 1e-12


class _DictOut(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": x.sum() * 100, "logits": x * self.scale}


def test_mapping_outputs_compare_logits_not_loss() -> None:
    stats = output_error(_DictOut(1.0), _DictOut(2.0), torch.ones(2, 3))
    assert stats["relative_l2"] == pytest.approx(1.0)


def test_select_picks_any_output() -> None:
    stats = output_error(_DictOut(1.0), _DictOut(2.0), torch.ones(2, 3), select=lambda out: out["loss"])
    assert stats["relative_l2"] == 0.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ((torch.ones(1), torch.zeros(1)), torch.ones(1)),
        ([None, {"hidden": torch.zeros(2)}], torch.zeros(2)),
        ({"last_hidden_state": torch.ones(3), "extra": torch.zeros(1)}, torch.ones(3)),
    ],
)
def test_primary_output_finds_the_main_tensor(output: object, expected: torch.Tensor) -> None:
    assert torch.equal(primary_output(output), expected)


def test_primary_output_without_tensor_explains_select() -> None:
    with pytest.raises(PolyquantError, match="select="):
        primary_output({"text": "hello"})


def test_output_shape_mismatch_is_an_error() -> None:
    with pytest.raises(PolyquantError, match=r"shape \(1, 8\).*\(1, 4\)"):
        output_error(_linear(0, 16, 8), _linear(0, 16, 4), torch.randn(2, 16))


def test_models_run_in_eval_mode_and_flags_are_restored() -> None:
    ref = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))
    other = copy.deepcopy(ref)
    ref.train()
    other[1].train(False)
    stats = output_error(ref, other, torch.randn(4, 8))
    assert stats["relative_l2"] == 0.0  # dropout inactive
    assert ref.training and ref[1].training and other.training and not other[1].training


def test_non_finite_quantized_outputs_are_counted() -> None:
    broken = _linear(0)
    with torch.no_grad():
        broken.bias[0] = float("nan")
    stats = output_error(_linear(0), broken, torch.randn(3, 16))
    assert stats["nonfinite"] == 3.0
    assert stats["relative_l2"] != stats["relative_l2"]  # NaN propagates


def test_zero_reference_output() -> None:
    zero = torch.nn.Linear(4, 2, bias=False)
    torch.nn.init.zeros_(zero.weight)
    assert output_error(zero, copy.deepcopy(zero), torch.randn(2, 4))["cosine_similarity"] == 1.0
    assert output_error(zero, _linear(0, 4, 2), torch.randn(2, 4))["relative_l2"] == float("inf")


def test_num_samples_and_keyword_inputs() -> None:
    class Kw(torch.nn.Module):
        def forward(self, *, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    data = [{"a": torch.ones(1, 2), "b": torch.ones(1, 2)}] * 5
    assert output_error(Kw(), Kw(), data, num_samples=2)["num_samples"] == 2.0


# --------------------------------------------------------------------------------------------- size
def test_fp_model_size_counts_every_tensor_once() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    size = model_size(model)
    expected = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert size["total_bytes"] == size["other_bytes"] == expected
    assert size["quantized_modules"] == 0 and size["bits_per_weight"] == 0.0
    assert size["parameters"] == sum(p.numel() for p in model.parameters())


def test_tied_weights_are_counted_once() -> None:
    embed = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    model = torch.nn.ModuleDict({"embed": embed, "head": head})
    assert model_size(model)["total_bytes"] == 10 * 4 * 4


def test_tensor_key_distinguishes_views() -> None:
    w = torch.zeros(4, 4)
    assert tensor_key(w) == tensor_key(w.view(4, 4))
    assert tensor_key(w) != tensor_key(w[1:])
    meta = torch.empty(2, device="meta")
    assert tensor_key(meta) != tensor_key(torch.empty(2, device="meta"))


def test_quantized_model_size_is_exact() -> None:
    from polyquant.formats import get
    from polyquant.nn import QLinear

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    model[0] = QLinear.from_linear(model[0], get("int4").with_options(group_size=32))
    qt = model[0].weight
    size = model_size(model)
    assert [name for name, _, _ in quantized_weights(model)] == ["0"]
    assert size["quantized_bytes"] == qt.nbytes
    assert size["quantized_weights"] == 64 * 32
    assert size["bits_per_weight"] == pytest.approx(qt.bits_per_weight)
    fp_bytes = 4 * (32 + 32 * 16 + 16)  # first bias, second layer weight and bias
    assert size["other_bytes"] == fp_bytes
    assert size["total_bytes"] == qt.nbytes + fp_bytes
    assert size["parameters"] == 64 * 32 + 32 + 32 * 16 + 16


# --------------------------------------------------------------------------------------------- registry
def test_builtin_evaluators_are_registered(manager: PluginManager) -> None:
    assert {"output_error", "size"} <= set(manager.get_evaluators())
    assert all(e.description for e in builtin_evaluators())


def test_evaluate_through_the_registry(manager: PluginManager) -> None:
    ref = _linear(0)
    stats = evaluate("output_error", copy.deepcopy(ref), torch.randn(3, 16), reference=ref)
    assert stats["relative_l2"] == 0.0
    size = evaluate("size", ref)
    assert size["total_bytes"] == float((16 * 8 + 8) * 4)
    assert all(isinstance(v, float) for v in size.values())


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("perplexity", {}, r"unknown evaluator 'perplexity'; known evaluators: output_error, size"),
        ("output_error", {}, "reference="),
        ("size", {"verbose": True}, "takes no options"),
    ],
)
def test_evaluate_errors(manager: PluginManager, name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolyquantError, match=message):
        evaluate(name, _linear(0), torch.randn(1, 16), **kwargs)

"""Mixed precision: sensitivities and bit allocation under a budget (greedy, exact DP, brute force)."""

from __future__ import annotations

import itertools

import pytest
import torch

import polyquant.formats as formats
from polyquant.errors import RecipeError
from polyquant.mixed_precision import Candidate, allocate, sensitivities

CANDIDATES = [formats.get(f"int{b}").with_options(group_size=32) for b in (2, 3, 4, 8)]
INT2, INT8 = CANDIDATES[0], CANDIDATES[-1]


def _layers(seed: int = 0, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}": (0.5 + i) * torch.randn(32, 64, generator=g) for i in range(n)}


def _brute_force(table, budget):  # type: ignore[no-untyped-def]
    names = list(table)
    limit = budget * sum(table[n][0].params for n in names)
    best = None
    for combo in itertools.product(*(table[n] for n in names)):
        if sum(c.bits for c in combo) <= limit and (best is None or sum(c.error for c in combo) < best[0]):
            best = (sum(c.error for c in combo), combo)
    assert best is not None
    return best[0]


@pytest.mark.parametrize("budget", [3.0, 4.0, 5.5])
def test_exact_matches_brute_force_and_greedy_is_feasible(budget: float) -> None:
    table = sensitivities(_layers(), CANDIDATES)
    exact = allocate(table, budget, solver="exact", resolution=1.0)
    greedy = allocate(table, budget)
    assert exact.bits_per_weight <= budget + 1e-9 and greedy.bits_per_weight <= budget + 1e-9
    assert exact.total_error == pytest.approx(_brute_force(table, budget), rel=1e-9)
    assert exact.total_error <= greedy.total_error * (1 + 1e-9)


def test_more_bits_go_to_the_more_sensitive_layers() -> None:
    g = torch.Generator().manual_seed(1)
    weights = {"a": torch.randn(32, 64, generator=g), "b": torch.randn(32, 64, generator=g)}
    x_small, x_large = 0.01 * torch.randn(256, 64, generator=g), 10 * torch.randn(256, 64, generator=g)
    hessians = {"a": 2 * x_small.T @ x_small / 256, "b": 2 * x_large.T @ x_large / 256}
    plan = allocate(sensitivities(weights, [INT2, INT8], hessians=hessians), budget=5.6, solver="exact")
    assert dict(plan.choice) == {"a": "int2", "b": "int8"}  # the same weights; b's inputs are 1000x larger
    swapped = {"a": hessians["b"], "b": hessians["a"]}
    plan = allocate(sensitivities(weights, [INT2, INT8], hessians=swapped), budget=5.6, solver="exact")
    assert dict(plan.choice) == {"a": "int8", "b": "int2"}


def test_hessian_error_is_the_output_mse() -> None:
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(16, 32, generator=g), torch.randn(512, 32, generator=g)
    int4 = CANDIDATES[2]
    table = sensitivities({"w": w}, [int4], hessians={"w": 2 * x.T @ x / 512})
    q = int4.fake_quantize(w)
    output_mse = float(((x @ (w - q).T) ** 2).mean())
    assert table["w"][0].error == pytest.approx(2 * output_mse, rel=1e-4)  # H carries GPTQ's factor 2


def test_errors_and_report() -> None:
    table = sensitivities(_layers(n=2), CANDIDATES)
    with pytest.raises(RecipeError, match="below the cheapest allocation"):
        allocate(table, 1.0)
    with pytest.raises(RecipeError, match="solver"):
        allocate(table, 4.0, solver="ilp")
    with pytest.raises(RecipeError, match="candidate formats"):
        sensitivities(_layers(n=1), [])
    g128 = formats.get("int4").with_options(group_size=128)
    with pytest.raises(RecipeError, match="no candidate format fits layer 'l0'"):
        sensitivities(_layers(n=1), [g128])  # 64 inputs: groups of 128 do not fit
    text = allocate(table, 4.0).to_markdown(table)
    assert "| l0 |" in text and "bits/weight" in text
    assert isinstance(table["l0"][0], Candidate) and table["l0"][0].params == 32 * 64


def test_mixed_method_allocates_per_layer_and_reports_it(tiny_llama) -> None:
    import polyquant

    model = tiny_llama()
    calib = {"input_ids": torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))}
    recipe = {**polyquant.recipes.resolve("mixed-3.5").to_dict(), "method_args": {"budget": 3.0, "method": "rtn"}}
    _, report = polyquant.quantize(model, recipe, calibration=calib, inplace=False, progress=False)
    assert report.summary.avg_bits_per_weight <= 3.0 + 1e-9
    assert len({row.format for row in report.rows}) >= 2, "the layers got different widths"
    assert any(note.startswith("mixed precision: ") for note in report.summary.notes)
    with pytest.raises(polyquant.RecipeError, match="budget"):
        polyquant.quantize(model, {**recipe, "method_args": {"budget": 0}}, calibration=calib, progress=False)
    with pytest.raises(polyquant.RecipeError, match="bits"):
        polyquant.quantize(model, {**recipe, "method_args": {"budget": 3, "bits": [9]}}, calibration=calib)

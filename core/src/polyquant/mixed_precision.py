"""Mixed precision: per-layer sensitivity and bit allocation under a bits-per-weight budget.

Each layer can take one of several candidate weight formats (``int2`` … ``int8``, groups, NF4, ...). A
layer's *sensitivity* to a candidate is the error that candidate causes:

* with calibration statistics, the Hessian-weighted error ``tr((W − Ŵ) H (W − Ŵ)ᵀ) / N_out`` — the
  expected increase of the layer's output MSE on the calibration inputs (``H = 2/N Σ x xᵀ``, GPTQ's
  objective, so it ranks layers the way GPTQ would suffer from them);
* without, the plain squared weight error ``‖W − Ŵ‖²`` (every input direction weighted equally).

The allocation picks one candidate per layer minimizing the summed sensitivity subject to
``Σ bits(layer) ≤ budget · Σ params(layer)``, bits counted exactly (scales and zeros included). Two
solvers:

* ``greedy``: start every layer at its most precise candidate and repeatedly take the step to a cheaper
  candidate with the smallest error increase per bit saved, until the budget holds (fast, near-optimal
  on convex error curves);
* ``exact``: a multiple-choice knapsack by dynamic programming over the bit budget, discretized to
  ``resolution`` bits (integer programming without a solver dependency).

As a recipe method, ``mixed`` (:class:`MixedPrecisionQuantizer`) measures the Hessians on the calibration
data, allocates integer widths to the planned layers under ``budget`` and rounds each with an inner method
(GPTQ by default); the report's rows show each layer's format.

Example:
    >>> import torch
    >>> layers = {"a": torch.randn(64, 128), "b": 0.01 * torch.randn(64, 128)}
    >>> table = sensitivities(layers, ["int2", "int4", "int8"])
    >>> plan = allocate(table, budget=5.5)
    >>> sorted(plan.choice.items())
    [('a', 'int8'), ('b', 'int2')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polyquant import formats
from polyquant.errors import RecipeError
from polyquant.formats.spec import FormatSpec
from polyquant.plugins.records import QuantizerInfo

__all__ = ["Allocation", "Candidate", "MixedPrecisionQuantizer", "allocate", "mixed_quantizer_info", "sensitivities"]


@dataclass(frozen=True)
class Candidate:
    """One layer quantized one way: its exact cost in bits, the error it causes, and the layer's size."""

    format: str
    bits: float
    error: float
    params: int


@dataclass(frozen=True)
class Allocation:
    """The chosen candidate per layer.

    Attributes:
        choice: layer name → format name.
        bits_per_weight: the achieved average over the layers (exact, scales included).
        total_error: summed sensitivity of the choice.
        budget: the requested average bits per weight.
    """

    choice: Mapping[str, str]
    bits_per_weight: float
    total_error: float
    budget: float

    def to_markdown(self, table: Mapping[str, Sequence[Candidate]] | None = None) -> str:
        """A table of the allocation (and each layer's candidates' errors when ``table`` is given)."""
        lines = [f"Mixed precision: {self.bits_per_weight:.3f} bits/weight (budget {self.budget:g})", ""]
        lines += ["| layer | format | error |", "|---|---|---|"]
        for name, fmt in self.choice.items():
            error = next((c.error for c in (table or {}).get(name, ()) if c.format == fmt), math.nan)
            lines.append(f"| {name} | {fmt} | {error:.3e} |")
        return "\n".join(lines)


def _spec(candidate: str | FormatSpec) -> FormatSpec:
    return candidate if isinstance(candidate, FormatSpec) else formats.get(candidate)


def sensitivities(
    weights: Mapping[str, Tensor],
    candidates: Sequence[str | FormatSpec],
    *,
    hessians: Mapping[str, Tensor] | None = None,
) -> dict[str, list[Candidate]]:
    """Every layer's error and exact bit cost under every candidate format (RTN rounding).

    Args:
        weights: layer name → 2-D weight ``(out, in)``.
        candidates: format names or specs; a candidate that does not fit a layer's shape is left out for it.
        hessians: layer name → ``(in, in)`` input Hessian; layers with one get Hessian-weighted errors.

    Raises:
        RecipeError: no candidates, or a layer no candidate fits.
    """
    if not candidates:
        raise RecipeError("mixed precision needs candidate formats, e.g. ['int2', 'int3', 'int4', 'int8']")
    specs = [_spec(c) for c in candidates]
    table: dict[str, list[Candidate]] = {}
    for name, weight in weights.items():
        w = weight.detach().float()
        h = None if hessians is None else hessians.get(name)
        options = []
        for spec in specs:
            try:
                q = spec.fake_quantize(w)
            except Exception:  # noqa: BLE001 (a candidate whose groups do not fit this shape)
                continue
            diff = w - q
            error = (
                float(torch.einsum("oi,ij,oj->", diff, h.float(), diff)) / w.shape[0]
                if h is not None
                else float((diff**2).sum())
            )
            bits = spec.bits_per_weight(tuple(w.shape)) * w.numel()
            options.append(Candidate(spec.name, bits, max(error, 0.0), w.numel()))
        if not options:
            raise RecipeError(f"mixed precision: no candidate format fits layer {name!r} of shape {tuple(w.shape)}")
        table[name] = options
    return table


def allocate(
    table: Mapping[str, Sequence[Candidate]],
    budget: float,
    *,
    solver: str = "greedy",
    resolution: float | None = None,
) -> Allocation:
    """Choose one candidate per layer under an average bits-per-weight ``budget``.

    Args:
        table: layer name → its candidates (from :func:`sensitivities`).
        budget: average bits per weight over all layers (scales included).
        solver: ``"greedy"`` or ``"exact"``.
        resolution: bit granularity of the exact solver (default: total bits / 20 000).

    Raises:
        RecipeError: unknown solver, or a budget below the cheapest possible allocation.
    """
    if solver not in ("greedy", "exact"):
        raise RecipeError(f"solver: {solver!r} is invalid; use 'greedy' or 'exact'")
    params = {name: options[0].params for name, options in table.items()}
    total_params = sum(params.values())
    limit = budget * total_params
    cheapest = sum(min(c.bits for c in options) for options in table.values())
    if cheapest > limit * (1 + 1e-9):
        raise RecipeError(
            f"budget: {budget:g} bits/weight is below the cheapest allocation "
            f"({cheapest / total_params:.3f} bits/weight with these candidates); raise it or add lower-bit formats"
        )
    chosen = _greedy(table, limit) if solver == "greedy" else _exact(table, limit, resolution)
    bits = sum(c.bits for c in chosen.values())
    return Allocation(
        choice={name: c.format for name, c in chosen.items()},
        bits_per_weight=bits / total_params,
        total_error=sum(c.error for c in chosen.values()),
        budget=budget,
    )


def _greedy(table: Mapping[str, Sequence[Candidate]], limit: float) -> dict[str, Candidate]:
    ladders = {name: sorted(options, key=lambda c: (-c.bits, c.error)) for name, options in table.items()}
    position = dict.fromkeys(ladders, 0)
    chosen = {name: ladder[0] for name, ladder in ladders.items()}
    total = sum(c.bits for c in chosen.values())
    while total > limit * (1 + 1e-12):
        best: tuple[float, str, int] | None = None
        for name, ladder in ladders.items():
            current = ladder[position[name]]
            for step in range(position[name] + 1, len(ladder)):
                nxt = ladder[step]
                saved = current.bits - nxt.bits
                if saved <= 0:
                    continue
                cost = (nxt.error - current.error) / saved
                if best is None or cost < best[0]:
                    best = (cost, name, step)
        if best is None:
            break
        _, name, step = best
        total -= chosen[name].bits - ladders[name][step].bits
        position[name] = step
        chosen[name] = ladders[name][step]
    return chosen


def _exact(table: Mapping[str, Sequence[Candidate]], limit: float, resolution: float | None) -> dict[str, Candidate]:
    """Multiple-choice knapsack by dynamic programming over the budget in ``unit``-bit steps."""
    names = list(table)
    unit = resolution or max(limit / 20000.0, 1.0)
    capacity = math.floor(limit / unit + 1e-9)
    best = torch.full((capacity + 1,), math.inf, dtype=torch.float64)
    best[0] = 0.0  # best[c]: minimal error of the layers so far at a cost of exactly c units
    picks: list[Tensor] = []
    for name in names:
        new = torch.full_like(best, math.inf)
        pick = torch.full((capacity + 1,), -1, dtype=torch.long)
        for index, cand in enumerate(table[name]):
            cost = math.ceil(cand.bits / unit - 1e-9)
            if cost > capacity:
                continue
            shifted = torch.full_like(best, math.inf)
            shifted[cost:] = best[: capacity + 1 - cost] + cand.error
            better = shifted < new
            new = torch.where(better, shifted, new)
            pick = torch.where(better, torch.full_like(pick, index), pick)
        picks.append(pick)
        best = new
    end = int(torch.argmin(best))
    if not math.isfinite(float(best[end])):
        return _greedy(table, limit)  # rounding costs up to whole units put every allocation over the limit
    chosen: dict[str, Candidate] = {}
    for layer in range(len(names) - 1, -1, -1):
        cand = table[names[layer]][int(picks[layer][end])]
        chosen[names[layer]] = cand
        end -= math.ceil(cand.bits / unit - 1e-9)
    return {name: chosen[name] for name in names}


class MixedPrecisionQuantizer:
    """The ``mixed`` method: per-layer integer widths under a bits-per-weight budget, then an inner method.

    Args:
        budget: average bits per weight over the quantized layers, scales included (e.g. 3.5).
        bits: candidate integer widths (asymmetric, groups of ``group_size``).
        group_size: group size of every candidate (0: per channel).
        solver: ``"greedy"`` or ``"exact"`` (see :func:`allocate`).
        method: the quantizer that rounds each layer once its format is chosen (``gptq``, ``rtn``, ...).
        method_args: arguments of that quantizer.

    Example:
        >>> MixedPrecisionQuantizer(budget=3.5).needs_calibration
        True
    """

    name = "mixed"
    needs_calibration = True

    def __init__(
        self,
        budget: float,
        bits: Sequence[int] = (2, 3, 4, 8),
        group_size: int = 64,
        solver: str = "greedy",
        method: str = "gptq",
        method_args: Mapping[str, object] | None = None,
    ) -> None:
        from polyquant.quantizers.protocol import make_quantizer

        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 1 <= float(budget) <= 32:
            raise RecipeError(f"budget: {budget!r} is invalid; use average bits per weight such as 3.5")
        if not bits or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8 for b in bits):
            raise RecipeError(f"bits: {bits!r} is invalid; use integer widths in 1..8 such as [2, 3, 4, 8]")
        if solver not in ("greedy", "exact"):
            raise RecipeError(f"solver: {solver!r} is invalid; use 'greedy' or 'exact'")
        if method == "mixed":
            raise RecipeError("method: 'mixed' cannot round its own layers; use gptq, rtn, mse, hqq or awq")
        self.budget, self.bits, self.solver = float(budget), tuple(sorted(set(bits))), solver
        self.candidates = [
            formats.get(f"int{b}").with_options(group_size=group_size, symmetric=False) for b in self.bits
        ]
        self.inner = make_quantizer(method, method_args)
        self.allocation: Allocation | None = None

    def prepare_model(self, model: nn.Module, calibration: Sequence[Any], plan: dict[str, FormatSpec]) -> list[str]:
        """Collect Hessians of the planned linears, allocate widths, and write the formats into ``plan``."""
        from polyquant.calibration import run_observing
        from polyquant.quantizers.stats import InputStats, input_rows

        modules = dict(model.named_modules())
        names = [n for n in plan if isinstance(modules.get(n), (nn.Linear, nn.Conv1d, nn.Conv2d))]
        stats = {n: InputStats() for n in names}

        def observer(name: str) -> Any:
            def observe(x: Tensor) -> None:
                rows = input_rows(modules[name], x)
                if rows is not None:
                    stats[name].add(rows)

            return observe

        run_observing(model, {n: observer(n) for n in names}, calibration)
        weights = {n: modules[n].weight.detach().flatten(1) for n in names}
        hessians = {n: d["hessian"] for n, s in stats.items() if (d := s.as_dict())}
        table = sensitivities(weights, self.candidates, hessians=hessians)
        self.allocation = allocate(table, self.budget, solver=self.solver)
        by_name = {spec.name: spec for spec in self.candidates}
        for name, fmt in self.allocation.choice.items():
            plan[name] = by_name[fmt]
        counts = {f: sum(1 for c in self.allocation.choice.values() if c == f) for f in by_name}
        shown = ", ".join(f"{n}×{f}" for f, n in counts.items() if n)
        return [
            f"mixed precision: {self.allocation.bits_per_weight:.3f} bits/weight for budget {self.budget:g} "
            f"({shown}; {self.solver}, Hessian-weighted)"
        ]

    def quantize_weight(self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None) -> Any:
        """Round ``weight`` to its allocated ``spec`` with the inner method."""
        return self.inner.quantize_weight(weight, spec, stats=stats)

    def __repr__(self) -> str:
        return f"MixedPrecisionQuantizer(budget={self.budget}, bits={self.bits}, inner={self.inner!r})"


def mixed_quantizer_info() -> QuantizerInfo:
    """The registry record of the ``mixed`` method (registered by :mod:`polyquant.builtins`)."""
    return QuantizerInfo(
        "mixed",
        MixedPrecisionQuantizer,
        "per-layer integer widths under a bits/weight budget, then an inner method "
        "(args: budget, bits, group_size, solver, method, method_args)",
        needs_calibration=True,
    )

"""AWQ: activation-aware weight quantization (Lin et al., 2023) — scale search and clip search.

**Scale search.** For a normalization layer and the linears reading its output (see
:mod:`polyquant.smoothing` for how the groups are found), with ``s_x = mean|x|`` per input channel over
the calibration inputs, try ``ratio ∈ {0, 0.05, …, 0.95}``: ``s = clamp(s_x^ratio, 1e-4)``,
``s /= √(max s · min s)``, and measure the output MSE of the linears when each weight is replaced by
``Q(W · diag s) · diag(s)⁻¹``. The best ``s`` is folded in: the norm's weight (and bias) are divided by
it and the linears' columns multiplied, so the model computes the same function and the salient input
channels (large ``mean|x|``) get finer quantization steps. polyquant measures the loss on the linears'
own outputs (llm-awq inspects the whole attention / MLP block output); with ``ratio = 0`` included the
search never does worse than no scaling on its own objective.

**Clip search** (the :class:`AWQQuantizer`'s weight step): per (row, group), shrink the range to
``amax · (1 − i/20)`` for ``i = 0 … 9`` and keep the candidate minimizing the output error on the
calibration inputs, ``(w − q)ᵀ H_gg (w − q)`` with the group's block of the input Hessian (which is what
the reference computes on 512 sampled tokens, on all of them).

Example:
    >>> import torch, polyquant.formats as formats
    >>> x = torch.randn(256, 128)
    >>> x[:, :4] *= 30
    >>> w = torch.randn(64, 128)
    >>> spec = formats.get("int4").with_options(group_size=128, symmetric=False)
    >>> result = search_scales(x, [w], spec)
    >>> result.ratio > 0
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from polyquant.errors import CalibrationError, RecipeError
from polyquant.formats.qparams import QParams
from polyquant.quantizers.mse import _merge
from polyquant.quantizers.rtn import check_weight

if TYPE_CHECKING:
    from polyquant.calibration import ModelInput
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["AWQQuantizer", "ScaleSearch", "search_scales"]

#: The ratio grid of the scale search (the reference's 20 points).
RATIOS = tuple(i / 20 for i in range(20))


@dataclass(frozen=True)
class ScaleSearch:
    """The outcome of :func:`search_scales` for one group.

    Attributes:
        scales: per input channel factors to fold in (``(K,)`` float32).
        ratio: the chosen exponent.
        losses: output MSE per ratio tried, in :data:`RATIOS` order.
    """

    scales: Tensor
    ratio: float
    losses: tuple[float, ...]


def search_scales(x: Tensor, weights: Sequence[Tensor], spec: FormatSpec, *, max_rows: int = 4096) -> ScaleSearch:
    """AWQ's grid search for the per-channel scales of linears sharing the input ``x`` (``(rows, K)``).

    Args:
        x: calibration inputs of the group (at most ``max_rows`` rows are used, evenly spaced).
        weights: the group's ``(out, K)`` weights.
        spec: the weight format (scales are searched for this format's rounding).
        max_rows: bound on the rows used for the loss.

    Raises:
        CalibrationError: ``x`` is empty or not finite.
    """
    x = x.detach().float().reshape(-1, x.shape[-1])
    if x.shape[0] == 0:
        raise CalibrationError("awq: the group received no calibration rows")
    if not bool(torch.isfinite(x).all()):
        raise CalibrationError("awq: the calibration inputs contain NaN or Inf")
    if x.shape[0] > max_rows:
        x = x[torch.linspace(0, x.shape[0] - 1, max_rows).long()]
    s_x = x.abs().mean(dim=0)
    ws = [w.detach().float() for w in weights]
    reference = [x @ w.T for w in ws]
    losses: list[float] = []
    best: tuple[float, float, Tensor] | None = None
    for ratio in RATIOS:
        s = s_x.pow(ratio).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = 0.0
        for w, ref in zip(ws, reference, strict=True):
            q = spec.fake_quantize(w * s) / s
            loss += float(((x @ q.T - ref) ** 2).mean())
        loss /= len(ws)
        losses.append(loss)
        if best is None or loss < best[0]:
            best = (loss, ratio, s)
    assert best is not None
    return ScaleSearch(scales=best[2], ratio=best[1], losses=tuple(losses))


def _linear_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(v_proj, o_proj)`` and ``(up_proj, down_proj)`` of a Llama-family model, where scaling is exact.

    A channel of v's output reaches o's input unchanged except for per-token mixing (attention), and a
    channel of up's output is only multiplied elementwise (by the activated gate) before down: so dividing
    the producer's output rows by ``s`` and multiplying the consumer's columns by ``s`` keeps the function.
    Grouped-query attention shares a v channel among several o columns, so v → o is skipped there (as
    llm-awq does). Models the structure function does not know get no pairs.
    """
    from polyquant.transforms.structure import llama_structure

    try:
        structure = llama_structure(model)
    except RecipeError:
        return []
    modules = dict(model.named_modules())
    pairs: list[tuple[str, str]] = []
    for block in structure.blocks:
        v, o = block.v_proj, block.o_proj
        if v is not None and getattr(modules[v], "out_features", -1) == getattr(modules[o], "in_features", -2):
            pairs.append((v, o))
        ups = [r for r in block.mlp_readers if r.endswith("up_proj")]
        if len(ups) == 1 and len(block.mlp_writers) == 1:
            pairs.append((ups[0], block.mlp_writers[0]))
    return pairs


class AWQQuantizer:
    """AWQ: scale search folded into the norms (:meth:`prepare_model`), then per-group clip search.

    Args:
        clip: run the clip search (``False``: round to nearest).
        steps: number of shrink steps ``i = 0 … steps − 1`` of ``1 − i/grid``.
        grid: the shrink denominator (20).
        max_rows: calibration rows per group used by the scale search.

    Example:
        >>> AWQQuantizer().needs_calibration
        True
    """

    name = "awq"
    needs_calibration = True

    def __init__(self, clip: bool = True, steps: int = 10, grid: int = 20, max_rows: int = 4096) -> None:
        if not isinstance(clip, bool):
            raise RecipeError(f"clip: {clip!r} is invalid; use true or false")
        for label, value in (("steps", steps), ("grid", grid)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecipeError(f"{label}: {value!r} is invalid; use a positive integer")
        if steps > grid:
            raise RecipeError(f"steps: {steps} must not exceed grid ({grid}): the range would shrink to zero")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise RecipeError(f"max_rows: {max_rows!r} is invalid; use a positive integer such as 4096")
        self.clip, self.steps, self.grid, self.max_rows = clip, steps, grid, max_rows

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """Quantize ``weight`` with the clipping ratio per group that minimizes the output error."""
        check_weight(weight, spec)
        w = weight.detach().float()
        hessian = None if stats is None else stats.get("hessian")
        if not self.clip or hessian is None or not bool(hessian.diagonal().any()):
            return spec.quantize(weight.detach())  # no data reached this layer: plain rounding
        g = spec.granularity
        if g.kind not in ("group", "channel") or spec.tensor_scale:
            return spec.quantize(weight.detach())
        gs = g.group_size if g.kind == "group" else w.shape[1]
        best = spec.compute_qparams(w)
        best_err = self._error(w, spec, best, hessian, gs)
        for i in range(1, self.steps):
            cand = spec.compute_qparams(w, clip=1.0 - i / self.grid)
            err = self._error(w, spec, cand, hessian, gs)
            better = err < best_err
            if bool(better.any()):
                best = _merge(best, cand, better)
                best_err = torch.where(better, err, best_err)
        return spec.quantize(weight.detach(), qparams=best)

    def prepare_model(
        self, model: nn.Module, calibration: Sequence[ModelInput], plan: Mapping[str, FormatSpec]
    ) -> list[str]:
        """Search and fold AWQ scales for every norm → linears group whose linears are all planned.

        Groups are found from the data flow (:func:`polyquant.smoothing.find_norm_groups`) on the first
        calibration input; each group's scales are searched for the format its linears are planned with.
        """
        from polyquant.smoothing import collect_inputs, find_norm_groups, fold_scales

        if not calibration:
            return []
        groups = [g for g in find_norm_groups(model, calibration[0]) if all(n in plan for n in g.linears)]
        groups = [g for g in groups if len({plan[n] for n in g.linears}) == 1]  # one format to search for
        if not groups:
            return ["awq: no normalization layer feeds planned linears directly; only the clip search ran"]
        pairs = [p for p in _linear_pairs(model) if p[0] in plan and p[1] in plan and plan[p[0]] == plan[p[1]]]
        readers = [g.linears[0] for g in groups] + [nxt for _, nxt in pairs]
        inputs = collect_inputs(model, readers, calibration, max_rows=self.max_rows)
        modules = dict(model.named_modules())
        ratios = []
        for group in groups:
            x = inputs.get(group.linears[0])
            if x is None:
                continue
            linears = [modules[n] for n in group.linears]
            weights = [lin.weight for lin in linears if isinstance(lin.weight, Tensor)]
            found = search_scales(x, weights, plan[group.linears[0]], max_rows=self.max_rows)
            fold_scales(modules[group.norm], linears, found.scales)
            ratios.append(found.ratio)
        shown = ", ".join(f"{r:.2f}" for r in ratios[:8]) + (" ..." if len(ratios) > 8 else "")
        notes = [f"awq: scaled {len(ratios)} norm → linear group(s) (ratios {shown})"]
        scaled_pairs = 0
        for prev_name, next_name in pairs:
            x = inputs.get(next_name)
            prev, nxt = modules[prev_name], modules[next_name]
            if x is None or not isinstance(prev, nn.Linear) or not isinstance(nxt, nn.Linear):
                continue
            found = search_scales(x, [nxt.weight], plan[next_name], max_rows=self.max_rows)
            with torch.no_grad():  # y = W_next (s ⊙ (W_prev x) / s): scale prev's output rows down, next's columns up
                prev.weight.div_(found.scales.to(prev.weight.dtype).unsqueeze(1))
                if prev.bias is not None:
                    prev.bias.div_(found.scales.to(prev.bias.dtype))
                nxt.weight.mul_(found.scales.to(nxt.weight.dtype))
            scaled_pairs += 1
        if scaled_pairs:
            notes.append(f"awq: scaled {scaled_pairs} linear → linear pair(s) (v → o, up → down)")
        return notes

    @staticmethod
    def _error(w: Tensor, spec: FormatSpec, qparams: QParams, hessian: Tensor, gs: int) -> Tensor:
        """Per scale group: ``dᵀ H_gg d`` with ``d`` the group's rounding error (shape of the scales)."""
        d = w - spec.fake_quantize(w, qparams=qparams)
        rows, k = d.shape
        blocks = d.reshape(rows, k // gs, gs)
        h = hessian.float().reshape(k // gs, gs, k // gs, gs).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        err = torch.einsum("rgi,gij,rgj->rg", blocks, h, blocks)
        return err.reshape(spec.granularity.scale_shape((rows, k)))

    def __repr__(self) -> str:
        return f"AWQQuantizer(clip={self.clip}, steps={self.steps}, grid={self.grid})"

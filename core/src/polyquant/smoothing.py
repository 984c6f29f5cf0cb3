"""SmoothQuant: migrate activation outliers into the weights through the norm that feeds them (Xiao et al., 2023).

For a normalization layer whose output feeds linears ``L_1 … L_m`` (LLaMA: ``input_layernorm`` → q, k, v;
``post_attention_layernorm`` → gate, up), per input channel ``j``:

``s_j = max|X_j|^α / (max_k max_i |W^(k)_ij|)^(1−α)``, clamped to ``≥ 1e-5``,

then ``norm.weight /= s`` (and its bias) and every ``W^(k)[:, j] *= s_j``. In exact arithmetic the model's
output does not change; the activations' outlier channels shrink by ``s`` and the weights absorb them, so
per-tensor or per-token int8 activations lose far less. ``α = 0.5`` is the paper's default (0.85 for
Llama-2/3, 0.8 for Mistral/Mixtral).

**Which norm feeds which linears** is found from the data flow, not from names: on one calibration input
every normalization layer's output tensor is remembered, and a linear whose input *is* that tensor (the
same object) belongs to its group. Linears that read a norm's output through any other operation are left
alone (folding would not be exact there). A domain adapter may declare the groups instead.

Normalization layers whose output is ``f(x) · weight (+ bias)`` with a per-channel ``weight``
(``LayerNorm``, ``RMSNorm`` and the transformers variants such as ``LlamaRMSNorm``) qualify. Because a
class could compute something else with a weight of that shape, :func:`smooth_model` checks on the sample
that the model's output is unchanged and restores the original weights otherwise.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 8))
    >>> groups = find_norm_groups(model, torch.randn(4, 16))
    >>> groups
    [NormGroup(norm='0', linears=('1',))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polyquant.calibration import ModelInput, run_model, run_observing
from polyquant.errors import CalibrationError, RecipeError
from polyquant.plugins.records import TransformInfo

__all__ = [
    "NormGroup",
    "SmoothQuantTransform",
    "builtin_transforms",
    "collect_input_absmax",
    "collect_inputs",
    "find_norm_groups",
    "fold_scales",
    "smooth_model",
    "smoothing_scales",
]

#: Lower bound of the smoothing factors (the reference implementation's clamp).
MIN_SCALE = 1e-5


@dataclass(frozen=True)
class NormGroup:
    """A normalization layer and the linears that read its output directly.

    Attributes:
        norm: qualified name of the normalization layer.
        linears: qualified names of the linears, in the order the model calls them.
    """

    norm: str
    linears: tuple[str, ...]


def _is_norm(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 1 or isinstance(module, nn.GroupNorm):
        return False
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    return type(module).__name__.endswith("Norm") and not list(module.children())


def find_norm_groups(model: nn.Module, sample: ModelInput) -> list[NormGroup]:
    """The normalization layers of ``model`` whose output tensors feed linears directly, found on ``sample``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
        >>> find_norm_groups(model, torch.randn(2, 8))
        [NormGroup(norm='1', linears=('2',))]
    """
    outputs: dict[int, str] = {}
    keep: list[Tensor] = []  # keeps the outputs alive, so their ids stay unique during the pass
    readers: dict[str, list[str]] = {}
    names = {module: name for name, module in model.named_modules()}
    handles = []

    def norm_hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            outputs.setdefault(id(output), names[module])
            keep.append(output)

    def linear_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor) and id(args[0]) in outputs:
            norm = outputs[id(args[0])]
            linears = readers.setdefault(norm, [])
            if names[module] not in linears:
                linears.append(names[module])

    for module in model.modules():
        if _is_norm(module):
            handles.append(module.register_forward_hook(norm_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(linear_hook))
    try:
        with torch.no_grad():
            run_model(model, sample)
    finally:
        for handle in handles:
            handle.remove()
    # A linear whose weight is tied to an embedding (a tied LM head) cannot absorb scales on its own.
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    modules = dict(model.named_modules())
    groups = []
    for norm, linears in readers.items():
        free = tuple(name for name in linears if id(modules[name].weight) not in tied)
        if len(free) == len(linears):
            groups.append(NormGroup(norm, free))
    return groups


def collect_input_absmax(model: nn.Module, linears: Iterable[str], inputs: Iterable[ModelInput]) -> dict[str, Tensor]:
    """Per input channel ``max |x|`` of each named linear over ``inputs`` (float32, shape ``(in_features,)``)."""
    absmax: dict[str, Tensor] = {}

    def observer(name: str) -> Callable[[Tensor], None]:
        def observe(x: Tensor) -> None:
            m = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
            absmax[name] = torch.maximum(absmax[name], m) if name in absmax else m

        return observe

    run_observing(model, {name: observer(name) for name in linears}, inputs)
    return absmax


def collect_inputs(
    model: nn.Module, linears: Iterable[str], inputs: Iterable[ModelInput], *, max_rows: int = 4096
) -> dict[str, Tensor]:
    """Up to ``max_rows`` input rows ``(rows, in_features)`` of each named linear over ``inputs`` (float32)."""
    rows: dict[str, list[Tensor]] = {}
    counts: dict[str, int] = {}

    def observer(name: str) -> Callable[[Tensor], None]:
        def observe(x: Tensor) -> None:
            have = counts.get(name, 0)
            if have < max_rows:
                part = x.reshape(-1, x.shape[-1])[: max_rows - have].float()
                rows.setdefault(name, []).append(part)
                counts[name] = have + part.shape[0]

        return observe

    run_observing(model, {name: observer(name) for name in linears}, inputs)
    return {name: torch.cat(parts) for name, parts in rows.items()}


def smoothing_scales(act_absmax: Tensor, weights: Sequence[Tensor], alpha: float) -> Tensor:
    """``s_j = max|X_j|^α / (max over the weights of max_i |W_ij|)^(1−α)``, clamped to ``≥ 1e-5``.

    Example:
        >>> smoothing_scales(torch.tensor([4.0, 1.0]), [torch.ones(3, 2)], alpha=0.5).tolist()
        [2.0, 1.0]
    """
    w_absmax = torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0)
    scales = act_absmax.float().clamp(min=MIN_SCALE).pow(alpha) / w_absmax.clamp(min=MIN_SCALE).pow(1 - alpha)
    return scales.clamp(min=MIN_SCALE)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise RecipeError(f"alpha: {alpha!r} is invalid; use a migration strength in [0, 1] such as 0.5")
    return float(alpha)


def smooth_model(
    model: nn.Module,
    groups: Sequence[NormGroup],
    act_absmax: Mapping[str, Tensor],
    *,
    alpha: float = 0.5,
    check_input: ModelInput | None = None,
    rtol: float = 1e-3,
) -> list[NormGroup]:
    """Fold SmoothQuant scales into each group's norm and linears, in place; return the groups smoothed.

    Args:
        model: the model (modified in place).
        groups: norm → linears groups (:func:`find_norm_groups` or an adapter's).
        act_absmax: per-channel ``max |x|`` of each group's input (keyed by any linear of the group, as
            :func:`collect_input_absmax` returns).
        alpha: migration strength in ``[0, 1]``.
        check_input: when given, the model's output on it must stay within ``rtol`` (relative norm);
            otherwise the original weights are restored and :class:`CalibrationError` is raised.
        rtol: tolerance of that check (float32 folding is exact to about 1e-6).

    Raises:
        RecipeError: ``alpha`` outside ``[0, 1]``, or a group whose shapes do not fit.
        CalibrationError: no statistics for a group, or the output check failed.
    """
    alpha = _check_alpha(alpha)
    modules = dict(model.named_modules())
    before = _output(model, check_input) if check_input is not None else None
    saved: list[tuple[Tensor, Tensor]] = []
    done: list[NormGroup] = []
    try:
        for group in groups:
            norm = modules[group.norm]
            linears = [modules[name] for name in group.linears]
            absmax = next((act_absmax[name] for name in group.linears if name in act_absmax), None)
            if absmax is None:
                raise CalibrationError(
                    f"smoothquant: no activation statistics for {group.norm} → {', '.join(group.linears)}; "
                    "the calibration data never reached these layers"
                )
            weight = norm.weight
            assert isinstance(weight, Tensor)
            if any(not isinstance(lin, nn.Linear) or lin.in_features != weight.numel() for lin in linears):
                raise RecipeError(
                    f"smoothquant: {group.norm} has {weight.numel()} channels but its readers "
                    f"{', '.join(group.linears)} are not all Linear layers with that many inputs"
                )
            scales = smoothing_scales(absmax, [lin.weight for lin in linears], alpha)
            saved += fold_scales(norm, linears, scales)
            done.append(group)
        if before is not None and check_input is not None:
            after = _output(model, check_input)
            error = float((after - before).norm() / before.norm().clamp(min=1e-12))
            if not error <= rtol:
                raise CalibrationError(
                    f"smoothquant: folding changed the model's output by {error:.2e} (relative), so some "
                    "normalization layer is not of the form f(x)·weight; declare the groups in the model adapter"
                )
    except Exception:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)
        raise
    return done


def fold_scales(norm: nn.Module, linears: Sequence[nn.Module], scales: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Divide ``norm``'s weight (and bias) by ``scales`` and multiply the linears' input columns by them.

    Returns ``(parameter, original value)`` pairs, so a caller can undo the fold.

    Example:
        >>> norm, lin = torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)
        >>> x = torch.randn(3, 4)
        >>> y = lin(norm(x))
        >>> _ = fold_scales(norm, [lin], torch.tensor([1.0, 2.0, 4.0, 0.5]))
        >>> torch.allclose(lin(norm(x)), y, atol=1e-6)
        True
    """
    weight = norm.weight
    assert isinstance(weight, Tensor)
    bias = getattr(norm, "bias", None)
    params = [weight, *([bias] if isinstance(bias, Tensor) else [])]
    params += [lin.weight for lin in linears if isinstance(lin.weight, Tensor)]
    saved = [(p, p.detach().clone()) for p in params]
    with torch.no_grad():
        weight.div_(scales.to(weight.dtype))
        if isinstance(bias, Tensor):
            bias.div_(scales.to(bias.dtype))
        for lin in linears:
            w = lin.weight
            assert isinstance(w, Tensor)
            w.mul_(scales.to(w.dtype))
    return saved


def _output(model: nn.Module, sample: ModelInput) -> Tensor:
    with torch.no_grad():
        out = run_model(model, sample)
    for attr in ("logits", "last_hidden_state", "sample"):
        value = getattr(out, attr, None)
        if isinstance(value, Tensor):
            return value.float()
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"cannot compare model outputs of type {type(out).__name__}")
    return out.float()


class SmoothQuantTransform:
    """The ``smoothquant`` recipe transform: fold SmoothQuant scales into every norm → planned linears group.

    Args:
        alpha: migration strength in ``[0, 1]`` (0.5; 0.85 for Llama-2/3, 0.8 for Mistral/Mixtral).

    Example:
        >>> SmoothQuantTransform(alpha=0.85).alpha
        0.85
    """

    name = "smoothquant"

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = _check_alpha(alpha)

    def prepare_model(self, model: nn.Module, calibration: Sequence[ModelInput], plan: Mapping[str, Any]) -> list[str]:
        """Smooth the groups whose linears are all planned; returns a note for the report."""
        if not calibration:
            raise CalibrationError("smoothquant needs calibration data to measure activation ranges")
        groups = [g for g in find_norm_groups(model, calibration[0]) if all(n in plan for n in g.linears)]
        if not groups:
            return ["smoothquant: no normalization layer feeds planned linears directly; nothing was smoothed"]
        absmax = collect_input_absmax(model, [g.linears[0] for g in groups], calibration)
        done = smooth_model(model, groups, absmax, alpha=self.alpha, check_input=calibration[0])
        return [f"smoothquant: smoothed {len(done)} norm → linear group(s) with alpha {self.alpha:g}"]

    def __repr__(self) -> str:
        return f"SmoothQuantTransform(alpha={self.alpha})"


def builtin_transforms() -> list[TransformInfo]:
    """The core's transforms, registered by :mod:`polyquant.builtins`."""
    return [
        TransformInfo(
            "smoothquant",
            SmoothQuantTransform,
            "migrate activation outliers into the weights through the norms (args: alpha)",
            needs_calibration=True,
        )
    ]

"""``polyquant.quantize``: quantize any ``nn.Module`` with a recipe, and report what was done.

Steps:

1. resolve the recipe (preset name, file, mapping or :class:`~polyquant.recipes.Recipe`) and the model
   adapter (explicit, or the highest-priority one whose ``matches`` is true);
2. plan: every module of a type in ``recipe.modules`` is matched against include/exclude/overrides and
   the adapter's default excludes (:mod:`polyquant.recipes.matching`);
3. calibrate (when ``calibration`` is given): forward hooks collect static activation scales (observers),
   statistics for quantizers that need them, and a small sample of each module's inputs for the report. For
   quantizers that need statistics, the adapter's blocks are calibrated one at a time on the outputs of the
   already quantized blocks (:mod:`polyquant.sequential`); otherwise one pass over the data. NaN or Inf in a
   module's input raises :class:`~polyquant.errors.CalibrationError` naming the module and the call;
4. quantize each planned weight with the recipe's quantizer and swap in :mod:`polyquant.nn` modules;
5. report per module: format, exact bits/weight, weight and output errors (output error of the module
   alone on captured calibration inputs, or on a random probe input without calibration), kernel.

A module that cannot be quantized (e.g. a reduction axis not divisible by the group size) is kept in
high precision with its reason in ``report.skipped`` and one :class:`QuantizationWarning` for the run;
``strict=True`` raises instead.

Example:
    >>> import torch, polyquant
    >>> model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    >>> model, report = polyquant.quantize(model, "w4a16-g128", progress=False)
    >>> type(model[0]).__name__, report.summary.modules_quantized
    ('QLinear', 2)
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polyquant import distributed
from polyquant.activations import ActivationSpec
from polyquant.adapters import select_adapter
from polyquant.calibration import check_finite
from polyquant.errors import CalibrationError, FormatError, KernelError, PolyquantError, RecipeError
from polyquant.formats.spec import FormatSpec
from polyquant.nn import QUANTIZED_TYPES, QuantizedModule, quantize_module
from polyquant.plugins.records import ModelAdapter
from polyquant.quantizers.gptq import QuantizationFallbackWarning
from polyquant.quantizers.observers import ActivationObserver, make_observer
from polyquant.quantizers.protocol import ModelPreparer, Quantizer, make_quantizer
from polyquant.quantizers.stats import InputStats, input_rows
from polyquant.recipes import Recipe, WeightConfig, decide, resolve
from polyquant.report import ModuleReport, QuantizationReport, ReportSummary, SkippedModule

__all__ = ["QuantizationReport", "QuantizationWarning", "quantize"]

#: Rows (Linear/Embedding) or samples (conv) of each module's inputs kept for the report's output error.
CAPTURE_ROWS = 128
CAPTURE_SAMPLES = 2
PROBE_ROWS = 16


class QuantizationWarning(UserWarning):
    """Some modules were kept in high precision because they could not be quantized."""


@dataclass
class _Target:
    """One module the recipe asks to quantize (mutable bookkeeping of a run)."""

    name: str
    module: nn.Module
    act: ActivationSpec | None
    weights: WeightConfig
    observer: ActivationObserver | None = None
    stats: InputStats | None = None
    inputs: list[Tensor] = field(default_factory=list)
    captured: int = 0
    calls: int = 0  # forward calls observed during calibration (named in NaN/Inf errors)
    spec: FormatSpec | None = None  # the format chosen by a model preparer, overriding `weights`


# ------------------------------------------------------------------------------------------------ api
def quantize(
    model: nn.Module,
    recipe: str | Path | Mapping[str, Any] | Recipe,
    calibration: Iterable[Any] | Tensor | Mapping[str, Any] | None = None,
    *,
    adapter: str | ModelAdapter | None = None,
    inplace: bool = True,
    progress: bool = True,
    strict: bool = False,
    sequential: bool | None = None,
) -> tuple[nn.Module, QuantizationReport]:
    """Quantize ``model`` according to ``recipe``.

    Args:
        model: any ``nn.Module`` with materialized weights.
        recipe: a preset name (``"w4a16-g128"``), a recipe file, a mapping, or a :class:`Recipe`.
        calibration: model inputs (a tensor of samples, a dict of tensors, or an iterable of tensors /
            tuples / dicts of keyword arguments; see :func:`polyquant.calibration.iter_batches`).
            Required for static activation scales and for quantizers that need calibration.
        adapter: an adapter name, an adapter instance, or ``None`` to pick the best match.
        inplace: modify ``model`` (``False`` quantizes a deep copy and leaves ``model`` untouched).
        progress: show a progress bar.
        strict: raise instead of skipping modules that cannot be quantized.
        sequential: calibrate block by block on the quantized prefix's outputs (:mod:`polyquant.sequential`).
            ``None`` (default): when the quantizer needs calibration statistics and the adapter's blocks form
            a chain; ``False``: one pass over the unquantized model.

    Returns:
        ``(quantized model, report)``.

    Raises:
        RecipeError: invalid recipe, unknown adapter, or transforms no plugin provides.
        CalibrationError: calibration data missing where needed, or NaN/Inf activations.

    Example:
        >>> model, report = quantize(torch.nn.Sequential(torch.nn.Linear(64, 64)), "w8a16", progress=False)
        >>> report.rows[0].format
        'int8'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize() needs an nn.Module, got {type(model).__name__}")
    recipe = resolve(recipe)
    transforms = _make_transforms(recipe)
    chosen = select_adapter(model, adapter)
    quantizer = make_quantizer(recipe.method, recipe.method_args)
    if not inplace:
        model = copy.deepcopy(model)
    total_params = sum(p.numel() for p in model.parameters())
    original_bytes = _model_bytes(model)
    if calibration is not None:
        from polyquant.calibration import iter_batches

        calibration = list(iter_batches(calibration))  # read several times below: materialize once
    prepared: list[str] = []  # what model-level preparation (rotation, smoothing, AWQ scaling, ...) did
    early = [t for t in transforms if getattr(t, "before_planning", False)]  # they change the module tree
    transforms = [t for t in transforms if not getattr(t, "before_planning", False)]
    with _EvalMode(model):
        for transform in early:
            prepared += list(transform.prepare_model(model, calibration or [], {}))

    targets, skipped = _plan(model, recipe, chosen)
    _check_calibration_needs(targets, quantizer, recipe, calibration)

    rows: dict[int, ModuleReport] = {}  # by position in `targets`, so the report keeps the model's order
    failures: list[SkippedModule] = []
    fallbacks: list[str] = []  # quantizers that fell back to a simpler method for a module, and why
    aliases = _aliases(model)
    position = {id(t): i for i, t in enumerate(targets)}
    solved_sharded = 0  # modules solved split across ranks (torch.distributed; see polyquant.distributed)

    def process(batch: list[_Target], bar: bool) -> None:
        nonlocal model, solved_sharded
        solved: list[Any] = [None] * len(batch)
        if distributed.active():  # solve on all ranks in parallel, then rebuild every module everywhere
            solved = distributed.solve_sharded(batch, lambda t: _solve_remote(t, quantizer))
            solved_sharded += len(batch)
        for target, remote in zip(_progress(batch, progress and bar, "quantizing"), solved, strict=True):
            try:
                if remote is not None and remote[0] == "error":
                    raise PolyquantError(remote[1])
                use = quantizer if remote is None else _received(target, remote[1], remote[2])
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", QuantizationFallbackWarning)
                    qmodule = _quantize_target(target, use)
                messages = [str(w.message) for w in caught if issubclass(w.category, QuantizationFallbackWarning)]
                fallbacks.extend(
                    f"{target.name or '<model>'}: {m}" for m in (messages if remote is None else remote[3])
                )
                for warning in caught:
                    if not issubclass(warning.category, QuantizationFallbackWarning):
                        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            except PolyquantError as exc:
                if strict:
                    raise _in_module(exc, target.name) from exc
                reason = f"could not be quantized: {exc}"
                failures.append(SkippedModule(target.name, type(target.module).__name__, reason))
                continue
            rows[position[id(target)]] = _row(target, qmodule)
            if target.name == "":
                model = qmodule
            for parent, attr in aliases.get(id(target.module), ()):
                setattr(parent, attr, qmodule)
            target.module, target.inputs = qmodule, []  # release the original weight as we go

    remaining = targets
    if calibration is not None:
        preparers = [*transforms, *([quantizer] if isinstance(quantizer, ModelPreparer) else [])]
        if preparers and targets:
            plan = {t.name: t.weights.to_spec() for t in targets}
            with _EvalMode(model):
                for preparer in preparers:
                    prepared += list(preparer.prepare_model(model, calibration, plan))
            for target in targets:  # a preparer may have changed formats (mixed precision)
                target.spec = plan.get(target.name)
        _prepare(targets, need_stats=quantizer.needs_calibration)
        use_blocks = quantizer.needs_calibration if sequential is None else sequential
        blocks = _chained_blocks(model, chosen, calibration) if use_blocks and targets else None
        if blocks:
            remaining = _calibrate_blocks(model, blocks, targets, calibration, process, progress=progress)
        if remaining:
            _calibrate(model, remaining, calibration, progress=progress)
    process(remaining, bar=True)
    report_rows = [rows[i] for i in sorted(rows)]
    if fallbacks:
        warnings.warn(
            f"polyquant.quantize: {len(fallbacks)} module(s) used a fallback method: {fallbacks[0]}"
            + (f" (and {len(fallbacks) - 1} more; see report.summary.notes)" if len(fallbacks) > 1 else ""),
            QuantizationFallbackWarning,
            stacklevel=2,
        )
    if failures:
        listed = "; ".join(f"{f.name}: {f.reason}" for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        warnings.warn(
            f"polyquant.quantize: {len(failures)} module(s) kept in high precision: {listed}{more}. "
            "See report.skipped; pass strict=True to raise instead.",
            QuantizationWarning,
            stacklevel=2,
        )
    return model, _report(
        model,
        recipe,
        chosen,
        quantizer,
        report_rows,
        skipped + failures,
        total_params,
        original_bytes,
        calibration,
        prepared
        + fallbacks
        + (
            [f"distributed: {solved_sharded} module(s) solved round-robin on {distributed.world_size()} ranks"]
            if distributed.active()
            else []
        ),
    )


def _in_module(exc: PolyquantError, name: str) -> PolyquantError:
    """``exc`` with the module name in front of its message (for the one-message error classes)."""
    if isinstance(exc, (FormatError, CalibrationError, RecipeError, KernelError)):
        return type(exc)(f"{name}: {exc}")
    return exc


# ------------------------------------------------------------------------------------------------ planning
def _module_type(module: nn.Module) -> str | None:
    """The recipe module type of ``module`` (``Linear``, ``Conv1d``, ...), or ``None``."""
    for cls, type_name in QUANTIZED_TYPES.items():
        if isinstance(module, cls):
            return type_name
    return None


def _plan(model: nn.Module, recipe: Recipe, adapter: ModelAdapter) -> tuple[list[_Target], list[SkippedModule]]:
    exclude = list(adapter.default_exclude(model))
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    targets: list[_Target] = []
    skipped: list[SkippedModule] = []
    for name, module in model.named_modules():
        type_name = _module_type(module)
        if type_name is None or type_name not in recipe.modules:
            continue
        if isinstance(parents.get(id(module)), nn.MultiheadAttention):
            skipped.append(SkippedModule(name, type_name, "nn.MultiheadAttention reads this weight directly"))
            continue
        decision = decide(recipe, name, adapter_exclude=exclude, adapter_name=adapter.name)
        if not decision.quantize:
            skipped.append(SkippedModule(name, type_name, decision.reason))
            continue
        assert decision.weights is not None
        act = None if type_name == "Embedding" else decision.activations
        targets.append(_Target(name, module, act, decision.weights))
    return targets, skipped


def _make_transforms(recipe: Recipe) -> list[ModelPreparer]:
    """Build the recipe's transforms from the registry (names were validated by the recipe)."""
    from polyquant.plugins import get_plugin_manager

    known = get_plugin_manager().get_transforms()
    built: list[ModelPreparer] = []
    for name in recipe.transforms:
        info = known[name]
        args = dict(recipe.transform_args.get(name, {}))
        try:
            transform = info.factory(**args)
        except TypeError as exc:
            raise RecipeError(f"transforms: {name} does not accept the arguments {sorted(args)}: {exc}") from None
        built.append(transform)
    return built


def _check_calibration_needs(targets: list[_Target], quantizer: Quantizer, recipe: Recipe, calibration: Any) -> None:
    if calibration is not None:
        return
    static = [t.name for t in targets if t.act is not None and not t.act.dynamic]
    if static:
        shown = ", ".join(static[:3]) + (f" and {len(static) - 3} more" if len(static) > 3 else "")
        raise CalibrationError(
            f"static activation scales were requested for {len(static)} module(s) ({shown}) but no calibration data "
            "was given; pass calibration=<inputs> or use dynamic activations (activations.dynamic: true)"
        )
    if quantizer.needs_calibration and targets:
        raise CalibrationError(
            f"method {quantizer.name!r} needs calibration data; pass calibration=<inputs> (CLI: --calib SOURCE:ARG) "
            "or use method 'rtn' or 'mse'"
        )
    from polyquant.plugins import get_plugin_manager

    known = get_plugin_manager().get_transforms()
    needing = [name for name in recipe.transforms if known[name].needs_calibration]
    if needing and targets:
        raise CalibrationError(
            f"transforms {', '.join(needing)} need calibration data; "
            "pass calibration=<inputs> (CLI: --calib SOURCE:ARG)"
        )


# ------------------------------------------------------------------------------------------------ calibration
def _prepare(targets: list[_Target], *, need_stats: bool) -> None:
    """Give each target its activation observer (static activations) and statistics collector."""
    for target in targets:
        if target.act is not None and not target.act.dynamic:
            target.observer = make_observer(target.act, target.name)
        if need_stats:
            target.stats = InputStats()


def _hook(target: _Target) -> Any:
    """The forward hook feeding a target's observer, statistics and report samples."""

    def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(x, Tensor):
            return
        check_finite(x, f"input of module {target.name or '<model>'!r} (calibration call {target.calls})")
        target.calls += 1
        if target.observer is not None:
            target.observer.observe(x)
        if target.stats is not None:
            rows = input_rows(module, x)
            if rows is not None:
                target.stats.add(rows)
        _capture(target, x)

    return fn


def _model_device(model: nn.Module) -> torch.device | None:
    return next((p.device for p in model.parameters() if p.device.type != "meta"), None)


def _chained_blocks(model: nn.Module, adapter: ModelAdapter, calibration: Any) -> list[tuple[str, nn.Module]] | None:
    """The adapter's blocks when they form a chain on the first calibration input, else ``None``."""
    from polyquant.calibration import iter_batches, move_to
    from polyquant.sequential import is_chained

    blocks = adapter.blocks(model)
    if len(blocks) < 2 or any(name == "" for name, _ in blocks):
        return None
    first = next(iter(iter_batches(calibration)), None)
    if first is None:
        return None
    device = _model_device(model)
    with _EvalMode(model):
        chained = is_chained(model, blocks, first if device is None else move_to(first, device))
    return blocks if chained else None


def _calibrate_blocks(
    model: nn.Module,
    blocks: list[tuple[str, nn.Module]],
    targets: list[_Target],
    calibration: Any,
    process: Any,
    *,
    progress: bool,
) -> list[_Target]:
    """Calibrate and quantize the targets inside ``blocks`` block by block; return the targets outside them."""
    from polyquant.calibration import iter_batches
    from polyquant.sequential import run_sequential

    inside: dict[str, list[_Target]] = {name: [] for name, _ in blocks}
    outside: list[_Target] = []
    for target in targets:
        owner = next((b for b in inside if target.name == b or target.name.startswith(b + ".")), None)
        (inside[owner] if owner is not None else outside).append(target)

    def observe(name: str, block: nn.Module) -> Any:
        handles = [t.module.register_forward_hook(_hook(t), with_kwargs=True) for t in inside[name]]

        def remove() -> None:
            for handle in handles:
                handle.remove()

        return remove

    with _EvalMode(model):
        run_sequential(
            model,
            blocks,
            iter_batches(calibration),
            observe=observe,
            quantize=lambda name: process(inside[name], False),
            device=_model_device(model),
            progress=(lambda items, desc: _progress(items, True, desc)) if progress else None,
        )
    return outside


class _EvalMode:
    """Put every module in eval mode (no dropout while calibrating) and restore the modes afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: dict[nn.Module, bool] = {}

    def __enter__(self) -> None:
        self.modes = {module: module.training for module in self.model.modules()}
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes.items():
            module.training = training


def _calibrate(model: nn.Module, targets: list[_Target], calibration: Any, *, progress: bool) -> None:
    """One pass over the data: observers, quantizer statistics and the report's input samples."""
    from polyquant.calibration import iter_batches, move_to, run_model

    handles = [t.module.register_forward_hook(_hook(t), with_kwargs=True) for t in targets]
    device = _model_device(model)
    try:
        with _EvalMode(model), torch.no_grad():
            for inputs in _progress(iter_batches(calibration), progress, "calibrating"):
                run_model(model, inputs if device is None else move_to(inputs, device))
    finally:
        for handle in handles:
            handle.remove()


def _capture(target: _Target, x: Tensor) -> None:
    """Keep a few of the module's inputs for the report's output error."""
    module = target.module
    if isinstance(module, nn.Embedding):
        if target.captured < CAPTURE_ROWS:
            flat = x.detach().reshape(-1)[: CAPTURE_ROWS - target.captured]
            target.inputs.append(flat.clone())
            target.captured += flat.numel()
    elif isinstance(module, nn.Linear):
        if target.captured < CAPTURE_ROWS:
            flat = x.detach().reshape(-1, x.shape[-1])[: CAPTURE_ROWS - target.captured]
            target.inputs.append(flat.clone())
            target.captured += flat.shape[0]
    elif target.captured < CAPTURE_SAMPLES:
        batched = x.detach() if x.dim() == _dense_weight(module).dim() else x.detach().unsqueeze(0)
        take = batched[: CAPTURE_SAMPLES - target.captured]
        target.inputs.append(take.clone())
        target.captured += take.shape[0]


# ------------------------------------------------------------------------------------------------ quantizing
def _quantize_target(target: _Target, quantizer: Quantizer) -> QuantizedModule:
    act_scale = None
    if target.observer is not None:
        assert target.act is not None
        act_scale = target.observer.scale(target.act.format)
    stats = target.stats.as_dict() if target.stats is not None else None
    spec = target.spec if target.spec is not None else target.weights.to_spec()
    return quantize_module(target.module, spec, quantizer=quantizer, act=target.act, act_scale=act_scale, stats=stats)


def _received(target: _Target, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Quantizer:
    """The quantizer handing back the weight another rank solved for ``target``."""
    from polyquant.qtensor import QTensor
    from polyquant.quantizers.stored import StoredWeight

    return StoredWeight(QTensor.from_tensors(tensors, metadata), f"distributed: module {target.name!r}")


def _solve_remote(target: _Target, quantizer: Quantizer) -> tuple[Any, ...]:
    """Solve one target for :func:`polyquant.distributed.solve_sharded`: packed tensors, metadata, fallbacks."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", QuantizationFallbackWarning)
            qmodule = _quantize_target(target, quantizer)
    except PolyquantError as exc:
        return ("error", str(exc))
    qweight = qmodule.weight
    messages = [str(w.message) for w in caught if issubclass(w.category, QuantizationFallbackWarning)]
    return ("ok", qweight.tensors(), qweight.metadata(), messages)


def _aliases(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """Every (parent, attribute) holding each submodule, so shared modules are swapped everywhere."""
    found: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for parent in model.modules():
        for attr, child in parent._modules.items():
            if child is not None:
                found[id(child)].append((parent, attr))
    return found


# ------------------------------------------------------------------------------------------------ report
def _probe_input(module: nn.Module) -> Tensor:
    """A small deterministic random input for a module (used without calibration data)."""
    gen = torch.Generator().manual_seed(0)
    weight = _dense_weight(module)
    if isinstance(module, nn.Embedding):
        return torch.randint(0, module.num_embeddings, (PROBE_ROWS,), generator=gen).to(weight.device)
    if isinstance(module, nn.Linear):
        shape: tuple[int, ...] = (PROBE_ROWS, module.in_features)
    else:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        span = [(k - 1) * d + 1 for k, d in zip(module.kernel_size, module.dilation, strict=True)]
        shape = (CAPTURE_SAMPLES, module.in_channels, *(s + 15 for s in span))
    return torch.randn(shape, generator=gen).to(device=weight.device, dtype=weight.dtype)


def _dense_weight(module: nn.Module) -> Tensor:
    weight = module.weight
    assert isinstance(weight, Tensor), f"{type(module).__name__} has no dense weight"
    return weight


def _relative(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    denom = float(torch.linalg.vector_norm(a))
    num = float(torch.linalg.vector_norm(a - b))
    if denom == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / denom


def _kernel_batch(x: Tensor, module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return int(x.reshape(-1, x.shape[-1]).shape[0])
    if isinstance(module, nn.Embedding):
        return int(x.numel())
    return int(x.shape[0])


def _row(target: _Target, qmodule: QuantizedModule) -> ModuleReport:
    original = target.module
    weight = _dense_weight(original).detach()
    qweight = qmodule.weight
    dequant = qmodule.dequantized_weight()
    if target.inputs:
        x = torch.cat(target.inputs)
        source = "calibration"
    else:
        x = _probe_input(original)
        source = "random probe"
    with torch.no_grad():
        output_error = _relative(original(x), qmodule(x))
    try:
        kernel = qmodule.selected_kernel(batch=_kernel_batch(x, original), dtype=weight.dtype).name
    except (KernelError, PolyquantError) as exc:
        kernel = f"none: {exc}"
    spec = qweight.spec
    return ModuleReport(
        name=target.name,
        type=type(original).__name__,
        format=spec.name,
        granularity=str(spec.granularity),
        activations="none" if qmodule.act is None else qmodule.act.name,
        params=weight.numel(),
        original_bytes=weight.numel() * weight.element_size(),
        quantized_bytes=int(qweight.nbytes),
        bits_per_weight=float(qweight.bits_per_weight),
        weight_rel_error=_relative(weight, dequant),
        output_rel_error=output_error,
        output_error_source=source,
        kernel=kernel,
    )


def _model_bytes(model: nn.Module) -> int:
    from polyquant.evaluation import model_size

    return int(model_size(model)["total_bytes"])


def _report(
    model: nn.Module,
    recipe: Recipe,
    adapter: ModelAdapter,
    quantizer: Quantizer,
    rows: list[ModuleReport],
    skipped: list[SkippedModule],
    total_params: int,
    original_bytes: int,
    calibration: Any,
    fallbacks: list[str],
) -> QuantizationReport:
    quantized_bytes = _model_bytes(model)
    params_q = sum(r.params for r in rows)
    weight_bytes = sum(r.quantized_bytes for r in rows)
    notes: list[str] = list(fallbacks)
    if recipe.kv_cache is not None:
        notes.append(
            f"kv_cache ({recipe.kv_cache.format}) is recorded in the recipe; quantize() does not change attention, "
            "runtime integrations apply it"
        )
    source = "calibration" if calibration is not None else "random probe"
    if calibration is not None and any(r.output_error_source != "calibration" for r in rows):
        source = "calibration (random probe for modules not reached by the data)"
    summary = ReportSummary(
        recipe=recipe.name or "<custom>",
        adapter=adapter.name,
        method=quantizer.name,
        modules_quantized=len(rows),
        modules_skipped=len(skipped),
        params_quantized=params_q,
        total_params=total_params,
        original_bytes=original_bytes,
        quantized_bytes=quantized_bytes,
        compression=original_bytes / quantized_bytes if quantized_bytes else math.inf,
        avg_bits_per_weight=8.0 * weight_bytes / params_q if params_q else 0.0,
        output_error_source=source,
        notes=tuple(notes),
    )
    return QuantizationReport(rows=tuple(rows), skipped=tuple(skipped), summary=summary, recipe=recipe.to_dict())


def _progress(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    unit = "module" if desc == "quantizing" else "batch"
    bar: Iterable[Any] = tqdm(items, desc=f"polyquant: {desc}", unit=unit, leave=False)
    return bar

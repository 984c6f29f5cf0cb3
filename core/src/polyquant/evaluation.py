"""Evaluators: how close a quantized model stays to its reference, and how small it got.

Two evaluations ship with the core, usable directly or through the plugin registry (domain plugins add
perplexity, FID, accuracy, ... as :class:`~polyquant.plugins.EvaluatorInfo` records):

* :func:`output_error` runs a reference model and a quantized model on the same inputs and compares their
  primary outputs: relative L2 error, max absolute error and cosine similarity.
* :func:`model_size` counts the bytes a model holds, separating quantized weights (exact, scales included)
  from every other tensor, and the average bits per quantized weight.

Example:
    >>> import copy, torch
    >>> ref = torch.nn.Linear(8, 4)
    >>> model_size(ref)["total_bytes"]
    144
    >>> output_error(ref, copy.deepcopy(ref), torch.randn(4, 8))["relative_l2"]
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from polyquant.calibration import ModelInput, iter_batches, move_to, run_model
from polyquant.errors import PolyquantError
from polyquant.plugins.records import EvaluatorInfo

if TYPE_CHECKING:
    from polyquant.qtensor import QTensor

__all__ = [
    "builtin_evaluators",
    "evaluate",
    "model_size",
    "output_error",
    "primary_output",
    "quantized_weights",
    "storage_key",
    "tensor_key",
]

#: Output fields tried first, in order, when a model returns a mapping (transformers/diffusers outputs).
PRIMARY_KEYS = ("logits", "last_hidden_state", "sample", "pred", "prediction_logits", "out")


# --------------------------------------------------------------------------------------------- outputs
def primary_output(output: Any) -> torch.Tensor:
    """The tensor to compare from whatever a model returns.

    A tensor is returned as is; a mapping (``transformers``' ``ModelOutput``, ``diffusers``' outputs) gives its
    first present key among :data:`PRIMARY_KEYS`, else its first tensor value; a tuple or list gives its first
    tensor element.

    Raises:
        PolyquantError: when no tensor can be found; pass ``select=`` to :func:`output_error` instead.

    Example:
        >>> primary_output({"loss": torch.tensor(1.0), "logits": torch.zeros(2)})
        tensor([0., 0.])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in PRIMARY_KEYS:
            if isinstance(output.get(key), torch.Tensor):
                return output[key]  # type: ignore[no-any-return]
        values: list[Any] = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        values = []
    for value in values:
        if isinstance(value, (torch.Tensor, Mapping, tuple, list)):
            try:
                return primary_output(value)
            except PolyquantError:
                continue
    raise PolyquantError(
        f"cannot find an output tensor in a {type(output).__name__}; pass select=lambda out: <tensor> to choose one"
    )


def _device_of(model: torch.nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return None


@contextmanager
def _eval_mode(*models: torch.nn.Module) -> Iterator[None]:
    """Put models in eval mode (no dropout) and restore each submodule's training flag afterwards."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


def output_error(
    ref_model: torch.nn.Module,
    q_model: torch.nn.Module,
    inputs: Any,
    *,
    num_samples: int | None = None,
    select: Callable[[Any], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Compare a quantized model's outputs to a reference model's on the same inputs.

    Both models run in eval mode without gradients (their training flags are restored afterwards); inputs
    are moved to each model's device. Statistics pool every element of every sample, in float64.

    Args:
        ref_model: the reference (usually the unquantized model).
        q_model: the model under test.
        inputs: anything :func:`polyquant.calibration.iter_batches` accepts.
        num_samples: compare at most this many inputs.
        select: picks the tensor to compare from a model's output (default :func:`primary_output`).

    Returns:
        ``relative_l2`` (‖q - r‖ / ‖r‖), ``max_abs_error``, ``cosine_similarity`` (of the flattened outputs),
        ``mse``, ``num_samples`` and ``nonfinite`` (count of NaN/Inf values in the quantized outputs; when
        non-zero the other statistics are NaN or Inf).

    Raises:
        PolyquantError: when the two models' outputs differ in shape.

    Example:
        >>> ref = torch.nn.Linear(16, 4)
        >>> noisy = torch.nn.Linear(16, 4)
        >>> sorted(output_error(ref, noisy, torch.randn(8, 16)))
        ['cosine_similarity', 'max_abs_error', 'mse', 'nonfinite', 'num_samples', 'relative_l2']
    """
    pick = select or primary_output
    ref_device, q_device = _device_of(ref_model), _device_of(q_model)
    sq_err = sq_ref = sq_q = dot = 0.0
    max_abs = 0.0
    count = samples = nonfinite = 0
    with _eval_mode(ref_model, q_model), torch.inference_mode():
        for index, sample in enumerate(iter_batches(inputs, num_samples=num_samples)):
            ref = pick(run_model(ref_model, _on(sample, ref_device))).detach().to("cpu", torch.float64)
            out = pick(run_model(q_model, _on(sample, q_device))).detach().to("cpu", torch.float64)
            if ref.shape != out.shape:
                raise PolyquantError(
                    f"sample {index}: the reference output has shape {tuple(ref.shape)} but the quantized model's has "
                    f"{tuple(out.shape)}; compare models of the same architecture, or pass select= to pick outputs"
                )
            diff = out - ref
            sq_err += float(diff.square().sum())
            sq_ref += float(ref.square().sum())
            sq_q += float(out.square().sum())
            dot += float((out * ref).sum())
            if diff.numel():
                max_abs = max(max_abs, float(diff.abs().max()))
            nonfinite += int((~torch.isfinite(out)).sum())
            count += ref.numel()
            samples += 1
    return {
        "relative_l2": _ratio(math.sqrt(sq_err), math.sqrt(sq_ref)),
        "max_abs_error": max_abs,
        "cosine_similarity": _cosine(dot, sq_ref, sq_q),
        "mse": sq_err / count if count else 0.0,
        "num_samples": float(samples),
        "nonfinite": float(nonfinite),
    }


def _on(sample: ModelInput, device: torch.device | None) -> ModelInput:
    return sample if device is None else move_to(sample, device)


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _cosine(dot: float, sq_a: float, sq_b: float) -> float:
    if sq_a == 0.0 or sq_b == 0.0:
        return 1.0 if sq_a == sq_b else 0.0
    return dot / math.sqrt(sq_a * sq_b)


# --------------------------------------------------------------------------------------------- size
def quantized_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, QTensor]]:
    """Every module of ``model`` whose ``weight`` is a :class:`~polyquant.qtensor.QTensor`, in module order.

    Example:
        >>> quantized_weights(torch.nn.Linear(4, 4))
        []
    """
    from polyquant.qtensor import QTensor

    found = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, QTensor):
            found.append((name, module, weight))
    return found


def tensor_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Identity of a tensor's *data*: two tensors with equal keys are the same elements of the same storage.

    Example:
        >>> w = torch.zeros(4, 4)
        >>> tensor_key(w) == tensor_key(w.view(4, 4)), tensor_key(w) == tensor_key(w[:2])
        (True, False)
    """
    if tensor.device.type == "meta":
        return ("meta", id(tensor))
    return (*storage_key(tensor), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Identity of the memory block behind ``tensor`` (views of one storage share it)."""
    if tensor.device.type == "meta":
        return ("meta", id(tensor))
    return (str(tensor.device), tensor.untyped_storage().data_ptr())


def model_size(model: torch.nn.Module) -> dict[str, float]:
    """Bytes held by ``model``: quantized weights (codes, scales, zeros, ...) and every other tensor, once each.

    Tensors shared between modules (tied embeddings) are counted once; a quantized module's internal buffers
    (which share memory with its :class:`~polyquant.qtensor.QTensor`) are counted through the QTensor's exact
    ``nbytes``, never twice.

    Returns:
        ``total_bytes``, ``quantized_bytes``, ``other_bytes``, ``quantized_modules``, ``quantized_weights``
        (element count), ``parameters`` (element count of quantized weights plus other parameters) and
        ``bits_per_weight`` (average over quantized weights, scales included; ``0.0`` without any).

    Example:
        >>> size = model_size(torch.nn.Linear(4, 2, bias=False))
        >>> size["total_bytes"], size["quantized_modules"]
        (32, 0)
    """
    q_storages: set[tuple[Any, ...]] = set()
    q_bytes = q_numel = 0
    qmodules = quantized_weights(model)
    for _, _, qt in qmodules:
        keys = {storage_key(t) for t in qt.tensors().values() if t.numel()}
        if keys and keys <= q_storages:  # one QTensor shared by two modules
            continue
        q_storages |= keys
        q_bytes += int(qt.nbytes)
        q_numel += int(qt.numel)
    seen: set[tuple[Any, ...]] = set()
    other_bytes = other_params = 0
    for is_param, tensors in ((True, model.parameters()), (False, model.buffers())):
        for tensor in tensors:
            key = tensor_key(tensor)
            if key in seen or (tensor.numel() and storage_key(tensor) in q_storages):
                continue
            seen.add(key)
            other_bytes += tensor.numel() * tensor.element_size()
            if is_param:
                other_params += tensor.numel()
    return {
        "total_bytes": q_bytes + other_bytes,
        "quantized_bytes": q_bytes,
        "other_bytes": other_bytes,
        "quantized_modules": len(qmodules),
        "quantized_weights": q_numel,
        "parameters": q_numel + other_params,
        "bits_per_weight": 8.0 * q_bytes / q_numel if q_numel else 0.0,
    }


# --------------------------------------------------------------------------------------------- registry
def _evaluate_output_error(
    model: torch.nn.Module, data: Any, *, reference: torch.nn.Module | None = None, **options: Any
) -> dict[str, float]:
    if reference is None:
        raise PolyquantError(
            "the 'output_error' evaluator compares against a reference model; pass reference=<unquantized model>"
        )
    if data is None:
        raise PolyquantError("the 'output_error' evaluator needs inputs; pass calibration-style data")
    return output_error(reference, model, data, **options)


def _evaluate_size(model: torch.nn.Module, data: Any = None, **options: Any) -> dict[str, float]:
    if options:
        raise PolyquantError(f"the 'size' evaluator takes no options, got {', '.join(sorted(options))}")
    return {k: float(v) for k, v in model_size(model).items()}


def builtin_evaluators() -> list[EvaluatorInfo]:
    """The core's evaluators, ``output_error`` and ``size`` (registered by :mod:`polyquant.builtins`).

    Example:
        >>> sorted(e.name for e in builtin_evaluators())
        ['output_error', 'size']
    """
    return [
        EvaluatorInfo(
            "output_error",
            _evaluate_output_error,
            "relative L2 / max abs error and cosine similarity of outputs vs a reference model (reference=...)",
        ),
        EvaluatorInfo("size", _evaluate_size, "bytes held by the model and average bits per quantized weight"),
    ]


def evaluate(name: str, model: torch.nn.Module, data: Any = None, **options: Any) -> dict[str, float]:
    """Run the registered evaluator ``name`` (core or plugin) on ``model``.

    Raises:
        PolyquantError: unknown evaluator (the message lists the registered ones).

    Example:
        >>> evaluate("size", torch.nn.Linear(4, 2, bias=False))["total_bytes"]
        32.0
    """
    from polyquant.plugins import get_plugin_manager

    evaluators = get_plugin_manager().get_evaluators()
    if name not in evaluators:
        known = ", ".join(sorted(evaluators)) or "(none)"
        raise PolyquantError(f"unknown evaluator {name!r}; known evaluators: {known}")
    return {k: float(v) for k, v in evaluators[name].evaluate(model, data, **options).items()}

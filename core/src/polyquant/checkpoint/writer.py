"""Writing checkpoints: collect tensors without duplicates, write safetensors + JSON, swap in atomically.

The save is staged in a hidden directory next to the target (``.<name>.XXXX.saving``); every file is fsynced,
then the staging directory replaces the target in two renames (old checkpoint aside, new one in, old one
deleted). A crash while writing leaves the previous checkpoint untouched; only the instant between the two
renames leaves it under its hidden ``.<name>.<id>.old`` name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from polyquant.checkpoint.manifest import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    REPORT_FILE,
    WEIGHTS_FILE,
    dtype_name,
    module_prefix,
    sha256_file,
)
from polyquant.errors import CheckpointError
from polyquant.evaluation import quantized_weights, storage_key, tensor_key

__all__ = ["save"]

_OWN_FILES = (WEIGHTS_FILE, CONFIG_FILE, REPORT_FILE)
#: Architecture attributes recorded per quantized module and checked against the model at load time.
_EXTRA_ATTRS = (
    "in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride", "padding",
    "dilation", "groups", "padding_mode", "num_embeddings", "embedding_dim", "padding_idx",
)  # fmt: skip


def save(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    recipe: Any = None,
    report: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (quantized or not) as a checkpoint directory, atomically.

    Args:
        model: the model; modules whose ``weight`` is a :class:`~polyquant.qtensor.QTensor` are stored
            quantized, everything else as is.
        directory: target directory. It is created, or replaced when it already holds a polyquant checkpoint
            (files that are not polyquant's, such as a tokenizer, are carried over).
        recipe: the recipe used (a :class:`~polyquant.recipes.Recipe`, a mapping or a preset name).
        report: the :class:`~polyquant.api.QuantizationReport`; its summary goes into the manifest and its
            markdown into ``report.md``.
        metadata: free-form JSON-serializable information stored in the manifest.

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: the target is a file or a non-checkpoint directory with content, a tensor is on the
            meta device, a module has non-tensor extra state, or recipe/metadata are not JSON-serializable.

    Example:
        >>> save(torch.nn.Linear(4, 4), "out/linear")  # doctest: +SKIP
        PosixPath('out/linear')
    """
    target = Path(directory).expanduser()
    _check_target(target)
    tensors, manifest = _collect(model)
    manifest["recipe"] = _jsonable(_recipe_dict(recipe), "recipe")
    manifest["report"] = _jsonable(_report_summary(report), "report summary")
    manifest["metadata"] = _jsonable(dict(metadata or {}), "metadata")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".saving", dir=target.parent))
    try:
        weights = staging / WEIGHTS_FILE
        safetensors.torch.save_file(tensors, str(weights), metadata={"format": "pt", "producer": "polyquant"})
        manifest["files"] = {
            WEIGHTS_FILE: {"sha256": sha256_file(weights, fsync=True), "bytes": weights.stat().st_size}
        }
        _write_text(staging / CONFIG_FILE, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        markdown = getattr(report, "to_markdown", None)
        if callable(markdown):
            _write_text(staging / REPORT_FILE, str(markdown()))
        _carry_foreign_entries(target, staging)
        _fsync(staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} is a file; save checkpoints to a directory path")
    if target.is_dir() and any(target.iterdir()) and not (target / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"refusing to replace {target}: it is not empty and holds no {CONFIG_FILE}, so it is not a polyquant "
            f"checkpoint; save to a new or empty directory"
        )


def _collect(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to write (deduplicated) and the manifest describing them."""
    tensors: dict[str, torch.Tensor] = {}
    table: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    names_by_key: dict[tuple[Any, ...], str] = {}
    written_storages: set[tuple[Any, ...]] = set()

    def add(name: str, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta":
            raise CheckpointError(
                f"tensor {name} is on the meta device (never materialized); load real weights before saving"
            )
        key = tensor_key(tensor)
        if key in names_by_key:
            aliases[name] = names_by_key[key]
            return
        names_by_key[key] = name
        data = tensor.detach().to("cpu").contiguous()
        if data.numel() and storage_key(data) in written_storages:
            data = data.clone()  # a different view of memory already written: store its own copy
        written_storages.add(storage_key(data))
        tensors[name] = data
        table[name] = {"shape": list(data.shape), "dtype": dtype_name(data.dtype)}

    modules: dict[str, dict[str, Any]] = {}
    quantized_storages: set[tuple[Any, ...]] = set()
    for name, module, qt in quantized_weights(model):
        parts = qt.tensors()
        for part, tensor in parts.items():
            add(f"{module_prefix(name)}weight.{part}", tensor)
            quantized_storages.add(storage_key(tensor))
        act = getattr(module, "act", None)
        modules[name] = {
            "type": type(module).__name__,
            "format": qt.spec.name,
            "spec": qt.spec.to_dict(),
            "shape": list(qt.shape),
            "dtype": dtype_name(qt.dtype),
            "bits_per_weight": float(qt.bits_per_weight),
            "parts": sorted(parts),
            "weight": qt.metadata(),
            "act": act.to_dict() if act is not None else None,
            "extra": _module_extra(module),
        }
    for name, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"state entry {name} is a {type(value).__name__} (extra state from get_extra_state); polyquant "
                f"stores tensors and JSON only, never pickles — keep that state outside the module"
            )
        if value.numel() and storage_key(value) in quantized_storages:
            continue  # a quantized module's internal buffer: stored through its QTensor above
        add(name, value)
    from polyquant import __version__

    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "polyquant_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": modules,
        "tensors": table,
        "aliases": aliases,
    }
    return tensors, manifest


def _module_extra(module: torch.nn.Module) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for attr in _EXTRA_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, (bool, int, float, str)) or (
            isinstance(value, tuple) and all(isinstance(v, int) for v in value)
        ):
            extra[attr] = list(value) if isinstance(value, tuple) else value
    return extra


def _recipe_dict(recipe: Any) -> dict[str, Any] | None:
    if recipe is None:
        return None
    if isinstance(recipe, str):
        from polyquant.recipes import resolve

        recipe = resolve(recipe)
    if isinstance(recipe, Mapping):
        return dict(recipe)
    to_dict = getattr(recipe, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise CheckpointError(f"recipe must be a Recipe, a mapping or a preset name, got {type(recipe).__name__}")


def _report_summary(report: Any) -> dict[str, Any] | None:
    if report is None or isinstance(report, Mapping):
        return None if report is None else dict(report.get("summary", report))
    to_dict = getattr(report, "to_dict", None)
    if not callable(to_dict):
        raise CheckpointError(f"report must be a QuantizationReport or a mapping, got {type(report).__name__}")
    data = to_dict()
    return dict(data.get("summary", data))


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{what} is not JSON-serializable ({exc}); use strings, numbers, lists and dicts"
        ) from exc


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(directory: Path) -> None:
    """Flush a directory to disk (fsync) so renames in it are durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _carry_foreign_entries(target: Path, staging: Path) -> None:
    """Keep files that are not polyquant's (tokenizer, README, ...) when replacing an existing checkpoint."""
    if not target.is_dir():
        return
    for entry in target.iterdir():
        if entry.name in _OWN_FILES:
            continue
        destination = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, destination, symlinks=True)
        else:
            try:
                os.link(entry, destination, follow_symlinks=False)
            except OSError:
                shutil.copy2(entry, destination, follow_symlinks=False)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Move the finished staging directory to ``target``, replacing an old checkpoint in two renames."""
    if not target.exists():
        os.replace(staging, target)
        _fsync(target.parent)
        return
    retired = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.old")
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise
    _fsync(target.parent)
    shutil.rmtree(retired, ignore_errors=True)

"""Loading checkpoints: verify everything first, then swap quantized modules in and load the other tensors.

Quantized modules are rebuilt only from polyquant's own module classes named in the manifest (never from an
import path found in the file), from the unquantized module the factory built and the stored QTensor; no
weight is quantized again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from polyquant.checkpoint.manifest import (
    REDOWNLOAD,
    WEIGHTS_FILE,
    dtype_name,
    module_prefix,
    read_manifest,
    verify_files,
)
from polyquant.errors import CheckpointError, PolyquantError
from polyquant.evaluation import quantized_weights, storage_key
from polyquant.quantizers.stored import StoredWeight

if TYPE_CHECKING:
    pass

__all__ = ["load"]

#: Quantized module class → the classmethod converting its unquantized counterpart.
_CONVERTERS = {"QLinear": "from_linear", "QConv1d": "from_conv", "QConv2d": "from_conv", "QEmbedding": "from_embedding"}


def load(
    directory: str | os.PathLike[str],
    model_or_factory: torch.nn.Module | Callable[[], torch.nn.Module],
    *,
    device: str | torch.device | None = None,
    verify: bool = True,
) -> torch.nn.Module:
    """Rebuild a saved model: quantized modules from their stored QTensors, every other tensor loaded as saved.

    Args:
        directory: a checkpoint written by :func:`save`.
        model_or_factory: an unquantized model of the saved architecture, or a zero-argument callable returning
            one (its weights are overwritten; a factory may build on the meta device for the tensors the
            checkpoint holds).
        device: load tensors onto this device and move the model there (default: CPU tensors, model left where
            the factory built it).
        verify: check the SHA-256 of ``model.safetensors`` (reads the file once more; on by default).

    Returns:
        The model with quantized modules swapped in.

    Raises:
        CheckpointError: anything that does not match — manifest, format version, size, hash, tensor names,
            shapes or dtypes, module types, architecture attributes — with the name of the offending tensor or
            module and the fix.

    Example:
        >>> model = load("out/mlp", lambda: torch.nn.Sequential(torch.nn.Linear(64, 8)))  # doctest: +SKIP
    """
    from safetensors import safe_open

    root = Path(directory).expanduser()
    manifest = read_manifest(root)
    verify_files(root, manifest, check_hash=verify)
    model = _materialize(model_or_factory)
    location = str(torch.device(device)) if device is not None else "cpu"
    with safe_open(str(root / WEIGHTS_FILE), framework="pt", device=location) as handle:
        stored: dict[str, torch.Tensor] = {name: handle.get_tensor(name) for name in manifest["tensors"]}
    for alias, canonical in manifest["aliases"].items():
        stored[alias] = stored[canonical]
    for name, entry in manifest["modules"].items():
        model = _install_module(model, name, entry, stored)
    _load_remaining(model, manifest, stored)
    if device is not None:
        model.to(device)
    return model


def _materialize(model_or_factory: torch.nn.Module | Callable[[], torch.nn.Module]) -> torch.nn.Module:
    if isinstance(model_or_factory, torch.nn.Module):
        return model_or_factory
    if not callable(model_or_factory):
        raise CheckpointError(
            f"load() needs a model or a zero-argument factory returning one, got {type(model_or_factory).__name__}"
        )
    model = model_or_factory()
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"the model factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _qmodule_class(type_name: str, module_name: str) -> type[torch.nn.Module]:
    """The quantized module class for a manifest ``type``.

    Only polyquant.nn's public classes qualify: a name found in the file is never imported.
    """
    import polyquant.nn as qnn

    cls = getattr(qnn, type_name, None) if type_name in getattr(qnn, "__all__", ()) else None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise CheckpointError(
            f"module {module_name} has type {type_name!r}, which this polyquant does not provide; "
            f"upgrade polyquant or install the plugin the checkpoint was made with"
        )
    return cls


def _install_module(
    model: torch.nn.Module, name: str, entry: dict[str, Any], stored: dict[str, torch.Tensor]
) -> torch.nn.Module:
    """Swap the fp module ``name`` for its quantized counterpart built from the stored QTensor."""
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

    try:
        fp_module = model.get_submodule(name)
    except AttributeError:
        raise CheckpointError(
            f"the checkpoint quantizes module {name!r} but the model has no such module; the factory builds a "
            f"different architecture than the one saved"
        ) from None
    qcls = _qmodule_class(entry["type"], name)
    prefix = module_prefix(name)
    parts = {part: stored[f"{prefix}weight.{part}"] for part in entry["parts"]}
    try:
        qweight = QTensor.from_tensors(parts, entry["weight"])
        act = ActivationSpec.from_dict(entry["act"]) if entry["act"] is not None else None
    except CheckpointError as exc:
        raise CheckpointError(f"module {name}: {exc}") from exc
    except (PolyquantError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"module {name}: its stored format is invalid here ({exc}); the format may come from a plugin that "
            f"is not installed, or the checkpoint is damaged — {REDOWNLOAD}"
        ) from exc
    _check_architecture(name, fp_module, entry, qweight.shape)
    converter = getattr(qcls, _CONVERTERS.get(entry["type"], ""), None)
    if converter is None:
        raise CheckpointError(f"module {name}: polyquant cannot rebuild a {entry['type']} from a checkpoint")
    handback = StoredWeight(
        qweight, f"module {name}", error=CheckpointError, hint="; the factory builds a different architecture"
    )
    options: dict[str, Any] = {"quantizer": handback}
    act_scale = stored.get(f"{prefix}act_scale")
    if act is not None or act_scale is not None:  # converters of modules without activations take no act=
        options.update(act=act, act_scale=act_scale)
    try:
        qmodule: torch.nn.Module = converter(fp_module, qweight.spec, **options)
    except TypeError as exc:
        raise CheckpointError(
            f"module {name} is a {type(fp_module).__name__} in the model but a {entry['type']} in the checkpoint "
            f"({exc}); the factory builds a different architecture than the one saved"
        ) from exc
    if not name:
        return qmodule
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, qmodule)
    return model


def _check_architecture(name: str, fp_module: torch.nn.Module, entry: dict[str, Any], shape: torch.Size) -> None:
    weight = getattr(fp_module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise CheckpointError(
            f"module {name} is a {type(fp_module).__name__} without a weight tensor in the model, but a quantized "
            f"{entry['type']} in the checkpoint; load() needs the unquantized model (or a factory building it)"
        )
    if weight.numel() != shape.numel():
        raise CheckpointError(
            f"module {name}: the model's weight has shape {tuple(weight.shape)} but the checkpoint's quantized weight "
            f"{tuple(shape)}; the factory builds a different architecture (check its config)"
        )
    for attr, saved in entry["extra"].items():
        if hasattr(fp_module, attr):
            value = getattr(fp_module, attr)
            if (list(value) if isinstance(value, tuple) else value) != saved:
                raise CheckpointError(
                    f"module {name}: the model has {attr}={value!r} but the checkpoint was saved with {saved!r}; "
                    f"the factory builds a different architecture (check its config)"
                )


def _load_remaining(model: torch.nn.Module, manifest: dict[str, Any], stored: dict[str, torch.Tensor]) -> None:
    """Load every non-quantized tensor, after checking names, shapes and dtypes against the model."""
    quantized = {storage_key(t) for _, _, qt in quantized_weights(model) for t in qt.tensors().values() if t.numel()}
    targets = {
        name: value
        for name, value in model.state_dict(keep_vars=True).items()
        if not (isinstance(value, torch.Tensor) and value.numel() and storage_key(value) in quantized)
    }
    part_names = {f"{module_prefix(m)}weight.{p}" for m, entry in manifest["modules"].items() for p in entry["parts"]}
    available = stored.keys() - part_names
    missing, unexpected = sorted(targets.keys() - available), sorted(available - targets.keys())
    if missing:
        raise CheckpointError(
            f"tensor {missing[0]} of the model is not in the checkpoint ({len(missing)} missing); the factory builds "
            f"a different architecture than the one saved"
        )
    if unexpected:
        raise CheckpointError(
            f"tensor {unexpected[0]} in the checkpoint has no place in the model ({len(unexpected)} unexpected); "
            f"the factory builds a different architecture than the one saved"
        )
    for name, target in targets.items():
        source = stored[name]
        if not isinstance(target, torch.Tensor):
            raise CheckpointError(f"state entry {name} of the model is not a tensor; polyquant cannot load it")
        if source.shape != target.shape:
            raise CheckpointError(
                f"tensor {name}: shape {tuple(source.shape)} in the checkpoint, {tuple(target.shape)} in the model; "
                f"the factory builds a different architecture (check its config)"
            )
        if source.dtype != target.dtype:
            raise CheckpointError(
                f"tensor {name}: dtype {dtype_name(source.dtype)} in the checkpoint, {dtype_name(target.dtype)} in "
                f"the model; build the model in the saved dtype (e.g. model.to(torch.{dtype_name(source.dtype)}))"
            )
    on_meta = any(t.device.type == "meta" for t in targets.values() if isinstance(t, torch.Tensor))
    model.load_state_dict({name: stored[name] for name in targets}, strict=False, assign=on_meta)
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
    if leftover:
        raise CheckpointError(
            f"tensor {leftover[0]} is still on the meta device after loading (the checkpoint does not hold it); "
            f"build the model on a real device"
        )

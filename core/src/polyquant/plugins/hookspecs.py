"""The hook specifications: the complete contract between polyquant and its plugins.

A plugin is any module or object with functions named like the hooks below, decorated with
:data:`hookimpl`. Each hook takes no arguments and returns an iterable of typed records; the core's own
formats, quantizers, kernels and CLI commands are registered through these very hooks (see
:mod:`polyquant.builtins`).

Example (a plugin module, exposed through the ``polyquant`` entry point group)::

    from polyquant.plugins import hookimpl, RecipePreset

    @hookimpl
    def polyquant_register_recipes():
        return [RecipePreset("int4-everything", {"weights": {"format": "int4"}}, "all linears int4")]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.plugins.records import (
        AdapterInfo,
        CalibrationSourceInfo,
        CommandGroup,
        EvaluatorInfo,
        KernelSpec,
        KVCacheFormatInfo,
        QuantizerInfo,
        RecipePreset,
        TransformInfo,
    )

PROJECT = "polyquant"
ENTRY_POINT_GROUP = "polyquant"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def polyquant_register_formats() -> Iterable[FormatSpec]:
    """Tensor formats (element codec + scaling + granularity), e.g. ``int4``, ``mxfp4``, ``nf4``."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_quantizers() -> Iterable[QuantizerInfo]:
    """Weight quantization algorithms usable as a recipe's ``method``."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_kernels() -> Iterable[KernelSpec]:
    """Kernels for ops (``linear``, ``conv``, ...) keyed by (op, format, device, backend)."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_adapters() -> Iterable[AdapterInfo]:
    """Model adapters: which blocks/layers a model has, what to skip, how to calibrate."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_calibration_sources() -> Iterable[CalibrationSourceInfo]:
    """Named calibration data sources (text files, built-in corpora, image folders, ...)."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_evaluators() -> Iterable[EvaluatorInfo]:
    """Named evaluations (perplexity, output error, ...)."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_recipes() -> Iterable[RecipePreset]:
    """Named recipes (presets) such as ``w4a16-g128``."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_commands() -> Iterable[CommandGroup]:
    """CLI command groups mounted as ``polyquant <name> ...``."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_transforms() -> Iterable[TransformInfo]:
    """Model transforms (``smoothquant``, ``hadamard``, ...) that recipes name in ``transforms``."""
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def polyquant_register_kv_formats() -> Iterable[KVCacheFormatInfo]:
    """KV-cache formats (``turbo3-prod``, ``kivi2``, ``fp8_e4m3``, ...) for :func:`polyquant.kvcache.get`."""
    raise NotImplementedError  # pragma: no cover - specification only

"""The core's own plugin (name ``core``).

Built-in formats, quantizers, reference kernels, recipes, the generic adapter, calibration sources,
evaluators and KV-cache formats are registered through exactly the hooks a third-party plugin uses, so the core has no
private registration path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from polyquant.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.plugins.records import (
        AdapterInfo,
        CalibrationSourceInfo,
        EvaluatorInfo,
        KernelSpec,
        KVCacheFormatInfo,
        QuantizerInfo,
        RecipePreset,
        TransformInfo,
    )


@hookimpl
def polyquant_register_formats() -> Iterable[FormatSpec]:
    """The built-in tensor formats: intN/uintN, binary, ternary, fp8/fp6/fp4, MX/NV blocks, NF4, codebooks."""
    from polyquant.formats.builtin import builtin_formats

    return builtin_formats()


@hookimpl
def polyquant_register_quantizers() -> Iterable[QuantizerInfo]:
    """The built-in quantizers (RTN and MSE clipping search) and activation observers."""
    from polyquant.mixed_precision import mixed_quantizer_info
    from polyquant.quantizers import builtin_quantizers

    return [*builtin_quantizers(), mixed_quantizer_info()]


@hookimpl
def polyquant_register_kernels() -> Iterable[KernelSpec]:
    """The pure-PyTorch reference kernel of every op (the fallback dispatch can always select)."""
    from polyquant.kernels.ops import reference_kernels

    return reference_kernels()


@hookimpl
def polyquant_register_adapters() -> Iterable[AdapterInfo]:
    """The generic adapter: any ``torch.nn.Module``, quantizing its Linear/Conv/Embedding layers."""
    from polyquant.adapters import builtin_adapters

    return builtin_adapters()


@hookimpl
def polyquant_register_calibration_sources() -> Iterable[CalibrationSourceInfo]:
    """The built-in calibration data sources."""
    from polyquant.calibration import builtin_calibration_sources

    return builtin_calibration_sources()


@hookimpl
def polyquant_register_evaluators() -> Iterable[EvaluatorInfo]:
    """The built-in evaluators (weight and output error)."""
    from polyquant.evaluation import builtin_evaluators

    return builtin_evaluators()


@hookimpl
def polyquant_register_recipes() -> Iterable[RecipePreset]:
    """The named recipe presets (``w4a16-g128``, ``w8a8``, ``nvfp4``, ...)."""
    from polyquant.recipes.presets import builtin_presets

    return builtin_presets()


@hookimpl
def polyquant_register_transforms() -> Iterable[TransformInfo]:
    """The built-in model transforms (``smoothquant``, ``hadamard``)."""
    from polyquant.smoothing import builtin_transforms
    from polyquant.transforms.quarot import builtin_transforms as rotation_transforms

    return [*builtin_transforms(), *rotation_transforms()]


@hookimpl
def polyquant_register_kv_formats() -> Iterable[KVCacheFormatInfo]:
    """The built-in KV-cache formats (FP8, integer, KIVI, TurboQuant; see :mod:`polyquant.kvcache`)."""
    from polyquant.kvcache.registry import builtin_kv_formats

    return builtin_kv_formats()

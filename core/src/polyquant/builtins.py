"""The core's own plugin (name ``core``).

Built-in formats, quantizers, reference kernels, recipes, the generic adapter, calibration sources and
evaluators are registered through exactly the hooks a third-party plugin uses, so the core has no
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
        QuantizerInfo,
        RecipePreset,
    )


@hookimpl
def polyquant_register_formats() -> Iterable[FormatSpec]:
    from polyquant.formats.builtin import builtin_formats

    return builtin_formats()


@hookimpl
def polyquant_register_quantizers() -> Iterable[QuantizerInfo]:
    from polyquant.quantizers import builtin_quantizers

    return builtin_quantizers()


@hookimpl
def polyquant_register_kernels() -> Iterable[KernelSpec]:
    from polyquant.kernels.ops import reference_kernels

    return reference_kernels()


@hookimpl
def polyquant_register_adapters() -> Iterable[AdapterInfo]:
    from polyquant.adapters import builtin_adapters

    return builtin_adapters()


@hookimpl
def polyquant_register_calibration_sources() -> Iterable[CalibrationSourceInfo]:
    from polyquant.calibration import builtin_calibration_sources

    return builtin_calibration_sources()


@hookimpl
def polyquant_register_evaluators() -> Iterable[EvaluatorInfo]:
    from polyquant.evaluation import builtin_evaluators

    return builtin_evaluators()


@hookimpl
def polyquant_register_recipes() -> Iterable[RecipePreset]:
    from polyquant.recipes.presets import builtin_presets

    return builtin_presets()

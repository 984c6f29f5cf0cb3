"""polyquant's plugin system: hook specifications, typed records and the plugin manager facade."""

from __future__ import annotations

from polyquant.plugins.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from polyquant.plugins.manager import (
    PluginInfo,
    PluginManager,
    get_plugin_manager,
    set_plugin_manager,
    using_plugin_manager,
)
from polyquant.plugins.records import (
    KERNEL_OPS,
    AdapterInfo,
    CalibrationSourceInfo,
    CommandGroup,
    EvaluatorInfo,
    KernelContext,
    KernelSpec,
    KVCacheFormatInfo,
    ModelAdapter,
    QuantizerInfo,
    RecipePreset,
    TransformInfo,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "KERNEL_OPS",
    "AdapterInfo",
    "CalibrationSourceInfo",
    "CommandGroup",
    "EvaluatorInfo",
    "KVCacheFormatInfo",
    "KernelContext",
    "KernelSpec",
    "ModelAdapter",
    "PluginInfo",
    "PluginManager",
    "QuantizerInfo",
    "RecipePreset",
    "TransformInfo",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "set_plugin_manager",
    "using_plugin_manager",
]

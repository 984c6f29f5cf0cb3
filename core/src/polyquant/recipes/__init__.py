"""Recipes: the schema (:class:`Recipe`), module matching, and the built-in presets.

Example:
    >>> from polyquant.recipes import resolve
    >>> resolve("w4a16-g128").weights.group_size
    128
"""

from __future__ import annotations

from polyquant.recipes.matching import ModuleDecision, decide, match_pattern
from polyquant.recipes.schema import (
    KV_CACHE_FORMATS,
    MODULE_TYPES,
    KVCacheConfig,
    Override,
    Recipe,
    WeightConfig,
    resolve,
)

__all__ = [
    "KV_CACHE_FORMATS",
    "MODULE_TYPES",
    "KVCacheConfig",
    "ModuleDecision",
    "Override",
    "Recipe",
    "WeightConfig",
    "decide",
    "match_pattern",
    "resolve",
]

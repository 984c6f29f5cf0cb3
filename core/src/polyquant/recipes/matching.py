r"""Which modules a recipe quantizes, and with which settings.

Patterns are globs on qualified module names (``fnmatch`` syntax, case-sensitive, ``*`` crosses dots:
``"*.mlp.*"``), or regular expressions written ``"re:<regex>"`` that must match the whole name.

The decision for one module of a type listed in ``Recipe.modules``, in order:

1. not matched by any ``include`` pattern → skipped (``not included``);
2. matched by an ``exclude`` pattern → skipped (``excluded by '<pattern>'``);
3. matched by a matching override with ``skip: true`` → skipped (``skipped by override '<pattern>'``);
4. listed by the model adapter's ``default_exclude`` (when ``adapter_excludes`` is on) → skipped, unless a
   non-skip override names it: overrides are explicit, adapter defaults are not;
5. otherwise quantized with :meth:`Recipe.weights_for` / :meth:`Recipe.activations_for`.

Example:
    >>> match_pattern("*.down_proj", "model.layers.0.mlp.down_proj")
    True
    >>> match_pattern(r"re:.*layers\.[01]\..*", "model.layers.1.mlp")
    True
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyquant.errors import RecipeError

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.recipes.schema import Recipe, WeightConfig

__all__ = ["ModuleDecision", "compile_pattern", "decide", "match_pattern"]

REGEX_PREFIX = "re:"


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a glob or ``re:`` pattern; :class:`RecipeError` for an invalid regex."""
    if pattern.startswith(REGEX_PREFIX):
        try:
            return re.compile(pattern[len(REGEX_PREFIX) :])
        except re.error as exc:
            raise RecipeError(
                f"pattern {pattern!r} is not a valid regular expression ({exc}); fix it or use a glob"
            ) from None
    return re.compile(fnmatch.translate(pattern))


def match_pattern(pattern: str, name: str) -> bool:
    """Whether module name ``name`` matches ``pattern`` (whole-name match)."""
    return compile_pattern(pattern).fullmatch(name) is not None


def _first_match(patterns: Sequence[str], name: str) -> str | None:
    return next((p for p in patterns if match_pattern(p, name)), None)


@dataclass(frozen=True)
class ModuleDecision:
    """What a recipe says about one module.

    Attributes:
        name: qualified module name.
        quantize: whether to quantize it.
        reason: why it is skipped (empty when quantized).
        weights: weight settings (when quantized).
        activations: activation settings (``None``: weight-only).
    """

    name: str
    quantize: bool
    reason: str = ""
    weights: WeightConfig | None = None
    activations: ActivationSpec | None = None


def decide(
    recipe: Recipe, name: str, *, adapter_exclude: Sequence[str] = (), adapter_name: str = "adapter"
) -> ModuleDecision:
    """Apply include/exclude/override rules (see the module docstring) to module ``name``.

    Args:
        recipe: the recipe.
        name: qualified module name.
        adapter_exclude: the adapter's ``default_exclude`` patterns.
        adapter_name: the adapter's name, for the skip reason.

    Example:
        >>> from polyquant.recipes import Recipe
        >>> r = Recipe.from_dict({"weights": "int8", "exclude": ["lm_head"]})
        >>> decide(r, "lm_head").reason
        "excluded by 'lm_head'"
    """
    if _first_match(recipe.include, name) is None:
        return ModuleDecision(name, False, "not included")
    pattern = _first_match(recipe.exclude, name)
    if pattern is not None:
        return ModuleDecision(name, False, f"excluded by {pattern!r}")
    matching = [o for o in recipe.overrides if o.matches(name)]
    skipping = next((o for o in matching if o.skip), None)
    if skipping is not None:
        return ModuleDecision(name, False, f"skipped by override {skipping.pattern!r}")
    if recipe.adapter_excludes and not matching:
        pattern = _first_match(adapter_exclude, name)
        if pattern is not None:
            return ModuleDecision(
                name,
                False,
                f"kept in high precision by the {adapter_name} adapter ({pattern!r}); "
                "add an override naming it or set adapter_excludes: false to quantize it",
            )
    return ModuleDecision(name, True, "", recipe.weights_for(name), recipe.activations_for(name))

"""The plugin object polyquant loads: entry point ``polyquant: example = "polyquant_example.plugin"``.

Each ``@hookimpl`` function takes no arguments and returns records. Everything this plugin contributes
is registered here and nowhere else; polyquant validates the records and, if anything is wrong, marks
the plugin ``failed`` and uses none of them (see ``polyquant plugins``).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> import polyquant_example.plugin as plugin
    >>> pm = PluginManager(entry_points=False)
    >>> pm.register(plugin, "example").status
    'loaded'
"""

from __future__ import annotations

from collections.abc import Iterable

from polyquant.formats import FormatSpec
from polyquant.plugins import CommandGroup, KernelSpec, RecipePreset, hookimpl

__all__ = [
    "polyquant_register_commands",
    "polyquant_register_formats",
    "polyquant_register_kernels",
    "polyquant_register_recipes",
]


@hookimpl
def polyquant_register_formats() -> Iterable[FormatSpec]:
    """The ``int4_pow2`` format."""
    from polyquant_example.format import INT4_POW2

    return [INT4_POW2]


@hookimpl
def polyquant_register_kernels() -> Iterable[KernelSpec]:
    """A CPU ``linear`` kernel for ``int4_pow2``."""
    from polyquant_example.kernel import int4_pow2_linear_kernel

    return [int4_pow2_linear_kernel()]


@hookimpl
def polyquant_register_recipes() -> Iterable[RecipePreset]:
    """A preset using the format with the MSE clipping search."""
    return [
        RecipePreset(
            "w4a16-pow2",
            {"weights": {"format": "int4_pow2"}, "method": "mse"},
            "int4 weights with power-of-two scales per group of 32, MSE clipping search (example plugin)",
        )
    ]


@hookimpl
def polyquant_register_commands() -> Iterable[CommandGroup]:
    """``polyquant example ...``."""
    from polyquant_example.cli import example

    return [CommandGroup("example", example, "the example plugin's commands (int4_pow2)")]

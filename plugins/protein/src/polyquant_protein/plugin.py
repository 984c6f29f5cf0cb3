"""The ``protein`` plugin: what polyquant-protein registers with polyquant.

polyquant loads this module through the entry point ``protein = "polyquant_protein.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant protein`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "protein"}).plugin("protein").contributions
    {'command': ('protein',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_protein import DOMAIN
from polyquant_protein.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_protein.cli.group` as ``polyquant protein``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['protein']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="protein language models (skeleton: `info` only)")]

"""The ``vit`` plugin: what polyquant-vit registers with polyquant.

polyquant loads this module through the entry point ``vit = "polyquant_vit.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant vit`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "vit"}).plugin("vit").contributions
    {'command': ('vit',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_vit import DOMAIN
from polyquant_vit.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_vit.cli.group` as ``polyquant vit``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['vit']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="vision transformers (skeleton: `info` only)")]

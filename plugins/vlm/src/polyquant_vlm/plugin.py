"""The ``vlm`` plugin: what polyquant-vlm registers with polyquant.

polyquant loads this module through the entry point ``vlm = "polyquant_vlm.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant vlm`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "vlm"}).plugin("vlm").contributions
    {'command': ('vlm',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_vlm import DOMAIN
from polyquant_vlm.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_vlm.cli.group` as ``polyquant vlm``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['vlm']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="vision-language models (skeleton: `info` only)")]

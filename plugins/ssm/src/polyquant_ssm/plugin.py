"""The ``ssm`` plugin: what polyquant-ssm registers with polyquant.

polyquant loads this module through the entry point ``ssm = "polyquant_ssm.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant ssm`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "ssm"}).plugin("ssm").contributions
    {'command': ('ssm',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_ssm import DOMAIN
from polyquant_ssm.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_ssm.cli.group` as ``polyquant ssm``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['ssm']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="state-space models (skeleton: `info` only)")]

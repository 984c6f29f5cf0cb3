"""The ``diffusion`` plugin: what polyquant-diffusion registers with polyquant.

polyquant loads this module through the entry point ``diffusion = "polyquant_diffusion.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant diffusion`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "diffusion"}).plugin("diffusion").contributions
    {'command': ('diffusion',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_diffusion import DOMAIN
from polyquant_diffusion.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_diffusion.cli.group` as ``polyquant diffusion``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['diffusion']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="diffusion models (skeleton: `info` only)")]

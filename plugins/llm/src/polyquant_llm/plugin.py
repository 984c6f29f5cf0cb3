"""The ``llm`` plugin: what polyquant-llm registers with polyquant.

polyquant loads this module through the entry point ``llm = "polyquant_llm.plugin"`` of group
``polyquant``. The plugin is a skeleton: it implements one hook, ``polyquant_register_commands``, and
contributes the ``polyquant llm`` command group and nothing else (no formats, quantizers, kernels,
adapters or recipes yet).

Example:
    >>> from polyquant.plugins import PluginManager
    >>> PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": "llm"}).plugin("llm").contributions
    {'command': ('llm',)}
"""

from __future__ import annotations

from polyquant.plugins import CommandGroup, hookimpl
from polyquant_llm import DOMAIN
from polyquant_llm.cli import group

__all__ = ["polyquant_register_commands"]


@hookimpl
def polyquant_register_commands() -> list[CommandGroup]:
    """Mount :data:`polyquant_llm.cli.group` as ``polyquant llm``.

    Returns:
        The one command group this plugin contributes.

    Example:
        >>> [g.name for g in polyquant_register_commands()]
        ['llm']
    """
    return [CommandGroup(name=DOMAIN, command=group, description="large language models (skeleton: `info` only)")]

"""Isolated plugin managers and temporary plugin registration, usable with or without pytest.

Tests of a plugin should see exactly the plugins they ask for: the core's built-ins plus the plugin
under test, never whatever else happens to be installed on the machine.

Example:
    >>> from polyquant.plugins import RecipePreset, hookimpl
    >>> class MyPlugin:
    ...     @hookimpl
    ...     def polyquant_register_recipes(self):
    ...         return [RecipePreset("my-int4", {"weights": {"format": "int4"}})]
    >>> with isolated_plugin_manager() as pm, register_plugin(MyPlugin(), "mine") as info:
    ...     assert info.status == "loaded" and "my-int4" in pm.get_recipes()
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polyquant.plugins import PluginInfo, PluginManager, get_plugin_manager, using_plugin_manager

__all__ = ["PluginStatusError", "isolated_plugin_manager", "register_plugin"]

STATUSES = ("loaded", "failed", "conflict", "disabled")


class PluginStatusError(AssertionError):
    """A plugin registered by the testkit did not end up with the expected status."""


@contextmanager
def isolated_plugin_manager(*, entry_points: bool = False, builtins: bool = True) -> Iterator[PluginManager]:
    """A fresh :class:`PluginManager`, installed as the process-wide manager for the ``with`` block.

    Args:
        entry_points: also load the plugins installed on this machine (off by default: isolation).
        builtins: register the core's own formats, quantizers, kernels and recipes.

    Yields:
        The manager; the previous process-wide manager is restored afterwards.
    """
    manager = PluginManager(entry_points=entry_points, builtins=builtins)
    with using_plugin_manager(manager):
        yield manager


@contextmanager
def register_plugin(
    plugin: Any,
    name: str | None = None,
    *,
    manager: PluginManager | None = None,
    expect_status: str | None = "loaded",
    distribution: str | None = None,
    version: str = "",
) -> Iterator[PluginInfo]:
    """Register ``plugin`` for the ``with`` block and unregister it afterwards.

    Args:
        plugin: a module or object with ``@hookimpl`` functions.
        name: plugin name (defaults to the object's ``__name__`` or class name).
        manager: where to register (defaults to the current process-wide manager).
        expect_status: the status the plugin must end up with (``"loaded"``, ``"failed"``,
            ``"conflict"``, ``"disabled"``); ``None`` accepts any status.
        distribution: distribution name shown in listings and conflict messages.
        version: version shown in listings.

    Yields:
        The plugin's :class:`PluginInfo` right after registration.

    Raises:
        PluginStatusError: the plugin's status differs from ``expect_status`` (the message carries the
            plugin's error, which is usually what the test author needs to see).
    """
    if expect_status is not None and expect_status not in STATUSES:
        raise ValueError(f"expect_status must be one of {', '.join(STATUSES)} or None, got {expect_status!r}")
    pm = manager if manager is not None else get_plugin_manager()
    with warnings.catch_warnings():
        if expect_status == "conflict":  # the manager warns about every conflict; here it is the point
            warnings.simplefilter("ignore", RuntimeWarning)
        info = pm.register(plugin, name, distribution=distribution, version=version)
    try:
        if expect_status is not None and info.status != expect_status:
            raise PluginStatusError(
                f"plugin {info.name!r} has status {info.status!r}, expected {expect_status!r}"
                + (f": {info.error}" if info.error else "")
            )
        yield info
    finally:
        pm.unregister(info.name)

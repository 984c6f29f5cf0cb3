"""The pytest plugin (entry point ``pytest11: polyquant``), loaded automatically once installed.

Fixtures:

* ``plugin_manager`` — an isolated :class:`~polyquant.plugins.PluginManager` (built-ins only, no entry
  points) installed as the process-wide manager for the test.
* ``installed_plugin_manager`` — the same with the machine's installed plugins loaded from entry points.
* ``registered`` — ``registered(plugin, name=None, *, expect_status="loaded")``: a context manager that
  registers a plugin into the test's manager, yields its :class:`~polyquant.plugins.PluginInfo`,
  checks its status and unregisters it afterwards. It uses ``installed_plugin_manager`` when the test
  requests it, the isolated ``plugin_manager`` otherwise.

Example:
    >>> def test_my_recipe(registered, plugin_manager):  # doctest: +SKIP
    ...     with registered(my_plugin) as info:
    ...         assert "my-int4" in plugin_manager.get_recipes()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from polyquant.plugins import PluginInfo, PluginManager
from polyquant_testkit.isolation import isolated_plugin_manager, register_plugin

__all__ = ["installed_plugin_manager", "plugin_manager", "registered"]

Registrar = Callable[..., AbstractContextManager[PluginInfo]]


@pytest.fixture
def plugin_manager() -> Iterator[PluginManager]:
    """An isolated plugin manager (core built-ins only) installed process-wide for the test."""
    with isolated_plugin_manager(entry_points=False) as pm:
        yield pm


@pytest.fixture
def installed_plugin_manager() -> Iterator[PluginManager]:
    """A fresh plugin manager with the machine's installed plugins, installed process-wide for the test."""
    with isolated_plugin_manager(entry_points=True) as pm:
        yield pm


@pytest.fixture
def registered(request: pytest.FixtureRequest) -> Registrar:
    """``registered(plugin, name=None, *, expect_status="loaded", distribution=None, version="")``.

    A context manager registering ``plugin`` into the test's plugin manager; see
    :func:`polyquant_testkit.register_plugin`.
    """
    fixture = "installed_plugin_manager" if "installed_plugin_manager" in request.fixturenames else "plugin_manager"
    pm: PluginManager = request.getfixturevalue(fixture)

    def registrar(plugin: Any, name: str | None = None, **options: Any) -> AbstractContextManager[PluginInfo]:
        return register_plugin(plugin, name, manager=pm, **options)

    return registrar


def pytest_report_header(config: pytest.Config) -> str:
    """Show the polyquant version in pytest's header."""
    import polyquant

    return f"polyquant-core {polyquant.__version__} (polyquant-testkit fixtures: plugin_manager, registered)"

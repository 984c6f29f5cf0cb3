"""What every conformance suite shares: an isolated plugin manager with the plugin under test registered.

A suite is a plain class (pytest does not collect it by itself); a test module subclasses it with a
``Test...`` name and sets the suite's properties, as class attributes or ``@property``.

Example:
    >>> class TestMyFormat(FormatContract):  # doctest: +SKIP
    ...     plugin = my_plugin_module
    ...     format_name = "int4_pow2"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from polyquant.plugins import PluginManager
from polyquant_testkit.isolation import isolated_plugin_manager, register_plugin

__all__ = ["PluginContract"]


class PluginContract:
    """Base of the conformance suites.

    Around every test, a fresh plugin manager (the core's built-ins only) is installed process-wide and
    :attr:`plugin` is registered into it, so the suite sees exactly the contributions under test.

    Attributes:
        plugin: the plugin object or module to register (``None``: test what is already there —
            the core's built-ins, or the installed plugins when :attr:`use_installed_plugins` is set).
        plugin_name: name to register ``plugin`` under (defaults to its ``__name__``).
        use_installed_plugins: also load the plugins installed on the machine (entry points).
    """

    plugin: ClassVar[Any] = None
    plugin_name: ClassVar[str | None] = None
    use_installed_plugins: ClassVar[bool] = False

    @pytest.fixture(autouse=True)
    def contract_plugin_manager(self) -> Iterator[PluginManager]:
        """The isolated manager of this test, with :attr:`plugin` registered and required to load."""
        with isolated_plugin_manager(entry_points=self.use_installed_plugins) as pm:
            if self.plugin is None:
                yield pm
            else:
                with register_plugin(self.plugin, self.plugin_name, manager=pm):
                    yield pm

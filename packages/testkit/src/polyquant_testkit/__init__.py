"""polyquant-testkit: pytest fixtures and conformance suites for polyquant plugins.

Installed, it registers itself with pytest (entry point ``pytest11: polyquant``), which provides the
fixtures ``plugin_manager``, ``installed_plugin_manager`` and ``registered``. The conformance suites
are plain classes: subclass one with a ``Test...`` name and set its properties.

The suites import torch; they are loaded on first access so that merely having the pytest plugin
installed costs nothing.

Example:
    >>> from polyquant_testkit import FormatContract
    >>> class TestMyFormat(FormatContract):
    ...     format_name = "int4"
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polyquant_testkit.isolation import PluginStatusError, isolated_plugin_manager, register_plugin

if TYPE_CHECKING:
    from polyquant_testkit.contracts import (
        AdapterContract,
        FormatContract,
        KernelContract,
        PluginContract,
        QuantizerContract,
    )

__version__ = "0.1.0"

_CONTRACTS = ("AdapterContract", "FormatContract", "KernelContract", "PluginContract", "QuantizerContract")

__all__ = [
    "AdapterContract",
    "FormatContract",
    "KernelContract",
    "PluginContract",
    "PluginStatusError",
    "QuantizerContract",
    "__version__",
    "isolated_plugin_manager",
    "register_plugin",
]


def __getattr__(name: str) -> Any:
    """Load the conformance suites on first use."""
    if name in _CONTRACTS:
        return getattr(importlib.import_module("polyquant_testkit.contracts"), name)
    raise AttributeError(f"module 'polyquant_testkit' has no attribute {name!r}")

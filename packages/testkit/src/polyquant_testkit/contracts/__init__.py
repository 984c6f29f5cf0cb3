"""Conformance suites: subclass one in a ``Test...`` class and set its properties.

Example:
    >>> from polyquant_testkit.contracts import FormatContract
    >>> class TestInt4(FormatContract):
    ...     format_name = "int4"
"""

from __future__ import annotations

from polyquant_testkit.contracts.adapters import AdapterContract
from polyquant_testkit.contracts.base import PluginContract
from polyquant_testkit.contracts.formats import FormatContract
from polyquant_testkit.contracts.kernels import KernelContract
from polyquant_testkit.contracts.quantizers import QuantizerContract

__all__ = ["AdapterContract", "FormatContract", "KernelContract", "PluginContract", "QuantizerContract"]

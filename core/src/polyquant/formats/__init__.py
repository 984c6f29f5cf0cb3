"""Tensor formats: element codecs, granularity, :class:`FormatSpec` and the format registry.

Formats are registered through the plugin system (the core's built-ins included), so :func:`get` and
:func:`available` see plugin formats too.

Example:
    >>> import torch, polyquant.formats as formats
    >>> spec = formats.get("int4").with_options(group_size=32)
    >>> spec.fake_quantize(torch.randn(4, 64)).shape
    torch.Size([4, 64])
    >>> "nvfp4" in formats.available()
    True
"""

from __future__ import annotations

from polyquant.formats.codec import ElementCodec
from polyquant.formats.elements import (
    DYNAMIC8,
    E8M0,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    NF4,
    NF4_LEVELS,
    BinaryElement,
    CodebookElement,
    E8M0Element,
    FloatElement,
    IntElement,
    LUTElement,
    TernaryElement,
    element_from_dict,
)
from polyquant.formats.granularity import Granularity
from polyquant.formats.spec import FormatSpec, QParams

__all__ = [
    "DYNAMIC8",
    "E8M0",
    "FP4_E2M1",
    "FP6_E2M3",
    "FP6_E3M2",
    "FP8_E4M3",
    "FP8_E5M2",
    "NF4",
    "NF4_LEVELS",
    "BinaryElement",
    "CodebookElement",
    "E8M0Element",
    "ElementCodec",
    "FloatElement",
    "FormatSpec",
    "Granularity",
    "IntElement",
    "LUTElement",
    "QParams",
    "TernaryElement",
    "available",
    "element_from_dict",
    "get",
]


def get(name: str) -> FormatSpec:
    """The registered format called ``name`` (built-in or from a plugin).

    Raises:
        FormatError: for an unknown name; the message lists the known formats.

    Example:
        >>> get("nf4").granularity
        Granularity(kind='group', axis=0, group_size=64, block=(0, 0))
    """
    from polyquant.plugins import get_plugin_manager

    return get_plugin_manager().get_format(name)


def available() -> list[str]:
    """Names of all registered formats, sorted."""
    from polyquant.plugins import get_plugin_manager

    return sorted(get_plugin_manager().get_formats())

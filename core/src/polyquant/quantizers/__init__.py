"""Weight quantizers (RTN, MSE clipping search) and activation observers.

Quantizers implement :class:`Quantizer` and are registered as :class:`~polyquant.plugins.QuantizerInfo`
records (the core registers ``rtn`` and ``mse``; plugins add GPTQ, AWQ, ...). Recipes name them in
``method`` and pass ``method_args`` to their factory.

Example:
    >>> from polyquant.quantizers import make_quantizer
    >>> make_quantizer("rtn").name
    'rtn'
"""

from __future__ import annotations

from polyquant.plugins.records import QuantizerInfo
from polyquant.quantizers.mse import MSEQuantizer
from polyquant.quantizers.observers import (
    ActivationObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)
from polyquant.quantizers.protocol import Quantizer, make_quantizer
from polyquant.quantizers.rtn import RTNQuantizer

__all__ = [
    "ActivationObserver",
    "MSEObserver",
    "MSEQuantizer",
    "MinMaxObserver",
    "PercentileObserver",
    "Quantizer",
    "RTNQuantizer",
    "builtin_quantizers",
    "make_observer",
    "make_quantizer",
]


def builtin_quantizers() -> list[QuantizerInfo]:
    """The core's quantizers, registered by :mod:`polyquant.builtins`."""
    return [
        QuantizerInfo("rtn", RTNQuantizer, "round to nearest with min-max / absmax scales"),
        QuantizerInfo(
            "mse", MSEQuantizer, "per-group clipping search minimizing |W - Q(W)|^p (args: grid, norm, maxshrink)"
        ),
    ]

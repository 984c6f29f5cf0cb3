"""Weight quantizers (RTN, MSE clipping search, GPTQ, AWQ, HQQ, k-means codebooks) and activation observers.

Quantizers implement :class:`Quantizer` and are registered as :class:`~polyquant.plugins.QuantizerInfo`
records (the core registers ``rtn``, ``mse``, ``gptq``, ``awq``, ``hqq`` and ``kmeans``; plugins add their
own). Recipes name them in ``method`` and pass ``method_args`` to their factory.

Example:
    >>> from polyquant.quantizers import make_quantizer
    >>> make_quantizer("rtn").name
    'rtn'
"""

from __future__ import annotations

from polyquant.plugins.records import QuantizerInfo
from polyquant.quantizers.awq import AWQQuantizer
from polyquant.quantizers.gptq import GPTQQuantizer, QuantizationFallbackWarning
from polyquant.quantizers.hqq import HQQQuantizer
from polyquant.quantizers.kmeans import KMeansQuantizer
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
    "AWQQuantizer",
    "ActivationObserver",
    "GPTQQuantizer",
    "HQQQuantizer",
    "KMeansQuantizer",
    "MSEObserver",
    "MSEQuantizer",
    "MinMaxObserver",
    "PercentileObserver",
    "QuantizationFallbackWarning",
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
        QuantizerInfo(
            "gptq",
            GPTQQuantizer,
            "second-order error feedback from calibration Hessians (args: block_size, damp, act_order, static_groups)",
            needs_calibration=True,
        ),
        QuantizerInfo(
            "awq",
            AWQQuantizer,
            "activation-aware scales folded into the norms, then clip search (args: clip, steps, grid, max_rows)",
            needs_calibration=True,
        ),
        QuantizerInfo(
            "hqq",
            HQQQuantizer,
            "calibration-free half-quadratic zero-point optimization (args: iters, p, beta, kappa, early_stop)",
        ),
        QuantizerInfo(
            "kmeans",
            KMeansQuantizer,
            "SqueezeLLM: sensitivity-weighted k-means codebooks (args: sensitivity, iters, tol, init, restarts, seed)",
        ),
    ]

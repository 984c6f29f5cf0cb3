"""KV-cache quantization, independent of any model library.

* :mod:`~polyquant.kvcache.lloyd_max` — Lloyd–Max scalar codebooks (Gaussian, exact sphere coordinate).
* :mod:`~polyquant.kvcache.rotation` — the :class:`Rotation` protocol and seeded Haar rotations.
* :mod:`~polyquant.kvcache.turboquant` — TurboQuant-MSE / -prod, with the outlier channel split.
* :mod:`~polyquant.kvcache.kivi` — asymmetric integer quantization per channel (keys) or per token.
* :mod:`~polyquant.kvcache.fp8` — FP8 E4M3/E5M2 with per-token or per-tensor scales.
* :mod:`~polyquant.kvcache.cache` — :class:`KVFormat` and :class:`QuantizedKVCache` (append, read,
  attention scores, exact memory accounting). Keys are appended **after RoPE**.
* :mod:`~polyquant.kvcache.registry` — :func:`get` / :func:`available` over the formats registered
  through the ``polyquant_register_kv_formats`` hook (built-ins: ``fp8_e4m3``, ``int4``, ``kivi2``,
  ``turbo3``, ``turbo2.5``, ``turbo3-prod``, ...).

Example:
    >>> import torch
    >>> from polyquant import kvcache
    >>> cache = kvcache.get("turbo4-prod").cache()
    >>> cache.append(torch.randn(1, 8, 100, 128), torch.randn(1, 8, 100, 128))
    >>> round(cache.bits_per_element, 4)  # (4.25 + 4.125) / 2
    4.1875
"""

from __future__ import annotations

from polyquant.kvcache.base import KVQuantizerConfig, KVTensorQuantizer
from polyquant.kvcache.cache import KVFormat, QuantizedKVCache
from polyquant.kvcache.fp8 import FP8KVConfig, FP8KVQuantizer
from polyquant.kvcache.kivi import IntKVConfig, IntKVQuantizer, kivi_configs
from polyquant.kvcache.lloyd_max import LloydMaxCodebook, coordinate_codebook, gaussian_codebook, sphere_codebook
from polyquant.kvcache.registry import available, fp8_format, get, int_format, kivi_format, turbo_format
from polyquant.kvcache.rotation import (
    HadamardRotation,
    MatrixRotation,
    Rotation,
    RotationFactory,
    hadamard_rotation,
    random_orthogonal,
)
from polyquant.kvcache.turboquant import TurboQuantConfig, TurboQuantQuantizer

__all__ = [
    "FP8KVConfig",
    "FP8KVQuantizer",
    "HadamardRotation",
    "IntKVConfig",
    "IntKVQuantizer",
    "KVFormat",
    "KVQuantizerConfig",
    "KVTensorQuantizer",
    "LloydMaxCodebook",
    "MatrixRotation",
    "QuantizedKVCache",
    "Rotation",
    "RotationFactory",
    "TurboQuantConfig",
    "TurboQuantQuantizer",
    "available",
    "coordinate_codebook",
    "fp8_format",
    "gaussian_codebook",
    "get",
    "hadamard_rotation",
    "int_format",
    "kivi_configs",
    "kivi_format",
    "random_orthogonal",
    "sphere_codebook",
    "turbo_format",
]

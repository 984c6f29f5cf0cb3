"""polyquant: quantization for PyTorch models, with domain plugins.

The public API is small:

* :func:`polyquant.quantize` — quantize any ``nn.Module`` with a recipe or preset name.
* :func:`polyquant.save` / :func:`polyquant.load` — safetensors + JSON checkpoints.
* :mod:`polyquant.formats` — tensor formats (``polyquant.formats.get("mxfp4")``).
* :mod:`polyquant.kernels` — kernel dispatch (``polyquant.kernels.linear``, ``explain``, ``use``).
* :mod:`polyquant.plugins` — the plugin system.

Example:
    >>> import torch, polyquant
    >>> model = torch.nn.Sequential(torch.nn.Linear(128, 128))
    >>> model, report = polyquant.quantize(model, "w8a16")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polyquant.errors import (
    CalibrationError,
    CheckpointError,
    FormatError,
    KernelError,
    PluginConflictError,
    PluginError,
    PolyquantError,
    RecipeError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from polyquant.api import QuantizationReport, quantize
    from polyquant.checkpoint import load, save
    from polyquant.qtensor import QTensor
    from polyquant.recipes import Recipe

_LAZY = {
    "quantize": "polyquant.api",
    "QuantizationReport": "polyquant.api",
    "save": "polyquant.checkpoint",
    "load": "polyquant.checkpoint",
    "QTensor": "polyquant.qtensor",
    "Recipe": "polyquant.recipes",
}

__all__ = [
    "CalibrationError",
    "CheckpointError",
    "FormatError",
    "KernelError",
    "PluginConflictError",
    "PluginError",
    "PolyquantError",
    "QTensor",
    "QuantizationReport",
    "Recipe",
    "RecipeError",
    "__version__",
    "load",
    "quantize",
    "save",
]


def __getattr__(name: str) -> Any:
    """Import heavy submodules on first use so ``import polyquant`` stays cheap."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("formats", "kernels", "plugins", "nn", "quantizers", "recipes", "packing", "kvcache", "transforms"):
        return importlib.import_module(f"polyquant.{name}")
    raise AttributeError(f"module 'polyquant' has no attribute {name!r}")

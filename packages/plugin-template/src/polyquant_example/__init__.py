"""polyquant-example: a complete, minimal third-party polyquant plugin to copy.

It contributes the ``int4_pow2`` format (:mod:`polyquant_example.format`), a CPU ``linear`` kernel for it
(:mod:`polyquant_example.kernel`), a recipe preset and the ``polyquant example`` commands
(:mod:`polyquant_example.cli`), all registered in :mod:`polyquant_example.plugin`.

Example:
    >>> import torch, polyquant
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    >>> recipe = {"weights": {"format": "int4_pow2"}}
    >>> model, report = polyquant.quantize(model, recipe, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""polyquant-protein: protein language models for polyquant (skeleton).

The distribution registers the plugin ``protein`` in the ``polyquant`` entry point group
(:mod:`polyquant_protein.plugin`). Today it contributes only the ``polyquant protein`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
protein language models arrive with later issues.

Example:
    >>> import polyquant_protein
    >>> polyquant_protein.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant protein``) and the suffix of its distribution.
DOMAIN = "protein"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-protein"

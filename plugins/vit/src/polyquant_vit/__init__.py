"""polyquant-vit: vision transformers for polyquant (skeleton).

The distribution registers the plugin ``vit`` in the ``polyquant`` entry point group
(:mod:`polyquant_vit.plugin`). Today it contributes only the ``polyquant vit`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
vision transformers arrive with later issues.

Example:
    >>> import polyquant_vit
    >>> polyquant_vit.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant vit``) and the suffix of its distribution.
DOMAIN = "vit"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-vit"

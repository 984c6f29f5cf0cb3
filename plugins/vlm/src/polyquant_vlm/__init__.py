"""polyquant-vlm: vision-language models for polyquant (skeleton).

The distribution registers the plugin ``vlm`` in the ``polyquant`` entry point group
(:mod:`polyquant_vlm.plugin`). Today it contributes only the ``polyquant vlm`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
vision-language models arrive with later issues.

Example:
    >>> import polyquant_vlm
    >>> polyquant_vlm.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant vlm``) and the suffix of its distribution.
DOMAIN = "vlm"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-vlm"

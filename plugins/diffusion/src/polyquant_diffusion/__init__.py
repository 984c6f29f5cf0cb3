"""polyquant-diffusion: diffusion models for polyquant (skeleton).

The distribution registers the plugin ``diffusion`` in the ``polyquant`` entry point group
(:mod:`polyquant_diffusion.plugin`). Today it contributes only the ``polyquant diffusion`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
diffusion models arrive with later issues.

Example:
    >>> import polyquant_diffusion
    >>> polyquant_diffusion.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant diffusion``) and the suffix of its distribution.
DOMAIN = "diffusion"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-diffusion"

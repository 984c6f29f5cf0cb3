"""polyquant-ssm: state-space models for polyquant (skeleton).

The distribution registers the plugin ``ssm`` in the ``polyquant`` entry point group
(:mod:`polyquant_ssm.plugin`). Today it contributes only the ``polyquant ssm`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
state-space models arrive with later issues.

Example:
    >>> import polyquant_ssm
    >>> polyquant_ssm.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant ssm``) and the suffix of its distribution.
DOMAIN = "ssm"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-ssm"

"""polyquant-llm: large language models for polyquant (skeleton).

The distribution registers the plugin ``llm`` in the ``polyquant`` entry point group
(:mod:`polyquant_llm.plugin`). Today it contributes only the ``polyquant llm`` command group,
whose ``info`` command reports the plugin's version and dependencies; quantization features for
large language models arrive with later issues.

Example:
    >>> import polyquant_llm
    >>> polyquant_llm.__version__
    '0.1.0'
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "DOMAIN", "__version__"]

__version__ = "0.1.0"

#: The plugin's name: its entry point, its command group (``polyquant llm``) and the suffix of its distribution.
DOMAIN = "llm"

#: The distribution that ships this package.
DISTRIBUTION = "polyquant-llm"

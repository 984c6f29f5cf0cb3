"""Command line of polyquant-vlm: ``polyquant vlm ...`` and the ``polyquant-vlm`` console script.

The group has one command today, ``info`` (built by :func:`polyquant.cli.domain.domain_group`): the
plugin's version, each dependency's installed version and whether it imports (and why not), and an honest
statement that the plugin has no quantization features yet.

Example:
    From a shell::

        $ polyquant vlm info
        $ polyquant-vlm info --json
"""

from __future__ import annotations

from polyquant.cli.domain import Dependency, DependencyStatus, domain_group
from polyquant.cli.domain import probe as _probe
from polyquant.cli.main import run_domain_cli
from polyquant_vlm import DISTRIBUTION, DOMAIN, __version__

__all__ = ["DEPENDENCIES", "FEATURES", "Dependency", "DependencyStatus", "group", "main", "probe"]

#: What the plugin can do today (shown by ``info``).
FEATURES = "no quantization features yet: this skeleton contributes only the `polyquant vlm` command group"

#: Everything this plugin needs, in the order ``info`` shows it.
DEPENDENCIES: tuple[Dependency, ...] = (
    Dependency("polyquant-core", "polyquant"),
    Dependency("transformers", "transformers"),
    Dependency("accelerate", "accelerate"),
)


def probe(dependency: Dependency) -> DependencyStatus:
    """:func:`polyquant.cli.domain.probe` with this plugin's extras in the suggested fixes."""
    return _probe(dependency, DISTRIBUTION)


#: The ``polyquant vlm`` command group.
group = domain_group(
    DOMAIN,
    DISTRIBUTION,
    __version__,
    help="Vision-language models (skeleton: no quantization features yet).",
    dependencies=lambda: DEPENDENCIES,  # read when `info` runs
    features=FEATURES,
)

#: The console script ``polyquant-vlm``: this group on its own, with polyquant's ``--debug`` and error style.
main = run_domain_cli(DOMAIN)

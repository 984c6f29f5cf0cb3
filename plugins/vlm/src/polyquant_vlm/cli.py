"""Command line of polyquant-vlm: ``polyquant vlm ...`` and the ``polyquant-vlm`` console script.

The group has one command today, ``info``: the plugin's version, each dependency's installed version
and whether it imports (and why not), and an honest statement that the plugin has no quantization
features yet. Dependencies are imported only when ``info`` runs, never when the plugin loads.

Example:
    From a shell::

        $ polyquant vlm info
        $ polyquant-vlm info --json
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from dataclasses import asdict, dataclass

import click

from polyquant.cli.main import run_domain_cli
from polyquant_vlm import DISTRIBUTION, DOMAIN, __version__

__all__ = ["DEPENDENCIES", "FEATURES", "Dependency", "DependencyStatus", "group", "main", "probe"]

#: What the plugin can do today (shown by ``info``).
FEATURES = "no quantization features yet: this skeleton contributes only the `polyquant vlm` command group"


@dataclass(frozen=True)
class Dependency:
    """A distribution the plugin uses, and the module it is imported as.

    Attributes:
        distribution: the name ``pip`` installs it by.
        module: the top-level module it is imported as.
        extra: the extra of this plugin that installs it, ``None`` for a required dependency.
        note: shown next to it when it is missing (for instance the platforms it supports).

    Example:
        >>> Dependency("fair-esm", "esm").module
        'esm'
    """

    distribution: str
    module: str
    extra: str | None = None
    note: str = ""


@dataclass(frozen=True)
class DependencyStatus:
    """What :func:`probe` found out about one :class:`Dependency`.

    Attributes:
        distribution: the dependency's distribution name.
        module: the module that was imported.
        required: ``False`` for dependencies installed by an extra.
        version: installed version, ``None`` when it is not installed.
        importable: whether ``import <module>`` succeeded.
        detail: ``"ok"``, or why it is unusable and how to fix it.

    Example:
        >>> probe(Dependency("click", "click")).importable
        True
    """

    distribution: str
    module: str
    required: bool
    version: str | None
    importable: bool
    detail: str


#: Everything this plugin needs, in the order ``info`` shows it.
DEPENDENCIES: tuple[Dependency, ...] = (
    Dependency("polyquant-core", "polyquant"),
    Dependency("transformers", "transformers"),
    Dependency("accelerate", "accelerate"),
)


def probe(dependency: Dependency) -> DependencyStatus:
    """Look up the installed version of ``dependency`` and try to import it.

    Args:
        dependency: what to check.

    Returns:
        Its status; ``detail`` names the fix when it is missing or broken.

    Example:
        >>> probe(Dependency("no-such-distribution", "no_such_module")).detail
        "not installed: pip install 'no-such-distribution'"
    """
    required = dependency.extra is None
    try:
        version: str | None = importlib.metadata.version(dependency.distribution)
    except importlib.metadata.PackageNotFoundError:
        fix = (
            f"pip install '{DISTRIBUTION}[{dependency.extra}]'"
            if dependency.extra
            else f"pip install '{dependency.distribution}'"
        )
        detail = f"not installed: {fix}" + (f" ({dependency.note})" if dependency.note else "")
        return DependencyStatus(dependency.distribution, dependency.module, required, None, False, detail)
    try:
        importlib.import_module(dependency.module)
    except Exception as exc:  # noqa: BLE001 - any failure (ImportError, missing CUDA libraries, ...) is reported
        detail = f"installed but `import {dependency.module}` failed: {type(exc).__name__}: {exc}"
        return DependencyStatus(dependency.distribution, dependency.module, required, version, False, detail)
    return DependencyStatus(dependency.distribution, dependency.module, required, version, True, "ok")


@click.group(name=DOMAIN, help="Vision-language models (skeleton: no quantization features yet).")
def group() -> None:
    """The ``polyquant vlm`` command group."""


@group.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(as_json: bool) -> None:
    """Show the plugin's version, its dependencies and what it can do today.

    Exits with status 1 when a required dependency is missing or fails to import.
    """
    statuses = [probe(dependency) for dependency in DEPENDENCIES]
    if as_json:
        payload = {
            "plugin": DOMAIN,
            "distribution": DISTRIBUTION,
            "version": __version__,
            "features": FEATURES,
            "dependencies": [asdict(status) for status in statuses],
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(f"{DISTRIBUTION} {__version__} (polyquant plugin {DOMAIN!r})")
        click.echo("dependencies:")
        width = max(len(status.distribution) for status in statuses)
        for status in statuses:
            kind = "" if status.required else " (optional)"
            click.echo(f"  {status.distribution:<{width}}  {status.version or '-':<12} {status.detail}{kind}")
        click.echo(FEATURES)
    if any(status.required and not status.importable for status in statuses):
        raise click.exceptions.Exit(1)


#: The console script ``polyquant-vlm``: this group on its own, with polyquant's ``--debug`` and error style.
main = run_domain_cli(DOMAIN)

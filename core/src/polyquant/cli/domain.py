"""The command group every domain plugin starts from: ``polyquant <domain> info`` and dependency probing.

A domain plugin (``polyquant-llm``, ``polyquant-diffusion``, ...) declares its dependencies and what it can
do; :func:`domain_group` builds its ``click`` group with an ``info`` command that shows the plugin's version,
each dependency's installed version and whether it imports (and why not), and exits with status 1 when a
required dependency is unusable. Dependencies are imported only when ``info`` runs, never when the plugin
loads. The plugin adds its own commands to the returned group.

Example:
    >>> group = domain_group("toy", "polyquant-toy", "0.1.0", help="Toy models.",
    ...                      dependencies=(Dependency("click", "click"),), features="nothing yet")
    >>> sorted(group.commands)
    ['info']
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import click

__all__ = ["Dependency", "DependencyStatus", "domain_group", "probe"]


@dataclass(frozen=True)
class Dependency:
    """A distribution a plugin uses, and the module it is imported as.

    Attributes:
        distribution: the name ``pip`` installs it by.
        module: the top-level module it is imported as.
        extra: the extra of the plugin that installs it, ``None`` for a required dependency.
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


def probe(dependency: Dependency, plugin_distribution: str = "polyquant") -> DependencyStatus:
    """Look up the installed version of ``dependency`` and try to import it.

    Args:
        dependency: what to check.
        plugin_distribution: the plugin whose extra installs optional dependencies (named in the fix).

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
            f"pip install '{plugin_distribution}[{dependency.extra}]'"
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


def domain_group(
    domain: str,
    distribution: str,
    version: str,
    *,
    help: str,
    dependencies: Sequence[Dependency] | Callable[[], Sequence[Dependency]],
    features: str,
) -> click.Group:
    """The ``polyquant <domain>`` group with its ``info`` command (see the module docstring).

    ``dependencies`` may be a function returning them, read each time ``info`` runs.
    """

    @click.group(name=domain, help=help)
    def group() -> None:
        """The plugin's command group."""

    @group.command()
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
    def info(as_json: bool) -> None:
        """Show the plugin's version, its dependencies and what it can do today.

        Exits with status 1 when a required dependency is missing or fails to import.
        """
        declared = dependencies() if callable(dependencies) else dependencies
        statuses = [probe(dependency, distribution) for dependency in declared]
        if as_json:
            payload = {
                "plugin": domain,
                "distribution": distribution,
                "version": version,
                "features": features,
                "dependencies": [asdict(status) for status in statuses],
            }
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(f"{distribution} {version} (polyquant plugin {domain!r})")
            click.echo("dependencies:")
            width = max(len(status.distribution) for status in statuses)
            for status in statuses:
                kind = "" if status.required else " (optional)"
                click.echo(f"  {status.distribution:<{width}}  {status.version or '-':<12} {status.detail}{kind}")
            click.echo(features)
        if any(status.required and not status.importable for status in statuses):
            raise click.exceptions.Exit(1)

    return group

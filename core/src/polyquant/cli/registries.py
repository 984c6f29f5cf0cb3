"""Commands that list what the installed plugins provide: ``plugins``, ``formats``, ``quantizers``, ``recipes``.

Every listing has ``--json`` for scripts; the tables are for people.

Example:
    $ polyquant plugins --strict
    $ polyquant formats --json
    $ polyquant recipes show w4a16-g128
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from polyquant.cli.output import print_json, print_table, styled, warn
from polyquant.plugins import PluginInfo, get_plugin_manager

__all__ = ["formats", "plugins", "quantizers", "recipe_summary", "recipes"]

_STATUS_STYLE = {"loaded": "green", "failed": "red", "conflict": "red", "disabled": "yellow"}


def _contributions_cell(info: PluginInfo, limit: int = 4) -> str:
    parts = []
    for kind, names in sorted(info.contributions.items()):
        if not names:
            continue
        label = kind.replace("_", " ")
        shown = ", ".join(names) if len(names) <= limit else f"{len(names)} ({', '.join(names[:limit])}, ...)"
        parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _shadowed_commands() -> list[str]:
    """Plugin commands that a built-in command of the same name hides (they are not mounted)."""
    from polyquant.cli.main import BUILTIN_COMMANDS

    pm = get_plugin_manager()
    notes = []
    for name in sorted(pm.get_commands()):
        if name in BUILTIN_COMMANDS:
            notes.append(
                f"command {name!r} from {pm.provider('command', name)} is hidden by the built-in `polyquant {name}`; "
                f"the plugin should rename it"
            )
    return notes


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any plugin failed or conflicts with another.")
def plugins(as_json: bool, strict: bool) -> None:
    """List plugins: distribution, version, status, error and what each contributes.

    Plugins are loaded from the `polyquant` entry point group; POLYQUANT_DISABLE_PLUGINS=a,b skips
    some and POLYQUANT_LOAD_PLUGINS=a,b loads only those (an empty value loads only the core).
    """
    pm = get_plugin_manager()
    infos = pm.plugins()
    if as_json:
        print_json([info.as_dict() for info in infos])
    else:
        rows = []
        for info in infos:
            status = styled(info.status, _STATUS_STYLE.get(info.status, ""))
            rows.append(
                [info.name, info.distribution, info.version, status, info.error or "", _contributions_cell(info)]
            )
        print_table("Plugins", ["name", "distribution", "version", "status", "error", "contributes"], rows)
        for note in _shadowed_commands():
            warn(note)
    if strict:
        pm.check()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def formats(as_json: bool) -> None:
    """List tensor formats: name, element kind, bits, scale granularity and description."""
    pm = get_plugin_manager()
    specs = sorted(pm.get_formats().values(), key=lambda s: s.name)
    records = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "bits": spec.bits,
            "granularity": str(spec.granularity),
            "description": spec.description,
            "plugin": pm.provider("format", spec.name),
        }
        for spec in specs
    ]
    if as_json:
        print_json(records)
        return
    columns = ["name", "kind", "bits", "granularity", "description", "plugin"]
    print_table("Formats", columns, [[r[c] for c in columns] for r in records], right_align=["bits"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def quantizers(as_json: bool) -> None:
    """List weight quantization algorithms usable as a recipe's `method`."""
    pm = get_plugin_manager()
    infos = sorted(pm.get_quantizers().values(), key=lambda q: q.name)
    records = [
        {
            "name": q.name,
            "needs_calibration": q.needs_calibration,
            "description": q.description,
            "plugin": pm.provider("quantizer", q.name),
        }
        for q in infos
    ]
    if as_json:
        print_json(records)
        return
    rows = [[r["name"], "yes" if r["needs_calibration"] else "no", r["description"], r["plugin"]] for r in records]
    print_table("Quantizers", ["name", "calibration", "description", "plugin"], rows)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def transforms(as_json: bool) -> None:
    """List model transforms usable in a recipe's `transforms` (rotations, smoothing)."""
    pm = get_plugin_manager()
    records = [
        {
            "name": t.name,
            "needs_calibration": t.needs_calibration,
            "description": t.description,
            "plugin": pm.provider("transform", t.name),
        }
        for t in sorted(pm.get_transforms().values(), key=lambda t: t.name)
    ]
    if as_json:
        print_json(records)
        return
    rows = [[r["name"], "yes" if r["needs_calibration"] else "no", r["description"], r["plugin"]] for r in records]
    print_table("Transforms", ["name", "calibration", "description", "plugin"], rows)


@click.command("kv-formats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def kv_formats(as_json: bool) -> None:
    """List KV-cache formats usable as a recipe's `kv_cache.format` (see polyquant.kvcache)."""
    pm = get_plugin_manager()
    records = [
        {"name": k.name, "description": k.description, "plugin": pm.provider("kv_format", k.name)}
        for k in sorted(pm.get_kv_formats().values(), key=lambda k: k.name)
    ]
    if as_json:
        print_json(records)
        return
    print_table("KV-cache formats", ["name", "description", "plugin"], [list(r.values()) for r in records])


def recipe_summary(recipe: Mapping[str, Any]) -> str:
    """One line describing a recipe mapping, e.g. ``"W: int4 g128 (rtn) · A: int8 · KV: -"``.

    Args:
        recipe: a recipe as a mapping (the form presets and recipe files use).

    Example:
        >>> recipe_summary({"weights": {"format": "int4", "group_size": 128}})
        'W: int4 g128'
    """
    parts = []
    weights = recipe.get("weights")
    if isinstance(weights, Mapping) and weights.get("format"):
        text = f"W: {weights['format']}"
        if weights.get("group_size"):
            text += f" g{weights['group_size']}"
        if weights.get("symmetric") is False:
            text += " asym"
        if recipe.get("method") or weights.get("method"):
            text += f" ({recipe.get('method') or weights.get('method')})"
        parts.append(text)
    for key, label in (("activations", "A"), ("kv_cache", "KV")):
        section = recipe.get(key)
        if isinstance(section, Mapping) and section.get("format"):
            parts.append(f"{label}: {section['format']}")
    if recipe.get("overrides"):
        parts.append(f"{len(recipe['overrides'])} override(s)")
    return " · ".join(parts) if parts else "(no quantization)"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def recipes(ctx: click.Context, as_json: bool) -> None:
    """List named recipes (presets); `polyquant recipes show NAME` prints one as YAML."""
    if ctx.invoked_subcommand is not None:
        return
    pm = get_plugin_manager()
    presets = sorted(pm.get_recipes().values(), key=lambda p: p.name)
    records = [
        {
            "name": p.name,
            "summary": recipe_summary(p.recipe),
            "description": p.description,
            "plugin": pm.provider("recipe", p.name),
            "recipe": dict(p.recipe),
        }
        for p in presets
    ]
    if as_json:
        print_json(records)
        return
    columns = ["name", "summary", "description", "plugin"]
    print_table("Recipes", columns, [[r[c] for c in columns] for r in records])


@recipes.command("show")
@click.argument("name")
def show_recipe(name: str) -> None:
    """Print recipe NAME (a preset name or a recipe file) as YAML, with every default spelled out."""
    from polyquant.recipes import resolve

    click.echo(resolve(name).to_yaml().rstrip())

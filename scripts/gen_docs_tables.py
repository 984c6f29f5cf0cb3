"""Regenerate the generated sections of the docs from the code, so the docs cannot drift from it.

* ``docs/formats.md``: the table of built-in formats (the core's format registry).
* ``docs/recipes.md``: the table of built-in presets (the core's recipe registry).
* ``docs/cli.md``: the ``--help`` of every built-in ``polyquant`` command.

Each section sits between ``<!-- BEGIN GENERATED: <name> ... -->`` and ``<!-- END GENERATED: <name> -->``; the
text around it is written by hand. Only the core's own records are listed (entry points are not loaded), so
the output does not depend on which plugins happen to be installed.

Usage::

    python scripts/gen_docs_tables.py           # rewrite the sections
    python scripts/gen_docs_tables.py --check   # exit 1 and name the stale files (tests/test_docs.py runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click

from polyquant.cli.main import BUILTIN_COMMANDS, cli
from polyquant.cli.registries import recipe_summary
from polyquant.plugins import PluginManager

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: The weight shape whose exact bits/weight the formats table shows.
REFERENCE_SHAPE = (4096, 4096)

#: Width of the generated ``--help`` texts.
HELP_WIDTH = 100


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _core() -> PluginManager:
    return PluginManager(entry_points=False)


def formats_table() -> str:
    """Markdown table of the built-in formats: name, kind, element bits, granularity, scale, bits/weight."""
    rows: list[list[object]] = []
    for name, spec in sorted(_core().get_formats().items()):
        scale = "none" if spec.scale_method == "none" else f"{spec.scale_dtype} {spec.scale_method}"
        if spec.tensor_scale:
            scale += " + fp32 tensor scale"
        if not spec.symmetric:
            scale += ", asymmetric"
        rows.append(
            [
                f"`{name}`",
                spec.kind,
                spec.bits,
                str(spec.granularity),
                scale,
                f"{spec.bits_per_weight(REFERENCE_SHAPE):.3f}",
                spec.description,
            ]
        )
    return _table(["format", "kind", "bits", "granularity", "scale", "bits/weight", "description"], rows)


def recipes_table() -> str:
    """Markdown table of the built-in presets: name, one-line summary, description."""
    rows: list[list[object]] = [
        [f"`{name}`", recipe_summary(preset.recipe), preset.description]
        for name, preset in sorted(_core().get_recipes().items())
    ]
    return _table(["preset", "summary", "description"], rows)


def cli_reference() -> str:
    """The ``--help`` text of every built-in command, one section each."""
    sections = []
    # The root's context settings (e.g. ``-h`` for help) as the real CLI has them, at a fixed width.
    settings = {**cli.context_settings, "terminal_width": HELP_WIDTH, "max_content_width": HELP_WIDTH}
    root = click.Context(cli, info_name="polyquant", **settings)
    for name in sorted(BUILTIN_COMMANDS):
        command = cli.get_command(root, name)
        if command is None:
            raise SystemExit(f"built-in command {name!r} did not resolve")
        ctx = click.Context(command, info_name=name, parent=root)
        sections.append(f"### `polyquant {name}`\n\n```text\n{command.get_help(ctx).rstrip()}\n```")
    return "\n\n".join(sections)


#: Generated section name → (file under docs/, renderer).
SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {
    "formats": ("formats.md", formats_table),
    "recipes": ("recipes.md", recipes_table),
    "cli": ("cli.md", cli_reference),
}


def render(text: str, name: str, body: str) -> str:
    """Replace the body of section ``name`` in ``text``; ``ValueError`` when its markers are missing."""
    pattern = re.compile(rf"(<!-- BEGIN GENERATED: {name}\b[^>]*-->\n)(.*?)(<!-- END GENERATED: {name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"the markers of the generated section {name!r} are missing")
    return pattern.sub(lambda m: f"{m.group(1)}{body}\n{m.group(3)}", text, count=1)


def stale_files() -> dict[Path, str]:
    """Every docs file whose generated sections differ from the code, with its up-to-date text."""
    updated: dict[Path, str] = {}
    for name, (filename, renderer) in SECTIONS.items():
        path = DOCS / filename
        current = updated.get(path, path.read_text(encoding="utf-8"))
        updated[path] = render(current, name, renderer())
    return {path: text for path, text in updated.items() if text != path.read_text(encoding="utf-8")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit status 1)")
    args = parser.parse_args(argv)
    stale = stale_files()
    for path, text in stale.items():
        if args.check:
            print(f"{path.relative_to(DOCS.parent)} is out of date: run python scripts/gen_docs_tables.py")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"updated {path.relative_to(DOCS.parent)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

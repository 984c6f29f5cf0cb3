"""The README and the docs site say what the code does: generated tables are current, examples run,
commands exist, the site builds without warnings, and CI runs the README's test command."""

from __future__ import annotations

import difflib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from polyquant.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent

#: Pages whose ```python blocks are run, in order, one namespace per page.
EXECUTED_PAGES = ("README.md", "docs/index.md", "docs/quickstart.md", "docs/formats.md")

#: Pages whose `$ polyquant <command>` lines must name existing commands.
COMMAND_PAGES = (
    "README.md",
    "docs/index.md",
    "docs/install.md",
    "docs/quickstart.md",
    "docs/cli.md",
    "docs/recipes.md",
    "docs/development.md",
)


def _blocks(page: str, language: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs_tables", ROOT / "scripts" / "gen_docs_tables.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_current() -> None:
    stale = _load_generator().stale_files()
    diff = "".join(
        "".join(
            difflib.unified_diff(path.read_text(encoding="utf-8").splitlines(True), text.splitlines(True), str(path))
        )
        for path, text in stale.items()
    )
    assert not stale, f"run python scripts/gen_docs_tables.py; the docs differ from the code:\n{diff}"


def test_generated_sections_are_filled() -> None:
    for page, header in (("docs/formats.md", "| `int4` |"), ("docs/recipes.md", "| `w4a16-g128` |")):
        assert header in (ROOT / page).read_text(encoding="utf-8"), page
    assert "### `polyquant quantize`" in (ROOT / "docs/cli.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", EXECUTED_PAGES)
def test_python_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(page, "python")
    assert blocks, f"{page} has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_example_{Path(page).stem}"}
    for block in blocks:
        exec(compile(block, f"{page} example", "exec"), namespace)  # the docs' own examples


def test_documented_commands_exist() -> None:
    commands = set(cli.list_commands(click.Context(cli, info_name="polyquant")))
    documented = set()
    for page in COMMAND_PAGES:
        for block in _blocks(page, "console"):
            documented |= set(re.findall(r"^\$ polyquant ([a-z][a-z-]*)", block, re.MULTILINE))
    assert documented, "no `$ polyquant ...` lines found"
    assert documented <= commands, f"documented but missing: {sorted(documented - commands)}"


def test_readme_has_exactly_two_fresh_clone_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From a fresh clone", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (ROOT / shlex.split(command)[1]).is_file()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
    ci_commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert ci_commands == ["bash scripts/test.sh"]


def test_site_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # No --quiet: it hides warnings from --strict's count.
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()

"""Broken third-party plugins, discovered through real entry points, never break polyquant.

Each fixture under ``fixtures/plugins/`` is a tiny installed-looking distribution. For each one the CLI
(in a subprocess, as a user runs it) must list the plugin with its status and an explaining error, keep
every other command working, use none of the plugin's records, and honour ``POLYQUANT_DISABLE_PLUGINS``
and ``POLYQUANT_LOAD_PLUGINS``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polyquant.plugins import PluginManager


@dataclass(frozen=True)
class Scenario:
    directory: str
    plugin: str
    distribution: str
    status: str
    error_fragments: tuple[str, ...]


SCENARIOS = [
    Scenario(
        "import_error",
        "broken_import",
        "pq-broken-import",
        "failed",
        ("import of pq_broken_import failed", "ModuleNotFoundError", "polyquant_dependency_that_is_not_installed"),
    ),
    Scenario(
        "hook_raises",
        "broken_hook",
        "pq-broken-hook",
        "failed",
        ("polyquant_register_formats raised", "RuntimeError", "simulated bug in the plugin"),
    ),
    Scenario(
        "unknown_hook", "unknown_hook", "pq-unknown-hook", "failed", ("unknown hook", "polyquant_register_recipe")
    ),
    Scenario(
        "duplicate_name",
        "duplicate_name",
        "pq-duplicate-name",
        "conflict",
        ("quantizer 'rtn'", "'polyquant-core'", "'pq-duplicate-name'", "POLYQUANT_DISABLE_PLUGINS"),
    ),
    Scenario("malformed_record", "malformed_record", "pq-malformed-record", "failed", ("malformed record", "dict")),
    Scenario("bad_command", "bad_command", "pq-bad-command", "failed", ("CommandGroup 'bad'", "click.Command")),
]
IDS = [s.directory for s in SCENARIOS]

#: Records that the broken plugins contribute next to their broken part: none may ever be used.
LEAKED_RECIPES = ("broken-hook-preset", "duplicate-name-preset", "unknown-hook-preset", "malformed-preset")


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


def _by_name(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in listing}


@pytest.fixture(scope="module")
def all_broken(plugin_fixture_dirs: dict[str, Path]) -> list[Path]:
    assert set(plugin_fixture_dirs) == {s.directory for s in SCENARIOS}, "every fixture plugin needs a scenario"
    return list(plugin_fixture_dirs.values())


@pytest.fixture(scope="module")
def listing_with_all_broken(run_cli: Any, all_broken: list[Path]) -> dict[str, dict[str, Any]]:
    return _by_name(_json(run_cli("plugins", "--json", pythonpath=all_broken)))


# ------------------------------------------------------------------------------------------- in process
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_manager_isolates_broken_plugin(
    scenario: Scenario, plugin_fixture_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_fixture_dirs[scenario.directory]))
    with pytest.warns(RuntimeWarning) if scenario.status == "conflict" else contextlib.nullcontext():
        pm = PluginManager(env={})
        info = pm.plugin(scenario.plugin)
    assert (info.status, info.distribution, info.version) == (scenario.status, scenario.distribution, "0.1.0")
    assert info.contributions == {}
    for fragment in scenario.error_fragments:
        assert fragment in (info.error or ""), f"{fragment!r} missing from {info.error!r}"
    # the core is unaffected: its plugin is loaded and its registries are complete
    assert pm.plugin("core").status == "loaded"
    assert "int4" in pm.get_formats()
    assert pm.provider("quantizer", "rtn") == "polyquant-core"
    assert not set(LEAKED_RECIPES) & set(pm.get_recipes())


# ------------------------------------------------------------------------------------------- through the CLI
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_cli_lists_broken_plugin_with_its_error(
    scenario: Scenario, listing_with_all_broken: dict[str, dict[str, Any]]
) -> None:
    entry = listing_with_all_broken[scenario.plugin]
    assert entry["status"] == scenario.status
    assert entry["distribution"] == scenario.distribution
    assert entry["contributes"] == {}
    for fragment in scenario.error_fragments:
        assert fragment in entry["error"]
    assert listing_with_all_broken["core"]["status"] == "loaded"


def test_core_commands_still_work_next_to_broken_plugins(run_cli: Any, all_broken: list[Path]) -> None:
    formats = {f["name"]: f for f in _json(run_cli("formats", "--json", pythonpath=all_broken))}
    assert {"int4", "int8", "nf4", "mxfp4"} <= set(formats)
    assert formats["int4"]["plugin"] == "polyquant-core"
    helped = run_cli("--help", pythonpath=all_broken)
    assert helped.returncode == 0, helped.stderr
    assert "formats" in helped.stdout and "bad" not in helped.stdout.split()


def test_strict_fails_with_one_error_line(run_cli: Any, plugin_fixture_dirs: dict[str, Path]) -> None:
    result = run_cli("plugins", "--strict", pythonpath=[plugin_fixture_dirs["duplicate_name"]])
    assert result.returncode == 1
    assert "duplicate_name" in result.stdout  # the table is still printed
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "'polyquant-core'" in lines[0] and "'pq-duplicate-name'" in lines[0]
    assert "Traceback" not in result.stderr


def test_disable_plugins_env(run_cli: Any, all_broken: list[Path]) -> None:
    disabled = ["broken_import", "duplicate_name"]
    listing = _by_name(
        _json(
            run_cli("plugins", "--json", pythonpath=all_broken, env={"POLYQUANT_DISABLE_PLUGINS": ",".join(disabled)})
        )
    )
    for name in disabled:
        assert listing[name]["status"] == "disabled"
        assert "POLYQUANT_DISABLE_PLUGINS" in listing[name]["error"]
    assert listing["broken_hook"]["status"] == "failed"  # the others are still tried


def test_load_plugins_env_empty_loads_only_the_core(run_cli: Any, all_broken: list[Path]) -> None:
    env = {"POLYQUANT_LOAD_PLUGINS": ""}
    result = run_cli("plugins", "--json", "--strict", pythonpath=all_broken, env=env)
    listing = _by_name(_json(result))  # --strict passes: nothing that fails is loaded
    assert listing["core"]["status"] == "loaded"
    for scenario in SCENARIOS:
        assert listing[scenario.plugin]["status"] == "disabled"
        assert "POLYQUANT_LOAD_PLUGINS" in listing[scenario.plugin]["error"]


def test_load_plugins_env_selects(run_cli: Any, all_broken: list[Path]) -> None:
    env = {"POLYQUANT_LOAD_PLUGINS": "unknown_hook"}
    listing = _by_name(_json(run_cli("plugins", "--json", pythonpath=all_broken, env=env)))
    assert listing["unknown_hook"]["status"] == "failed"
    assert all(listing[s.plugin]["status"] == "disabled" for s in SCENARIOS if s.plugin != "unknown_hook")

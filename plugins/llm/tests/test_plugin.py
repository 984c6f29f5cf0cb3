"""polyquant-llm installs, loads through the plugin manager and contributes exactly its command group."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
from types import ModuleType

import pytest
from click.testing import CliRunner

import polyquant_llm
from polyquant.plugins import PluginManager
from polyquant_llm import cli, plugin

DOMAIN = "llm"
DISTRIBUTION = "polyquant-llm"
REQUIRED = ["transformers", "accelerate"]
OPTIONAL = []
MODULES = ["transformers", "accelerate"]


def _entry_point(group: str, name: str) -> importlib.metadata.EntryPoint:
    (entry_point,) = {ep.value: ep for ep in importlib.metadata.entry_points(group=group, name=name)}.values()
    return entry_point


def test_entry_point_resolves_to_the_plugin_module() -> None:
    entry_point = _entry_point("polyquant", DOMAIN)
    assert entry_point.value == "polyquant_llm.plugin"
    assert entry_point.dist is not None
    assert entry_point.dist.name == DISTRIBUTION
    assert entry_point.load() is plugin


def test_console_script_resolves_to_main() -> None:
    assert _entry_point("console_scripts", DISTRIBUTION).load() is cli.main


def test_version_matches_the_installed_metadata() -> None:
    assert polyquant_llm.__version__ == importlib.metadata.version(DISTRIBUTION) == "0.1.0"


def test_loads_through_entry_points_and_contributes_only_its_command_group() -> None:
    manager = PluginManager(builtins=False, env={"POLYQUANT_LOAD_PLUGINS": DOMAIN})
    info = manager.plugin(DOMAIN)
    assert (info.status, info.error) == ("loaded", None)
    assert (info.distribution, info.version) == (DISTRIBUTION, "0.1.0")
    assert dict(info.contributions) == {"command": (DOMAIN,)}
    assert manager.get_commands()[DOMAIN].command is cli.group
    for registry in (manager.get_formats(), manager.get_quantizers(), manager.get_recipes(), manager.get_adapters()):
        assert not registry


def test_loads_next_to_the_core_and_every_installed_plugin() -> None:
    info = PluginManager().plugin(DOMAIN)
    assert info.status == "loaded", info.error


def test_registers_by_hand_into_an_isolated_manager() -> None:
    manager = PluginManager(entry_points=False, builtins=False)
    info = manager.register(plugin, name=DOMAIN, distribution=DISTRIBUTION)
    assert info.status == "loaded"
    assert list(manager.get_commands()) == [DOMAIN]


def test_required_dependencies_are_installed_and_import() -> None:
    for module in MODULES:
        assert isinstance(importlib.import_module(module), ModuleType)
    statuses = {status.distribution: status for status in map(cli.probe, cli.DEPENDENCIES)}
    for distribution in ["polyquant-core", *REQUIRED]:
        status = statuses[distribution]
        assert status.required
        assert status.importable, status.detail
        assert status.version == importlib.metadata.version(distribution)
    assert all(not statuses[distribution].required for distribution in OPTIONAL)


def _specifiers(requirement: str) -> tuple[str, frozenset[str]]:
    """``"a<1,>=0.1; extra == 'x'"`` -> ``("a", {"<1", ">=0.1"})``."""
    name, specifiers = re.fullmatch(r"([A-Za-z0-9._-]+)([^;]*)(;.*)?", requirement.replace(" ", "")).groups()[:2]  # type: ignore[union-attr]
    return name, frozenset(filter(None, specifiers.split(",")))


def test_declared_dependencies_match_the_distribution_metadata() -> None:
    declared = dict(map(_specifiers, importlib.metadata.requires(DISTRIBUTION) or []))
    assert set(declared) == {dependency.distribution for dependency in cli.DEPENDENCIES}
    assert declared["polyquant-core"] == {">=0.1", "<1"}


def test_info_reports_version_dependencies_and_no_features() -> None:
    result = CliRunner().invoke(cli.group, ["info"])
    assert result.exit_code == 0, result.output
    assert f"{DISTRIBUTION} 0.1.0" in result.output
    assert "no quantization features yet" in result.output
    for distribution in ["polyquant-core", *REQUIRED]:
        line = next(line for line in result.output.splitlines() if line.strip().startswith(distribution))
        assert importlib.metadata.version(distribution) in line
        assert line.rstrip().endswith("ok")


def test_info_json_is_machine_readable() -> None:
    result = CliRunner().invoke(cli.group, ["info", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (payload["plugin"], payload["distribution"], payload["version"]) == (DOMAIN, DISTRIBUTION, "0.1.0")
    assert payload["features"].startswith("no quantization features yet")
    listed = {entry["distribution"]: entry for entry in payload["dependencies"]}
    assert set(listed) == {"polyquant-core", *REQUIRED, *OPTIONAL}
    assert all(listed[name]["importable"] for name in REQUIRED)


def test_probe_explains_a_missing_distribution_and_a_failing_import() -> None:
    missing = cli.probe(cli.Dependency("polyquant-no-such-distribution", "polyquant_no_such_module"))
    assert (missing.version, missing.importable) == (None, False)
    assert missing.detail == "not installed: pip install 'polyquant-no-such-distribution'"
    optional = cli.probe(cli.Dependency("polyquant-no-such-distribution", "x", extra="fast", note="CUDA only"))
    assert optional.detail == f"not installed: pip install '{DISTRIBUTION}[fast]' (CUDA only)"
    broken = cli.probe(cli.Dependency("click", "polyquant_no_such_module"))
    assert broken.version == importlib.metadata.version("click")
    assert not broken.importable
    assert "`import polyquant_no_such_module` failed: ModuleNotFoundError" in broken.detail


def test_info_fails_when_a_required_dependency_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "DEPENDENCIES", (cli.Dependency("polyquant-no-such-distribution", "nope"),))
    result = CliRunner().invoke(cli.group, ["info"])
    assert result.exit_code == 1
    assert "not installed: pip install 'polyquant-no-such-distribution'" in result.output


def test_console_script_runs_the_group_standalone() -> None:
    result = CliRunner().invoke(cli.main, ["info"], prog_name=DISTRIBUTION)
    assert result.exit_code == 0, result.output
    assert "no quantization features yet" in result.output
    assert "info" in CliRunner().invoke(cli.main, ["--help"]).output.split("Commands:")[1]


def test_mounted_as_polyquant_subcommand() -> None:
    from polyquant.cli.main import cli as polyquant_cli

    result = CliRunner().invoke(polyquant_cli, [DOMAIN, "info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["distribution"] == DISTRIBUTION

"""The plugin template, installed like any third-party plugin, works end to end through the real CLI."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    "example" not in {ep.name for ep in importlib.metadata.entry_points(group="polyquant")},
    reason="polyquant-example is not installed (pip install -e packages/plugin-template)",
)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_listed_as_loaded(run_cli: Any) -> None:
    listing = {p["name"]: p for p in json.loads(_ok(run_cli("plugins", "--json")).stdout)}
    example = listing["example"]
    assert (example["distribution"], example["status"], example["error"]) == ("polyquant-example", "loaded", None)
    assert example["contributes"] == {
        "format": ["int4_pow2"],
        "kernel": ["linear/cpu_int4_pow2"],
        "recipe": ["w4a16-pow2"],
        "command": ["example"],
    }


def test_quantize_a_model_with_its_format(run_cli: Any, model_fixture_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "pow2.json"
    recipe.write_text(json.dumps({"weights": {"format": "int4_pow2"}}))
    out = tmp_path / "ckpt"
    args = ("quantize", "pq_test_models:tiny_mlp", "--recipe", str(recipe), "--out", str(out), "--report", "report.md")
    result = _ok(run_cli(*args, pythonpath=[model_fixture_dir], cwd=tmp_path))
    assert "2 quantized, 0 skipped" in result.stdout
    report = (tmp_path / "report.md").read_text()
    assert report.count("| int4_pow2 |") == 2 and report.count("| cpu_int4_pow2 |") == 2

    summary = json.loads(_ok(run_cli("inspect", str(out), "--json")).stdout)
    assert summary["formats"] == {"int4_pow2": 2}
    assert [layer["bits_per_weight"] for layer in summary["layers"]] == [4.25, 4.25]


def test_disabling_the_plugin_removes_its_format(run_cli: Any, model_fixture_dir: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "pow2.json"
    recipe.write_text(json.dumps({"weights": {"format": "int4_pow2"}}))
    env = {"POLYQUANT_DISABLE_PLUGINS": "example"}
    result = run_cli("quantize", "pq_test_models:tiny_mlp", "-r", str(recipe), pythonpath=[model_fixture_dir], env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: weights.format: 'int4_pow2' is not a registered format")


def test_its_commands_and_standalone_script(run_cli: Any) -> None:
    shown = _ok(run_cli("example", "show"))
    assert "int4_pow2 codes" in shown.stdout and "15 distinct levels -7..7" in shown.stdout
    script = shutil.which("polyquant-example")
    if script is None:
        pytest.skip("the polyquant-example console script is not on PATH")
    standalone = subprocess.run([script, "show"], capture_output=True, text=True, check=False)
    assert standalone.returncode == 0
    assert standalone.stdout.split() == shown.stdout.split()  # the same output, whatever the line width

"""``polyquant quantize`` and ``polyquant inspect`` on small models built by factory modules."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import polyquant
from polyquant.cli.main import cli
from polyquant.cli.model_commands import load_factory, load_model
from polyquant.errors import PolyquantError
from polyquant.nn import QuantizedModule
from polyquant.plugins import PluginManager

FACTORY_SOURCE = textwrap.dedent(
    """
    import torch

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))

    def not_a_model():
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name of a fresh importable module defining ``build`` (a unique name per test: no stale imports)."""
    name = f"pq_cli_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _invoke(runner: CliRunner, *args: str) -> object:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_quantize_saves_reports_and_inspects(
    runner: CliRunner, plugin_manager: PluginManager, factory_module: str, tmp_path: Path
) -> None:
    out, report = tmp_path / "ckpt", tmp_path / "reports" / "report.md"
    result = _invoke(
        runner, "quantize", f"{factory_module}:build", "-r", "w4a16", "--out", str(out), "--report", str(report)
    )
    assert "│ 0 " in result.stdout and "│ 2 " in result.stdout and "int4" in result.stdout  # the per-module table
    assert "2 quantized, 0 skipped" in result.stdout
    assert report.read_text().startswith("**polyquant** recipe `w4a16`")

    summary = json.loads(_invoke(runner, "inspect", str(out), "--json").stdout)
    assert summary["formats"] == {"int4": 2}
    assert [layer["name"] for layer in summary["layers"]] == ["0", "2"]
    table = _invoke(runner, "inspect", str(out), "--verify").stdout
    assert "recipe: w4a16" in table and "formats: int4 (2)" in table and "128x64" in table

    # the checkpoint records its factory, so it loads back and matches the in-process quantization
    restored = load_model(str(out))
    module = __import__(factory_module)
    expected, _ = polyquant.quantize(module.build(), "w4a16", progress=False)
    x = torch.randn(3, 64)
    torch.testing.assert_close(restored(x), expected(x), rtol=0, atol=0)


def test_quantize_a_checkpoint_directory(
    runner: CliRunner, plugin_manager: PluginManager, factory_module: str, tmp_path: Path
) -> None:
    fp_dir = tmp_path / "fp"
    polyquant.save(__import__(factory_module).build(), fp_dir, metadata={"factory": f"{factory_module}:build"})
    out = tmp_path / "q"
    result = _invoke(runner, "quantize", str(fp_dir), "-r", "w8a16", "--out", str(out))
    assert "2 quantized" in result.stdout
    assert json.loads(_invoke(runner, "inspect", str(out), "--json").stdout)["formats"] == {"int8": 2}
    assert isinstance(load_model(str(out))[0], QuantizedModule)  # the factory was carried into the new checkpoint


def test_checkpoint_without_factory_needs_one(
    runner: CliRunner, plugin_manager: PluginManager, factory_module: str, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    polyquant.save(__import__(factory_module).build(), plain)
    missing = runner.invoke(cli, ["quantize", str(plain), "-r", "w8a16"])
    assert missing.exit_code == 1 and "--factory" in missing.stderr
    given = runner.invoke(cli, ["quantize", str(plain), "-r", "w8a16", "--factory", f"{factory_module}:build"])
    assert given.exit_code == 0, given.output


def test_quantize_a_file_factory_with_calibration_and_recipe_file(
    runner: CliRunner, plugin_manager: PluginManager, tmp_path: Path
) -> None:
    source = tmp_path / "models.py"
    source.write_text(FACTORY_SOURCE)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "name": "static-w8a8",
                "weights": {"format": "int8"},
                "activations": {"format": "int8", "granularity": "tensor", "dynamic": False},
            }
        )
    )
    result = _invoke(
        runner, "quantize", f"{source}:build", "-r", str(recipe), "--calib", "random:1x64", "--num-samples", "4"
    )
    assert "int8-tensor-static" in result.stdout
    assert "errors on calibration inputs" in result.stdout
    no_calib = runner.invoke(cli, ["quantize", f"{source}:build", "-r", str(recipe)])
    assert no_calib.exit_code == 1 and no_calib.stderr.startswith("error: ")


def test_strict_and_skipped_modules(runner: CliRunner, plugin_manager: PluginManager, factory_module: str) -> None:
    kept = _invoke(runner, "quantize", f"{factory_module}:build", "-r", "w4a16-g128")  # layer 0 has 64 inputs
    assert "Kept in high precision" in kept.stdout and "warning:" in kept.stderr
    strict = runner.invoke(cli, ["quantize", f"{factory_module}:build", "-r", "w4a16-g128", "--strict"])
    assert strict.exit_code == 1 and "not divisible by group size 128" in strict.stderr


def test_nothing_to_quantize_warns(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = _invoke(runner, "quantize", "torch.nn:ReLU", "-r", "w8a16")
    assert "nothing was quantized" in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must be 'module:callable'"),
        ("pq_no_such_module_x:build", "cannot import 'pq_no_such_module_x'"),
        ("torch.nn:NoSuchThing", "has no attribute 'NoSuchThing'"),
        ("missing_file.py:build", "does not exist"),
    ],
)
def test_bad_model_specs(runner: CliRunner, plugin_manager: PluginManager, spec: str, message: str) -> None:
    result = runner.invoke(cli, ["quantize", spec, "-r", "w8a16"])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.splitlines()) == 1


def test_factories_must_build_modules(factory_module: str) -> None:
    with pytest.raises(PolyquantError, match=r"returned a int, not a torch\.nn\.Module"):
        load_model(f"{factory_module}:not_a_model")
    with pytest.raises(PolyquantError, match="not a callable"):
        load_factory(f"{factory_module}:NOT_CALLABLE")


def test_bad_recipe_fails_before_building_the_model(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = runner.invoke(cli, ["quantize", "pq_no_such_module_x:build", "-r", "w5a16"])
    assert result.exit_code == 1 and "unknown recipe 'w5a16'" in result.stderr


def test_inspect_errors(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    result = runner.invoke(cli, ["inspect", str(tmp_path / "junk")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")

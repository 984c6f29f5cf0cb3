"""``polyquant demo``: a trained student, several presets, a table whose numbers are measured and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from polyquant.cli.demo import (
    DemoResult,
    DemoTask,
    benchmark_forward,
    make_student,
    render_markdown,
    run_demo,
    train_student,
)
from polyquant.cli.main import cli
from polyquant.errors import RecipeError
from polyquant.plugins import PluginManager


def test_training_learns_the_task() -> None:
    task = DemoTask.make(width=128, samples=1024)
    untrained = task.loss(make_student(128, 128))
    trained = task.loss(train_student(task, steps=60, hidden=128))
    assert untrained == pytest.approx(1.0, abs=0.15)  # an untrained net does about as well as the mean
    assert trained < 0.75 * untrained


def test_run_demo_rows_are_consistent(plugin_manager: PluginManager) -> None:
    rows, setup = run_demo(["w8a16", "w4a16-g128", "w3a16"], steps=60, hidden=128, repeats=2)
    fp32, w8, w4, w3 = rows
    assert [r.preset for r in rows] == ["fp32", "w8a16", "w4a16-g128", "w3a16"]
    assert fp32.relative_error == 0.0 and fp32.speed_vs_fp32 == 1.0 and fp32.bits_per_weight == 32.0
    # fewer bits: smaller and less accurate, and the task suffers accordingly
    assert fp32.size_bytes > w8.size_bytes > w4.size_bytes > w3.size_bytes
    assert 0 < w8.relative_error < w4.relative_error < w3.relative_error < 1
    assert w8.task_loss <= w4.task_loss <= w3.task_loss
    assert w8.bits_per_weight == pytest.approx(8.0, abs=0.2) and w4.bits_per_weight == pytest.approx(4.25, abs=0.01)
    for row in rows:
        assert row.ms_per_forward > 0
        assert row.speed_vs_fp32 == pytest.approx(fp32.ms_per_forward / row.ms_per_forward)
    assert "131" not in setup["model"] or "parameters" in setup["model"]
    assert set(setup) >= {"model", "task", "timing", "trained", "torch"}


def test_run_demo_rejects_unknown_presets(plugin_manager: PluginManager) -> None:
    with pytest.raises(RecipeError, match="unknown preset"):
        run_demo(["w8a16", "w5a16"], steps=1)


def test_benchmark_respects_its_budget() -> None:
    calls = 0

    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return x

    assert benchmark_forward(Slow(), torch.zeros(1), repeats=1000, warmup=1, budget_s=0.0) >= 0
    assert calls == 1 + 3  # warmup plus the minimum of three timed calls


def test_markdown_report() -> None:
    rows = [DemoResult("fp32", 2048, 32.0, 0.0, 0.1, 1.0, 1.0), DemoResult("w4a16", 300, 4.25, 0.12, 0.13, 2.0, 0.5)]
    text = render_markdown(rows, {"model": "MLP"})
    assert "- **model**: MLP" in text
    assert "| w4a16 | 300 B | 6.8x | 4.25 | 0.1200 | 0.1300 | 2.000 | 0.50x |" in text


def test_demo_command_writes_its_report(plugin_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        cli, ["demo", "--presets", "w8a16,nf4", "--steps", "20", "--repeats", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "w8a16" in result.stdout and "nf4" in result.stdout and "speed vs fp32" in result.stdout
    assert (out / "report.md").read_text().startswith("# polyquant demo")
    payload = json.loads((out / "results.json").read_text())
    assert [r["preset"] for r in payload["results"]] == ["fp32", "w8a16", "nf4"]


def test_demo_command_usage_errors(plugin_manager: PluginManager, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["demo", "--presets", " , ", "--out", str(tmp_path)]).exit_code == 2
    unknown = runner.invoke(cli, ["demo", "--presets", "w9a9", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown preset(s) w9a9" in unknown.stderr


@pytest.mark.slow
def test_full_demo_with_every_default_preset(plugin_manager: PluginManager, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["preset"] for r in results] == ["fp32", "w8a16", "w4a16-g128", "w3a16", "nf4", "mxfp4", "nvfp4", "w8a8"]
    assert all(0 <= r["relative_error"] < 0.5 for r in results)

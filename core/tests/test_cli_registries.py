"""``polyquant plugins / formats / quantizers / recipes / kernels``: listings agree with the registries."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from polyquant.cli.main import cli
from polyquant.cli.registries import recipe_summary
from polyquant.plugins import KernelSpec, PluginManager, QuantizerInfo, RecipePreset, hookimpl
from polyquant.recipes import resolve


class ExtraPlugin:
    """Contributes one recipe, one quantizer and one kernel that can never run here."""

    @hookimpl
    def polyquant_register_recipes(self) -> list[RecipePreset]:
        return [
            RecipePreset(
                "int4-g32-mse", {"weights": {"format": "int4", "group_size": 32}, "method": "mse"}, "test preset"
            )
        ]

    @hookimpl
    def polyquant_register_quantizers(self) -> list[QuantizerInfo]:
        from polyquant.quantizers import RTNQuantizer

        return [QuantizerInfo("rtn-copy", RTNQuantizer, "rtn under another name", needs_calibration=False)]

    @hookimpl
    def polyquant_register_kernels(self) -> list[KernelSpec]:
        from polyquant.kernels import linear_reference

        return [
            KernelSpec(
                op="linear",
                name="npu_int4",
                formats=("int4",),
                device="cpu",
                backend="npu",
                fn=linear_reference,
                priority=50,
                available=lambda: "needs an NPU",
                description="test kernel",
            )
        ]


class FailingPlugin:
    @hookimpl
    def polyquant_register_formats(self) -> list[object]:
        return ["not a format"]


class BracketsPlugin:
    @hookimpl
    def polyquant_register_recipes(self) -> list[RecipePreset]:
        raise ValueError("[bold]not markup[/bold] in ['a', 'b']")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _json(runner: CliRunner, *args: str) -> object:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plugins_json_lists_contributions(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra", distribution="polyquant-extra", version="1.2.3"):
        listing = {p["name"]: p for p in _json(runner, "plugins", "--json")}
    assert list(listing) == ["core", "extra"]
    extra = listing["extra"]
    assert (extra["distribution"], extra["version"], extra["status"], extra["error"]) == (
        "polyquant-extra",
        "1.2.3",
        "loaded",
        None,
    )
    assert extra["contributes"] == {
        "quantizer": ["rtn-copy"],
        "kernel": ["linear/npu_int4"],
        "recipe": ["int4-g32-mse"],
    }
    assert set(listing["core"]["contributes"]["format"]) == set(plugin_manager.get_formats())


def test_plugins_table_and_strict(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    assert runner.invoke(cli, ["plugins", "--strict"]).exit_code == 0
    with registered(FailingPlugin(), "failing", expect_status="failed"):
        table = runner.invoke(cli, ["plugins"])
        strict = runner.invoke(cli, ["plugins", "--strict"])
    assert table.exit_code == 0
    assert "failing" in table.stdout and "failed" in table.stdout and "malformed record" in table.stdout
    assert strict.exit_code == 1
    assert strict.stderr.startswith("error: plugin 'failing' (failing) failed: hook polyquant_register_formats")


def test_errors_are_shown_literally(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(BracketsPlugin(), "brackets", expect_status="failed"):
        table = runner.invoke(cli, ["plugins"])
    assert table.exit_code == 0
    for fragment in ("[bold]not", "markup[/bold]", "['a',"):  # the error column may wrap between words
        assert fragment in table.stdout


def test_formats_json_matches_registry(runner: CliRunner, plugin_manager: PluginManager) -> None:
    listing = {f["name"]: f for f in _json(runner, "formats", "--json")}
    assert set(listing) == set(plugin_manager.get_formats())
    for name, spec in plugin_manager.get_formats().items():
        row = listing[name]
        assert (row["bits"], row["kind"], row["granularity"]) == (spec.bits, spec.kind, str(spec.granularity))
        assert row["description"] == spec.description and row["plugin"] == "polyquant-core"


def test_formats_table(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = runner.invoke(cli, ["formats"])
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "│ nvfp4 " in line)
    assert "float" in row and "per-group(16)" in row


def test_quantizers(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra"):
        listing = {q["name"]: q for q in _json(runner, "quantizers", "--json")}
        table = runner.invoke(cli, ["quantizers"]).stdout
    assert {"rtn", "mse", "rtn-copy"} <= set(listing)
    assert listing["rtn-copy"] == {
        "name": "rtn-copy",
        "needs_calibration": False,
        "description": "rtn under another name",
        "plugin": "extra",
    }
    assert "rtn-copy" in table


def test_recipes_listing_and_show(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra"):
        listing = {r["name"]: r for r in _json(runner, "recipes", "--json")}
        shown = runner.invoke(cli, ["recipes", "show", "int4-g32-mse"])
    assert set(listing) == set(plugin_manager.get_recipes()) | {"int4-g32-mse"}
    assert listing["int4-g32-mse"]["summary"] == "W: int4 g32 (mse)"
    assert listing["w4a16-g128"]["plugin"] == "polyquant-core"
    assert shown.exit_code == 0
    parsed = yaml.safe_load(shown.stdout)
    assert parsed["weights"]["group_size"] == 32 and parsed["method"] == "mse"


def test_recipes_show_a_file_and_round_trip(runner: CliRunner, plugin_manager: PluginManager, tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("weights: {format: nf4}\nexclude: ['*.head']\n")
    shown = runner.invoke(cli, ["recipes", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert resolve(yaml.safe_load(shown.stdout)) == resolve(path)


def test_recipes_show_unknown(runner: CliRunner, plugin_manager: PluginManager) -> None:
    result = runner.invoke(cli, ["recipes", "show", "w5a16"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "w4a16-g128" in result.stderr


@pytest.mark.parametrize(
    ("recipe", "summary"),
    [
        ({"weights": {"format": "int4", "group_size": 128, "symmetric": False}}, "W: int4 g128 asym"),
        ({"weights": {"format": "int8"}, "activations": {"format": "int8"}}, "W: int8 · A: int8"),
        (
            {"weights": {"format": "nf4"}, "method": "mse", "overrides": [{"pattern": "x"}]},
            "W: nf4 (mse) · 1 override(s)",
        ),
        ({}, "(no quantization)"),
    ],
)
def test_recipe_summary(recipe: dict[str, object], summary: str) -> None:
    assert recipe_summary(recipe) == summary


# --------------------------------------------------------------------------------------------- kernels
def test_kernels_json(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra"):
        listing = {(k["op"], k["name"]): k for k in _json(runner, "kernels", "--json")}
        table = runner.invoke(cli, ["kernels", "--op", "linear"]).stdout
    reference = listing[("linear", "reference")]
    assert (reference["available"], reference["priority"], reference["formats"]) == (True, -100, ["*"])
    npu = listing[("linear", "npu_int4")]
    assert (npu["available"], npu["unavailable_reason"], npu["plugin"]) == (False, "needs an NPU", "extra")
    assert "no: needs an NPU" in table
    assert "conv" not in table  # --op filters


def test_kernels_explain(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra"):
        data = _json(runner, "kernels", "--explain", "linear", "--format", "int4", "--dtype", "bfloat16", "--json")
        table = runner.invoke(cli, ["kernels", "--explain", "linear", "--format", "int4"])
    assert isinstance(data, dict)
    choices = {c["kernel"]: c for c in data["choices"]}
    assert choices["npu_int4"]["reason"] == "unavailable: needs an NPU"
    assert [c["kernel"] for c in data["choices"] if c["selected"]] == ["reference"]
    assert data["dtype"] == "bfloat16"
    assert table.exit_code == 0 and "selected: reference" in table.stdout


def test_kernels_explain_honours_overrides(runner: CliRunner, plugin_manager: PluginManager, registered) -> None:
    with registered(ExtraPlugin(), "extra"):
        result = runner.invoke(
            cli,
            ["kernels", "--explain", "linear", "--format", "int4", "--json"],
            env={"POLYQUANT_KERNELS": "linear=npu_int4"},
        )
    data = json.loads(result.stdout)
    assert data["overrides"] == {"linear": "npu_int4"}
    assert not any(c["selected"] for c in data["choices"])
    assert {c["kernel"]: c["reason"] for c in data["choices"]}["reference"] == "disabled by override (linear=npu_int4)"


def test_kernels_explain_errors(runner: CliRunner, plugin_manager: PluginManager) -> None:
    assert runner.invoke(cli, ["kernels", "--explain", "linear"]).exit_code == 2  # --format missing
    unknown = runner.invoke(cli, ["kernels", "--explain", "linear", "--format", "int42"])
    assert unknown.exit_code == 1 and "unknown format 'int42'" in unknown.stderr
    misfit = runner.invoke(cli, ["kernels", "--explain", "linear", "--format", "int4", "--shape", "8x100"])
    assert misfit.exit_code == 1 and "--shape" in misfit.stderr
    assert runner.invoke(cli, ["kernels", "--explain", "linear", "--format", "int4", "--shape", "8xa"]).exit_code == 2


def test_explain_context_builds_a_real_weight(plugin_manager: PluginManager) -> None:
    from polyquant.cli.kernel_commands import explain_context

    ctx = explain_context("linear", "nf4", dtype="float16", batch=4, shape=(32, 128))
    assert ctx.weight is not None and tuple(ctx.weight.shape) == (32, 128)
    assert (ctx.dtype, ctx.batch, ctx.format) == (torch.float16, 4, "nf4")
    act = explain_context("quantize_activation", "int8")
    assert act.weight is None and act.act_format == "int8"


def test_transforms_and_kv_formats_are_listed(runner: CliRunner) -> None:
    transforms = _json(runner, "transforms", "--json")
    assert isinstance(transforms, list)
    by_name = {t["name"]: t for t in transforms}
    assert by_name["smoothquant"]["needs_calibration"] and not by_name["hadamard"]["needs_calibration"]
    assert by_name["hadamard"]["plugin"] == "polyquant-core"
    kv = _json(runner, "kv-formats", "--json")
    assert isinstance(kv, list) and {"turbo3", "kivi2", "fp8_e4m3"} <= {k["name"] for k in kv}
    table = runner.invoke(cli, ["transforms"])
    assert table.exit_code == 0 and "smoothquant" in table.output

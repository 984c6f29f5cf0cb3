"""polyquant.quantize(): module selection, calibration, strictness, and a report whose numbers add up."""

from __future__ import annotations

import json
import math
import types
import warnings
from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch
from torch import nn

import polyquant
from polyquant.activations import ActivationSpec
from polyquant.api import QuantizationWarning
from polyquant.errors import CalibrationError, FormatError, RecipeError
from polyquant.evaluation import model_size
from polyquant.nn import QConv1d, QConv2d, QEmbedding, QLinear
from polyquant.plugins import PluginManager, QuantizerInfo, hookimpl, using_plugin_manager
from polyquant.quantizers import RTNQuantizer


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 10))


def _calibration(n: int = 4, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 64, generator=gen) for _ in range(n)]


def _inputs_of(model: nn.Module, name: str, data: list[torch.Tensor]) -> torch.Tensor:
    """Every input the module ``name`` receives while ``model`` runs on ``data`` (rows flattened)."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, a, o: seen.append(a[0].detach().reshape(-1, a[0].shape[-1]))
    )
    with torch.no_grad():
        for x in data:
            model(x)
    handle.remove()
    return torch.cat(seen)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / a.double().norm())


# ------------------------------------------------------------------------------------------- basics
def test_quantize_swaps_modules_and_keeps_outputs_close() -> None:
    model = _mlp()
    x = torch.randn(4, 64)
    with torch.no_grad():
        reference = model(x)
    out_model, report = polyquant.quantize(model, "w8a16", progress=False)
    assert out_model is model  # in place by default
    assert [type(model[i]).__name__ for i in (0, 2, 4)] == ["QLinear"] * 3
    with torch.no_grad():
        assert _relative(reference, model(x)) < 0.02
    assert [r.name for r in report.rows] == ["0", "2", "4"] and not report.skipped


def test_inplace_false_leaves_the_model_untouched() -> None:
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized, _ = polyquant.quantize(model, "w8a16", inplace=False, progress=False)
    assert quantized is not model and isinstance(quantized[0], QLinear)
    assert all(isinstance(model[i], nn.Linear) for i in (0, 2, 4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_root_module_is_returned_quantized() -> None:
    layer = nn.Linear(32, 16)
    quantized, report = polyquant.quantize(layer, "w8a16", progress=False)
    assert isinstance(quantized, QLinear) and report.rows[0].name == ""


def test_shared_modules_are_swapped_everywhere() -> None:
    shared = nn.Linear(16, 16)
    model = nn.Module()
    model.a, model.b = shared, shared  # the same instance under two names
    polyquant.quantize(model, "w8a16", progress=False)
    assert isinstance(model.a, QLinear) and model.a is model.b


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    polyquant.quantize(_mlp(), "w8a16", calibration=_calibration(), progress=True)
    assert "polyquant" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- selection
def test_include_exclude_overrides_and_module_types() -> None:
    model = nn.Sequential(
        nn.Embedding(32, 64),
        nn.Conv1d(64, 64, 4, groups=64, padding=3),
        nn.Linear(64, 64),
        nn.Linear(64, 64),
        nn.Conv2d(3, 8, 3),
    )
    recipe = {
        "weights": {"format": "int8"},
        "modules": ["Linear", "Conv1d", "Embedding"],
        "exclude": ["3"],
        "overrides": [
            {"pattern": "re:[12]", "weights": {"format": "int4", "group_size": 0}},
            {"pattern": "0", "weights": {"format": "int4", "group_size": 32}},
        ],
    }
    _, report = polyquant.quantize(model, recipe, progress=False)
    assert isinstance(model[0], QEmbedding) and isinstance(model[1], QConv1d) and isinstance(model[2], QLinear)
    assert isinstance(model[3], nn.Linear) and isinstance(model[4], nn.Conv2d)  # excluded / type not requested
    formats = {r.name: (r.format, r.granularity) for r in report.rows}
    assert formats == {
        "0": ("int4", "per-group(32)"),
        "1": ("int4", "per-channel(axis=0)"),
        "2": ("int4", "per-channel(axis=0)"),
    }
    assert [(s.name, s.reason) for s in report.skipped] == [("3", "excluded by '3'")]


def test_adapter_excludes_and_explicit_override() -> None:
    model = nn.Module()
    model.body = nn.Linear(16, 16)
    model.lm_head = nn.Linear(16, 16)
    _, report = polyquant.quantize(model, {"weights": "int8"}, inplace=False, progress=False)
    assert [s.name for s in report.skipped] == ["lm_head"] and "generic adapter" in report.skipped[0].reason
    recipe = {
        "weights": {"format": "int4", "group_size": 16},
        "overrides": [{"pattern": "lm_head", "weights": {"format": "int8"}}],
    }
    _, report = polyquant.quantize(model, recipe, progress=False)
    assert report.row("lm_head").format == "int8" and report.row("body").format == "int4"


def test_multihead_attention_projection_is_left_alone() -> None:
    model = nn.Sequential(nn.MultiheadAttention(16, 2))
    _, report = polyquant.quantize(model, "w8a16", progress=False)
    assert [s.name for s in report.skipped] == ["0.out_proj"] and not report.rows


# ------------------------------------------------------------------------------------------- activations
def test_static_activations_need_calibration() -> None:
    recipe = {"weights": "int8", "activations": {"format": "int8", "granularity": "tensor", "dynamic": False}}
    with pytest.raises(
        CalibrationError, match=r"static activation scales were requested for 3 module\(s\) \(0, 2, 4\)"
    ):
        polyquant.quantize(_mlp(), recipe, progress=False)


def test_static_activation_scales_are_the_observed_maxima() -> None:
    model, data = _mlp(), _calibration()
    expected = {name: _inputs_of(model, name, data).abs().max() / 127 for name in ("0", "2", "4")}
    recipe = {"weights": "int8", "activations": {"format": "int8", "granularity": "tensor", "dynamic": False}}
    _, report = polyquant.quantize(model, recipe, calibration=data, progress=False)
    for name, scale in expected.items():
        assert torch.equal(model.get_submodule(name).act_scale, scale.float())
    assert {r.activations for r in report.rows} == {"int8-tensor-static"}


def test_percentile_observer_is_used_when_asked() -> None:
    model, data = _mlp(), _calibration(8)
    acts = {"format": "int8", "granularity": "tensor", "dynamic": False, "observer": "percentile", "percentile": 99.0}
    polyquant.quantize(model, {"weights": "int8", "activations": acts}, calibration=data, progress=False)
    minmax = _inputs_of(_mlp(), "0", data).abs().max() / 127
    assert float(model[0].act_scale) < float(minmax)


def test_dynamic_activations_need_no_calibration() -> None:
    model = _mlp()
    x = torch.randn(4, 64)
    with torch.no_grad():
        reference = model(x)
    _, report = polyquant.quantize(model, "w8a8", progress=False)
    assert model[0].act == ActivationSpec(format="int8", granularity="token") and model[0].act_scale is None
    with torch.no_grad():
        assert _relative(reference, model(x)) < 0.03
    assert report.rows[0].activations == "int8-token-dyn"


def test_overrides_can_make_a_module_weight_only() -> None:
    recipe = {
        "weights": "int8",
        "activations": {"format": "int8"},
        "overrides": [{"pattern": "4", "activations": None}],
    }
    _, report = polyquant.quantize(_mlp(), recipe, progress=False)
    assert [r.activations for r in report.rows] == ["int8-token-dyn", "int8-token-dyn", "none"]


def test_nonfinite_activations_name_the_module() -> None:
    class Overflow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1e38 * 1e38  # inf in float32

    model = nn.Sequential(nn.Linear(8, 8), Overflow(), nn.Linear(8, 8))
    recipe = {"weights": "int8", "activations": {"format": "int8", "granularity": "tensor", "dynamic": False}}
    with pytest.raises(CalibrationError, match=r"input of module '2' \(calibration call 0\): 0 NaN and 16 Inf"):
        polyquant.quantize(model, recipe, calibration=[torch.ones(2, 8)], progress=False)


def test_calibration_with_keyword_inputs_on_a_transformers_model() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(0)
    calib = {
        "input_ids": torch.randint(0, 128, (4, 16), generator=gen),
        "attention_mask": torch.ones(4, 16, dtype=torch.long),
    }
    ids = torch.randint(0, 128, (2, 16), generator=gen)
    with torch.no_grad():
        reference = model(ids).logits
    recipe = {
        "weights": {"format": "int8"},
        "activations": {"format": "int8", "granularity": "tensor", "dynamic": False},
    }
    _, report = polyquant.quantize(model, recipe, calibration=calib, progress=False)
    with torch.no_grad():
        assert _relative(reference, model(ids).logits) < 0.05
    assert report.summary.output_error_source == "calibration"
    assert all(r.output_error_source == "calibration" for r in report.rows)


# ------------------------------------------------------------------------------------------- quantizers with stats
class _Recorder:
    """A calibrated quantizer that records the stats it receives (and otherwise rounds to nearest)."""

    name = "recorder"
    needs_calibration = True
    seen: ClassVar[dict[int, Mapping[str, torch.Tensor] | None]] = {}

    def quantize_weight(self, weight: torch.Tensor, spec, *, stats=None):  # type: ignore[no-untyped-def]
        _Recorder.seen[weight.shape[1]] = stats
        return RTNQuantizer().quantize_weight(weight, spec)


@pytest.fixture
def recorder_pm() -> PluginManager:
    pm = PluginManager(entry_points=False)
    plugin = types.SimpleNamespace(
        polyquant_register_quantizers=hookimpl(
            lambda: [QuantizerInfo("recorder", _Recorder, "test", needs_calibration=True)]
        )
    )
    pm.register(plugin, "recorder-plugin")
    return pm


def test_calibrated_quantizers_get_hessians(recorder_pm: PluginManager) -> None:
    model, data = _mlp(), _calibration()
    x = _inputs_of(model, "2", data)
    with using_plugin_manager(recorder_pm):
        with pytest.raises(CalibrationError, match="method 'recorder' needs calibration data"):
            polyquant.quantize(_mlp(), {"weights": "int8", "method": "recorder"}, progress=False)
        polyquant.quantize(model, {"weights": "int8", "method": "recorder"}, calibration=data, progress=False)
    stats = _Recorder.seen[128]  # layer "2" has 128 input features
    assert stats is not None and int(stats["num_samples"]) == x.shape[0]
    assert torch.allclose(stats["hessian"], 2.0 / x.shape[0] * x.T @ x, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------- failures
def test_unquantizable_modules_are_skipped_with_a_warning_or_raise_when_strict() -> None:
    model = nn.Sequential(nn.Linear(96, 64), nn.Linear(64, 64))  # 96 is not divisible by 64
    recipe = {"weights": {"format": "int4", "group_size": 64}}
    with pytest.raises(FormatError, match=r"^0: shape \(64, 96\) is not divisible by group size 64"):
        polyquant.quantize(model, recipe, inplace=False, strict=True, progress=False)
    with pytest.warns(QuantizationWarning, match=r"1 module\(s\) kept in high precision: 0: could not be quantized"):
        _, report = polyquant.quantize(model, recipe, progress=False)
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], QLinear)
    assert report.skipped[0].name == "0" and "choose a group size that divides 96" in report.skipped[0].reason


def test_bad_arguments() -> None:
    with pytest.raises(
        RecipeError, match=r"transforms: 'rotate13' is not a registered transform; allowed: .*smoothquant"
    ):
        polyquant.quantize(_mlp(), {"weights": "int8", "transforms": ["rotate13"]}, progress=False)
    with pytest.raises(RecipeError, match="adapter: 'llm' is not registered"):
        polyquant.quantize(_mlp(), "w8a16", adapter="llm", progress=False)
    with pytest.raises(RecipeError, match="unknown recipe 'w9a9'"):
        polyquant.quantize(_mlp(), "w9a9", progress=False)
    with pytest.raises(TypeError, match=r"needs an nn\.Module"):
        polyquant.quantize("model", "w8a16")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- report
def test_report_numbers_add_up() -> None:
    model = _mlp()
    original = model_size(model)["total_bytes"]
    params = sum(p.numel() for p in model.parameters())
    _, report = polyquant.quantize(
        model, {"weights": {"format": "int4", "group_size": 32, "symmetric": False}}, progress=False
    )
    s = report.summary
    for row in report.rows:
        layer = model.get_submodule(row.name)
        assert row.params == layer.weight.numel == layer.in_features * layer.out_features
        assert row.original_bytes == row.params * 4
        assert row.quantized_bytes == layer.weight.nbytes
        assert (
            row.bits_per_weight
            == 8 * row.quantized_bytes / row.params
            == layer.weight.spec.bits_per_weight(layer.weight.shape)
        )
        assert row.bits_per_weight == 4 + 2 * 16 / 32  # 4-bit codes + fp16 scale and zero per 32
        assert row.granularity == "per-group(32)" and row.type == "Linear"
    assert s.total_params == params and s.original_bytes == original
    assert s.quantized_bytes == model_size(model)["total_bytes"]
    assert s.params_quantized == sum(r.params for r in report.rows)
    assert math.isclose(s.avg_bits_per_weight, 8 * sum(r.quantized_bytes for r in report.rows) / s.params_quantized)
    assert math.isclose(s.compression, s.original_bytes / s.quantized_bytes)
    assert s.modules_quantized == 3 and s.modules_skipped == 0 and s.method == "rtn" and s.adapter == "generic"


def test_report_errors_are_exact_recomputations() -> None:
    model, data = _mlp(), _calibration()
    fp = _mlp()
    inputs = _inputs_of(fp, "2", data)[:128]
    _, report = polyquant.quantize(model, "w8a16", calibration=data, progress=False)
    row = report.row("2")
    weight = fp[2].weight.detach()
    assert math.isclose(row.weight_rel_error, _relative(weight, model[2].weight.dequantize()), rel_tol=1e-9)
    with torch.no_grad():
        expected = _relative(fp[2](inputs), model[2](inputs))
    assert math.isclose(row.output_rel_error, expected, rel_tol=1e-9)
    assert row.output_error_source == "calibration" and row.kernel == model[2].selected_kernel(batch=128).name


def test_report_without_calibration_uses_a_random_probe() -> None:
    _, report = polyquant.quantize(_mlp(), "w8a16", progress=False)
    assert report.summary.output_error_source == "random probe"
    assert all(r.output_error_source == "random probe" and 0 < r.output_rel_error < 0.05 for r in report.rows)


def test_report_renderings_and_notes() -> None:
    recipe = {"name": "mine", "weights": "int8", "kv_cache": "fp8_e4m3", "exclude": ["4"]}
    _, report = polyquant.quantize(_mlp(), recipe, progress=False)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["summary"]["recipe"] == "mine" and data["recipe"]["kv_cache"]["format"] == "fp8_e4m3"
    text = report.to_markdown()
    assert "| 0 | Linear | int8 | per-channel(axis=0) |" in text
    assert "| 4 | Linear | excluded by '4' |" in text
    assert "kv_cache (fp8_e4m3) is recorded" in text and str(report) == text
    assert "bits/weight" in text
    with pytest.raises(KeyError):
        report.row("4")


def test_conv_net_with_static_activations() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = net(x)
    calib = [torch.randn(2, 3, 16, 16) for _ in range(3)]
    recipe = {
        "weights": "int8",
        "modules": ["Linear", "Conv2d"],
        "activations": {"format": "int8", "granularity": "tensor", "dynamic": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped
        _, report = polyquant.quantize(net, recipe, calibration=calib, progress=False)
    assert isinstance(net[0], QConv2d) and isinstance(net[2], QConv2d) and net[2].act_scale is not None
    with torch.no_grad():
        assert _relative(reference, net(x)) < 0.05
    assert [r.type for r in report.rows] == ["Conv2d", "Conv2d", "Linear"]

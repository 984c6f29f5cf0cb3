"""The recipe schema: parsing, round trips, validation messages, module matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyquant.activations import ActivationSpec
from polyquant.errors import RecipeError
from polyquant.plugins import PluginManager, RecipePreset, hookimpl, using_plugin_manager
from polyquant.recipes import KVCacheConfig, Override, Recipe, WeightConfig, decide, match_pattern, resolve

FULL = {
    "name": "custom",
    "description": "every field",
    "weights": {"format": "int4", "group_size": 64, "symmetric": False, "scale_dtype": None},
    "activations": {"format": "int8", "granularity": "tensor", "dynamic": False, "observer": "percentile"},
    "kv_cache": {"format": "fp8_e4m3", "options": {"residual_length": 128}},
    "method": "mse",
    "method_args": {"grid": 50, "norm": 2.0},
    "transforms": [],
    "include": ["model.*"],
    "exclude": ["*.gate"],
    "overrides": [
        {"pattern": "*.down_proj", "weights": {"format": "int8"}},
        {"pattern": "*.o_proj", "activations": None},
        {"pattern": "re:model\\.layers\\.0\\..*", "skip": True},
    ],
    "modules": ["Linear", "Conv1d"],
    "adapter_excludes": False,
}


def test_from_dict_reads_every_field() -> None:
    r = Recipe.from_dict(FULL)
    assert r.weights == WeightConfig("int4", 64, False, None)
    assert r.activations == ActivationSpec(format="int8", granularity="tensor", dynamic=False, observer="percentile")
    assert r.kv_cache == KVCacheConfig("fp8_e4m3", {"residual_length": 128})
    assert (r.method, dict(r.method_args)) == ("mse", {"grid": 50, "norm": 2.0})
    assert r.include == ("model.*",) and r.exclude == ("*.gate",)
    assert r.modules == ("Linear", "Conv1d") and r.adapter_excludes is False
    down, o_proj, skip = r.overrides
    assert down.weights == WeightConfig("int8", None, False, None)  # format changed → its own default grouping
    assert o_proj.weight_only and o_proj.activations is None
    assert skip.skip


def test_round_trips_through_dict_yaml_toml_json(tmp_path: Path) -> None:
    r = Recipe.from_dict(FULL)
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_yaml(r.to_yaml()) == r
    assert Recipe.from_json(json.dumps(r.to_dict())) == r
    (tmp_path / "mine.yaml").write_text(r.to_yaml())
    assert resolve(tmp_path / "mine.yaml") == r
    assert resolve(str(tmp_path / "mine.yaml")) == r
    json.dumps(r.to_dict())  # JSON-able


def test_toml_and_file_name_as_default_name(tmp_path: Path) -> None:
    path = tmp_path / "int8-all.toml"
    path.write_text('method = "rtn"\nmodules = ["Linear", "Conv2d"]\n[weights]\nformat = "int8"\ngroup_size = 0\n')
    r = resolve(path)
    assert r.name == "int8-all" and r.weights.group_size == 0 and r.modules == ("Linear", "Conv2d")


def test_shorthands() -> None:
    r = Recipe.from_dict({"weights": "int8", "kv_cache": "int4", "include": "model.*", "activations": "none"})
    assert r.weights.format == "int8" and r.kv_cache == KVCacheConfig("int4") and r.include == ("model.*",)
    assert r.activations is None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"weights": {"format": "int9"}}, r"^weights\.format: 'int9' is not a registered format; allowed: .*int4"),
        ({"weights": {"format": "int4", "group_size": -2}}, r"^weights\.group_size: -2 is invalid; allowed: null"),
        ({"weights": {"format": "int4", "group_size": True}}, r"^weights\.group_size"),
        ({"weights": {"format": "int4", "symmetric": "yes"}}, r"^weights\.symmetric: 'yes' is invalid; allowed: true"),
        ({"weights": {"format": "int4", "bits": 4}}, r"^weights: unknown field\(s\) bits; allowed: format, group_size"),
        ({"weights": {"group_size": 4}}, r"^weights\.format: missing; allowed: "),
        ({"weights": None}, r"^weights: missing"),
        (
            {"method": "spqr"},
            r"^method: 'spqr' is not a registered quantizer; allowed: awq, gptq, hqq, kmeans, mixed, mse, rtn",
        ),
        ({"method": "mse", "method_args": {"gird": 3}}, r"^method_args: .*'gird'.*accepted: grid, norm, maxshrink"),
        ({"method": "mse", "method_args": {"grid": 0}}, r"^method_args\.grid: 0 is invalid"),
        ({"activations": {"format": "int3"}}, r"^activations\.format: 'int3' is not supported; allowed: int8"),
        ({"activations": {"format": "int8", "bits": 8}}, r"^activations: unknown field\(s\) bits"),
        ({"kv_cache": {"format": "int3"}}, r"^kv_cache\.format: 'int3' is not supported; allowed: fp8_e4m3"),
        ({"kv_cache": {"format": "int4", "options": {"x": [1]}}}, r"^kv_cache\.options\.x: expected a scalar"),
        (
            {"modules": ["Linear", "Conv3d"]},
            r"^modules: \['Conv3d'\] not supported; allowed: Linear, Conv1d, Conv2d, Embedding",
        ),
        ({"include": [3]}, r"^include: expected a list of non-empty strings"),
        ({"exclude": ["re:("]}, r"^exclude\[0\]: pattern 're:\(' is not a valid regular expression"),
        (
            {"overrides": [{"pattern": "*.x", "weights": {"format": "nope"}}]},
            r"^overrides\[0\]\.weights\.format: 'nope'",
        ),
        ({"overrides": [{"weights": {"format": "int8"}}]}, r"^overrides\[0\]\.pattern: missing"),
        ({"overrides": [{"pattern": "a"}, {"pattern": "b", "skip": "y"}]}, r"^overrides\[1\]\.skip: 'y' is invalid"),
        ({"overrides": [{"pattern": "a", "act": None}]}, r"^overrides\[0\]: unknown field\(s\) act; allowed: pattern"),
        ({"adapter_excludes": "no"}, r"^adapter_excludes: 'no' is invalid; allowed: true, false"),
        ({"quantize_lm_head": True}, r"^unknown recipe field\(s\) quantize_lm_head; allowed: weights"),
    ],
)
def test_validation_names_field_and_allowed_values(patch: dict, message: str) -> None:
    data = {"weights": {"format": "int4"}, **patch}
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(data)


def test_format_option_errors_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match=r"^weights: format 'fp8_e4m3' does not accept .*symmetric=False.*integer"):
        Recipe.from_dict({"weights": {"format": "fp8_e4m3", "symmetric": False}})
    with pytest.raises(RecipeError, match=r"^weights: format 'nvfp4' does not accept .*scale_dtype='fp16'.*e4m3"):
        Recipe.from_dict({"weights": {"format": "nvfp4", "scale_dtype": "fp16"}})
    with pytest.raises(RecipeError, match=r"^weights\.scale_dtype: 'fp12' is invalid; allowed: null, fp32, fp16"):
        Recipe.from_dict({"weights": {"format": "int4", "scale_dtype": "fp12"}})


def test_invalid_yaml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="invalid YAML"):
        Recipe.from_yaml("weights: [unclosed\n")
    with pytest.raises(RecipeError, match="does not exist"):
        resolve(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match=r"unsupported extension"):
        resolve(tmp_path / "recipe.ini")
    with pytest.raises(RecipeError, match=r"unknown recipe 'w5a16': not a preset .*presets: .*w4a16"):
        resolve("w5a16")
    with pytest.raises(RecipeError, match="top level: expected a mapping"):
        Recipe.from_yaml("- a\n- b\n")


def test_resolve_finds_plugin_presets() -> None:
    pm = PluginManager(entry_points=False)
    preset = RecipePreset("team-int8", {"weights": {"format": "int8"}, "exclude": ["head"]}, "our int8")
    pm.register(type("P", (), {"polyquant_register_recipes": staticmethod(hookimpl(lambda: [preset]))})(), "team")
    with using_plugin_manager(pm):
        r = resolve("team-int8")
    assert (r.name, r.description, r.exclude) == ("team-int8", "our int8", ("head",))


def test_resolve_passes_recipes_and_mappings() -> None:
    r = Recipe(weights=WeightConfig("int8"))
    assert resolve(r) is r
    assert resolve({"weights": {"format": "int8"}}) == r
    with pytest.raises(RecipeError, match="expected a preset name"):
        resolve(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- matching
def test_patterns() -> None:
    assert match_pattern("*.down_proj", "model.layers.0.mlp.down_proj")
    assert not match_pattern("*.down_proj", "model.layers.0.mlp.down_proj.lora")
    assert match_pattern("model.layers.?.*", "model.layers.3.mlp")
    assert match_pattern("re:.*layers\\.(0|1)\\..*", "model.layers.1.self_attn.q_proj")
    assert not match_pattern("re:layers", "model.layers.1")  # regexes match the whole name


def test_decide_include_exclude_override_and_adapter_excludes() -> None:
    r = Recipe.from_dict(
        {
            "weights": {"format": "int4", "group_size": 32},
            "activations": {"format": "int8"},
            "include": ["model.*", "lm_head"],
            "exclude": ["*.gate"],
            "overrides": [
                {"pattern": "*.down_proj", "weights": {"group_size": 0}},
                {"pattern": "*.down_proj", "activations": None},
                {"pattern": "*.layers.0.*", "skip": True},
                {"pattern": "lm_head", "weights": {"format": "int8"}},
            ],
        }
    )
    adapter_exclude = ["model.embed", "lm_head", "model.head2"]
    d = decide(r, "model.layers.1.mlp.down_proj", adapter_exclude=adapter_exclude)
    assert d.quantize and d.weights == WeightConfig("int4", 0) and d.activations is None
    d = decide(r, "model.layers.1.mlp.up_proj", adapter_exclude=adapter_exclude)
    assert d.weights == WeightConfig("int4", 32) and d.activations == ActivationSpec(format="int8")
    assert decide(r, "other.fc").reason == "not included"
    assert decide(r, "model.layers.1.mlp.gate").reason == "excluded by '*.gate'"
    assert decide(r, "model.layers.0.mlp.up_proj").reason == "skipped by override '*.layers.0.*'"
    assert (
        "kept in high precision by the generic adapter"
        in decide(r, "model.head2", adapter_exclude=adapter_exclude, adapter_name="generic").reason
    )
    d = decide(r, "lm_head", adapter_exclude=adapter_exclude)  # an override names it explicitly
    assert d.quantize and d.weights is not None and d.weights.format == "int8"
    no_adapter = Recipe.from_dict({"weights": "int8", "adapter_excludes": False})
    assert decide(no_adapter, "model.embed", adapter_exclude=adapter_exclude).quantize


def test_later_overrides_win() -> None:
    r = Recipe(
        weights=WeightConfig("int4"),
        overrides=(Override("*", weights=WeightConfig("int8")), Override("*.x", weights=WeightConfig("int2"))),
    )
    assert r.weights_for("a.x").format == "int2"
    assert r.weights_for("a.y").format == "int8"


def test_override_rejects_both_activations_and_weight_only() -> None:
    with pytest.raises(RecipeError, match="either activation settings or null"):
        Override("*", activations=ActivationSpec(), weight_only=True)


_names = st.text(alphabet="abcxyz0123.", min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(
    group=st.sampled_from([None, 0, 32, 64, 128]),
    symmetric=st.sampled_from([None, True, False]),
    include=st.lists(_names, min_size=1, max_size=3),
    exclude=st.lists(_names, max_size=3),
    method=st.sampled_from(["rtn", "mse"]),
    dynamic=st.sampled_from([None, True, False]),
)
def test_round_trip_property(group, symmetric, include, exclude, method, dynamic) -> None:  # type: ignore[no-untyped-def]
    acts = (
        None
        if dynamic is None
        else {"format": "int8", "granularity": "token" if dynamic else "tensor", "dynamic": dynamic}
    )
    r = Recipe.from_dict(
        {
            "weights": {"format": "int4", "group_size": group, "symmetric": symmetric},
            "activations": acts,
            "include": include,
            "exclude": exclude,
            "method": method,
            "overrides": [{"pattern": "*.o", "weights": {"format": "int8"}, "activations": None}],
        }
    )
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_yaml(r.to_yaml()) == r

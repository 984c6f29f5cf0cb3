"""The KV-format registry: built-in names, get()/available(), the plugin hook, recipe validation."""

from __future__ import annotations

import types

import pytest

from polyquant import kvcache
from polyquant.errors import FormatError, RecipeError
from polyquant.kvcache import FP8KVConfig, KVFormat
from polyquant.plugins import KVCacheFormatInfo, PluginManager, hookimpl, using_plugin_manager
from polyquant.recipes import KV_CACHE_FORMATS, KVCacheConfig, Recipe

BUILTIN = [
    "fp8_e4m3",
    "fp8_e4m3-tensor",
    "fp8_e5m2",
    "int2",
    "int4",
    "int8",
    "kivi2",
    "kivi4",
    "turbo1",
    "turbo2",
    "turbo2-prod",
    "turbo2.5",
    "turbo3",
    "turbo3-prod",
    "turbo3.5",
    "turbo4",
    "turbo4-prod",
]


@pytest.fixture
def pm() -> PluginManager:
    manager = PluginManager(entry_points=False)
    with using_plugin_manager(manager):
        yield manager


def _plugin(*infos: KVCacheFormatInfo) -> types.SimpleNamespace:
    return types.SimpleNamespace(polyquant_register_kv_formats=hookimpl(lambda: list(infos)))


def _mine(**options: object) -> KVFormat:
    return KVFormat("mine-fp8", FP8KVConfig(), FP8KVConfig(), **options)  # type: ignore[arg-type]


def test_builtin_names(pm: PluginManager) -> None:
    assert kvcache.available() == BUILTIN
    assert list(KV_CACHE_FORMATS) == BUILTIN  # the schema's list of built-ins is current
    assert pm.plugin("core").contributions["kv_format"] == tuple(pm.get_kv_formats())
    for name in BUILTIN:
        fmt = kvcache.get(name)
        assert isinstance(fmt, KVFormat) and fmt.name == name and fmt.description
        assert pm.get_kv_formats()[name].description == fmt.description


def test_documented_structure(pm: PluginManager) -> None:
    prod = kvcache.get("turbo3-prod")
    assert (prod.key.variant, prod.value.variant, prod.key.bits) == ("prod", "mse", 3)  # type: ignore[attr-defined]
    assert prod.key.seed != prod.value.seed  # type: ignore[attr-defined]
    kivi = kvcache.get("kivi4")
    assert (kivi.residual_length, kivi.block_tokens, kivi.bits_per_element(128)) == (128, 32, 5.0)
    assert kvcache.get("turbo3.5").bits_per_element(128) == 3.5


def test_options(pm: PluginManager) -> None:
    fmt = kvcache.get("turbo3", seed=5, residual_length=32, codebook="beta")
    assert (fmt.key.seed, fmt.key.codebook, fmt.residual_length) == (5, "beta", 32)  # type: ignore[attr-defined]
    with pytest.raises(
        FormatError, match=r"'kivi2' does not take option\(s\) seed; accepted: group_size, residual_length"
    ):
        kvcache.get("kivi2", seed=1)
    with pytest.raises(FormatError, match=r"'turbo3' does not take option\(s\) name; accepted: outlier_channels, "):
        kvcache.get("turbo3", name="other")  # the name is fixed by the registry
    with pytest.raises(FormatError, match="residual_length must be a non-negative integer"):
        kvcache.get("kivi2", residual_length=-3)
    with pytest.raises(
        FormatError, match=r"does not take option\(s\) granularity; accepted: scale, scale_dtype, residual"
    ):
        kvcache.get("fp8_e4m3", granularity="tensor")  # that is fp8_e4m3-tensor


def test_unknown_name_lists_the_known_ones(pm: PluginManager) -> None:
    with pytest.raises(FormatError, match=r"unknown KV-cache format 'turbo5'; known KV-cache formats: fp8_e4m3, "):
        kvcache.get("turbo5")


def test_plugin_formats_are_found_and_accepted_by_recipes(pm: PluginManager) -> None:
    info = pm.register(_plugin(KVCacheFormatInfo("mine-fp8", _mine, "test format")), "mine", distribution="my-dist")
    assert info.status == "loaded" and info.contributions == {"kv_format": ("mine-fp8",)}
    assert pm.provider("kv_format", "mine-fp8") == "my-dist"
    assert kvcache.get("mine-fp8", residual_length=4).residual_length == 4
    assert Recipe.from_dict({"weights": "int8", "kv_cache": "mine-fp8"}).kv_cache == KVCacheConfig("mine-fp8")
    pm.unregister("mine")
    assert "mine-fp8" not in kvcache.available()


@pytest.mark.filterwarnings("ignore:kv_format 'turbo3' is provided by both:RuntimeWarning")
def test_duplicate_kv_format_names_conflict(pm: PluginManager) -> None:
    with pytest.warns(RuntimeWarning, match="kv_format 'turbo3' is provided by both 'polyquant-core' and 'd2'"):
        intruder = pm.register(_plugin(KVCacheFormatInfo("turbo3", _mine)), "intruder", distribution="d2")
    assert intruder.status == "conflict"
    assert "kv_format 'turbo3'" in (intruder.error or "") and "polyquant-core" in (intruder.error or "")
    assert kvcache.get("turbo3").key.variant == "mse"  # type: ignore[attr-defined]  # the core keeps its name
    twice = pm.register(_plugin(KVCacheFormatInfo("a", _mine), KVCacheFormatInfo("a", _mine)), "twice")
    assert twice.status == "failed" and "more than once" in (twice.error or "")


def test_malformed_records_and_factories(pm: PluginManager) -> None:
    bad = types.SimpleNamespace(polyquant_register_kv_formats=hookimpl(lambda: [{"name": "x"}]))
    info = pm.register(bad, "bad")
    assert info.status == "failed" and "KVCacheFormatInfo" in (info.error or "")
    with pytest.raises(TypeError, match="factory must be callable"):
        KVCacheFormatInfo("x", factory=3)  # type: ignore[arg-type]
    pm.register(_plugin(KVCacheFormatInfo("broken", lambda: "not a format")), "broken", distribution="broken-dist")
    with pytest.raises(FormatError, match=r"returned str, not a KVFormat; fix the plugin .*broken-dist"):
        kvcache.get("broken")


def test_recipe_kv_cache_format_is_validated(pm: PluginManager) -> None:
    assert Recipe.from_dict({"weights": "int8", "kv_cache": {"format": "kivi2", "options": {"residual_length": 64}}})
    with pytest.raises(
        RecipeError, match=r"^kv_cache\.format: 'turbo9' is not supported; allowed: fp8_e4m3, .*turbo4-prod$"
    ):
        Recipe.from_dict({"weights": "int8", "kv_cache": "turbo9"})
    with pytest.raises(RecipeError, match=r"^kv_cache\.format: missing; allowed: fp8_e4m3"):
        Recipe.from_dict({"weights": "int8", "kv_cache": {"options": {}}})

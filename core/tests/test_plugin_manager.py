"""The plugin manager facade: isolation of broken plugins, conflicts, env switches, rebuilds."""

from __future__ import annotations

import types
import warnings

import pytest

from polyquant.errors import FormatError, PluginConflictError, PluginError
from polyquant.plugins import (
    PluginManager,
    QuantizerInfo,
    RecipePreset,
    get_plugin_manager,
    hookimpl,
    using_plugin_manager,
)
from polyquant.plugins.manager import DISABLE_ENV, LOAD_ENV


def _plugin(**hooks: object) -> types.SimpleNamespace:
    """A plugin object whose hook implementations are the given callables."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def _recipes(*names: str):
    def polyquant_register_recipes():
        return [RecipePreset(n, {"weights": {"format": "int8"}}, f"test preset {n}") for n in names]

    return polyquant_register_recipes


@pytest.fixture
def pm() -> PluginManager:
    return PluginManager(entry_points=False)


def test_builtins_load_as_core(pm: PluginManager) -> None:
    core = pm.plugin("core")
    assert core.status == "loaded", core.error
    assert core.builtin and core.distribution == "polyquant-core"


def test_register_contributes_and_unregister_rebuilds(pm: PluginManager) -> None:
    generation = pm.generation
    info = pm.register(_plugin(polyquant_register_recipes=_recipes("my-preset")), "mine", distribution="my-dist")
    assert info.status == "loaded" and info.contributions == {"recipe": ("my-preset",)}
    assert "my-preset" in pm.get_recipes()
    assert pm.provider("recipe", "my-preset") == "my-dist"
    assert pm.generation > generation
    pm.unregister("mine")
    assert "my-preset" not in pm.get_recipes()


def test_hook_that_raises_is_isolated(pm: PluginManager) -> None:
    def polyquant_register_recipes():
        raise RuntimeError("boom")

    good = pm.register(_plugin(polyquant_register_recipes=_recipes("good-one")), "good")
    bad = pm.register(_plugin(polyquant_register_recipes=polyquant_register_recipes), "bad")
    assert bad.status == "failed"
    assert "polyquant_register_recipes raised" in (bad.error or "") and "boom" in (bad.error or "")
    assert good.status == "loaded" and "good-one" in pm.get_recipes()
    assert pm.plugin("core").status == "loaded"


def test_malformed_record_drops_the_whole_plugin(pm: PluginManager) -> None:
    def polyquant_register_quantizers():
        return [{"name": "not-a-record"}]

    info = pm.register(
        _plugin(polyquant_register_quantizers=polyquant_register_quantizers, polyquant_register_recipes=_recipes("x1")),
        "malformed",
    )
    assert info.status == "failed"
    assert "malformed record" in (info.error or "") and "QuantizerInfo" in (info.error or "")
    assert "x1" not in pm.get_recipes(), "a failed plugin must contribute nothing"


def test_non_iterable_return_is_malformed(pm: PluginManager) -> None:
    info = pm.register(_plugin(polyquant_register_recipes=lambda: 42), "weird")
    assert info.status == "failed" and "iterable" in (info.error or "")


def test_unknown_hook_is_reported(pm: PluginManager) -> None:
    def polyquant_register_widgets() -> list[object]:  # a hook name no hookspec defines (a typo)
        return []

    info = pm.register(_plugin(polyquant_register_widgets=polyquant_register_widgets), "typo")
    assert info.status == "failed"
    assert "unknown hook(s) polyquant_register_widgets" in (info.error or "")
    assert "polyquant_register_formats" in (info.error or ""), "the error lists the known hooks"


def test_hook_with_arguments_is_rejected_by_pluggy(pm: PluginManager) -> None:
    def polyquant_register_recipes(unexpected):  # hooks take no arguments
        return []

    info = pm.register(_plugin(polyquant_register_recipes=polyquant_register_recipes), "args")
    assert info.status == "failed" and "unexpected" in (info.error or "")


def test_duplicate_names_conflict_names_both_distributions(pm: PluginManager) -> None:
    pm.register(_plugin(polyquant_register_recipes=_recipes("shared")), "first", distribution="dist-a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = pm.register(
            _plugin(polyquant_register_recipes=_recipes("shared", "extra")), "second", distribution="dist-b"
        )
    assert second.status == "conflict"
    assert "dist-a" in (second.error or "") and "dist-b" in (second.error or "")
    assert "extra" not in pm.get_recipes(), "the conflicting plugin is skipped as a whole"
    assert pm.provider("recipe", "shared") == "dist-a", "first in load order keeps the name"
    assert any("shared" in str(w.message) for w in caught)
    with pytest.raises(PluginConflictError) as excinfo:
        pm.check()
    err = excinfo.value
    assert (err.first, err.second, err.kind) == ("dist-a", "dist-b", "recipe")


def test_duplicate_within_one_plugin_is_malformed(pm: PluginManager) -> None:
    info = pm.register(_plugin(polyquant_register_recipes=_recipes("twice", "twice")), "dup")
    assert info.status == "failed" and "more than once" in (info.error or "")


def test_conflict_with_core_builtin(pm: PluginManager) -> None:
    # the core loads first, so a plugin can never replace a built-in
    core_recipes = sorted(pm.get_recipes())
    assert core_recipes, "the core registers its presets through the recipes hook"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        intruder = pm.register(
            _plugin(polyquant_register_recipes=_recipes(core_recipes[0])), "intruder", distribution="d2"
        )
    assert intruder.status == "conflict"
    assert "polyquant-core" in (intruder.error or "") and "d2" in (intruder.error or "")


def test_same_plugin_name_twice_is_an_error(pm: PluginManager) -> None:
    pm.register(_plugin(), "once")
    with pytest.raises(PluginError, match="already registered"):
        pm.register(_plugin(), "once")


def test_record_validation_rejects_bad_fields() -> None:
    with pytest.raises(TypeError, match="name"):
        RecipePreset(" padded ", {})
    with pytest.raises(TypeError, match="factory"):
        QuantizerInfo("q", factory=42)  # type: ignore[arg-type]


def test_env_load_plugins_empty_means_builtins_only() -> None:
    pm = PluginManager(env={LOAD_ENV: ""})
    non_core = [p for p in pm.plugins() if not p.builtin]
    assert all(p.status == "disabled" for p in non_core)
    assert all(LOAD_ENV in (p.error or "") for p in non_core)


def test_env_disable_plugins() -> None:
    installed = [p.name for p in PluginManager(env={}).plugins() if not p.builtin]
    if not installed:
        pytest.skip("no third-party polyquant plugin is installed in this environment")
    target = installed[0]
    pm = PluginManager(env={DISABLE_ENV: f"{target}, unknown-name"})
    info = pm.plugin(target)
    assert info.status == "disabled" and DISABLE_ENV in (info.error or "")


def test_unknown_format_lists_known_names(pm: PluginManager) -> None:
    with pytest.raises(FormatError, match="unknown format 'int99'; known formats: "):
        pm.get_format("int99")


def test_using_plugin_manager_swaps_the_global(pm: PluginManager) -> None:
    before = get_plugin_manager()
    with using_plugin_manager(pm):
        assert get_plugin_manager() is pm
    assert get_plugin_manager() is before


def test_plugin_info_as_dict_is_json_ready(pm: PluginManager) -> None:
    import json

    pm.register(_plugin(polyquant_register_recipes=_recipes("j1")), "json-plugin", distribution="jd", version="1.2")
    data = {p["name"]: p for p in json.loads(json.dumps([p.as_dict() for p in pm.plugins()]))}
    assert data["json-plugin"] == {
        "name": "json-plugin",
        "distribution": "jd",
        "version": "1.2",
        "status": "loaded",
        "error": None,
        "builtin": False,
        "contributes": {"recipe": ["j1"]},
    }

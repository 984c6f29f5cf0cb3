"""The pytest fixtures: isolation of the process-wide manager and temporary registration."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest

from polyquant.plugins import PluginManager, QuantizerInfo, RecipePreset, get_plugin_manager, hookimpl
from polyquant_testkit import PluginStatusError, isolated_plugin_manager, register_plugin


class RecipePlugin:
    @hookimpl
    def polyquant_register_recipes(self) -> list[RecipePreset]:
        return [RecipePreset("tk-int4", {"weights": {"format": "int4"}}, "testkit preset")]


class BrokenPlugin:
    @hookimpl
    def polyquant_register_recipes(self) -> list[RecipePreset]:
        raise ValueError("no recipes today")


class ImpostorPlugin:
    @hookimpl
    def polyquant_register_quantizers(self) -> list[QuantizerInfo]:
        return [QuantizerInfo("rtn", lambda **kw: None, "impostor")]


def _entry_point_names() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="polyquant")}


def test_plugin_manager_is_isolated_and_installed(plugin_manager: PluginManager) -> None:
    assert get_plugin_manager() is plugin_manager
    assert [p.name for p in plugin_manager.plugins()] == ["core"]


def test_installed_plugin_manager_sees_entry_points(installed_plugin_manager: PluginManager) -> None:
    assert get_plugin_manager() is installed_plugin_manager
    assert {p.name for p in installed_plugin_manager.plugins()} == {"core"} | _entry_point_names()


def test_isolated_manager_restores_the_previous_one() -> None:
    before = get_plugin_manager()
    with isolated_plugin_manager() as pm:
        assert get_plugin_manager() is pm and pm is not before
    assert get_plugin_manager() is before


def test_registered_yields_info_and_unregisters(plugin_manager: PluginManager, registered) -> None:
    with registered(RecipePlugin(), "recipes", distribution="tk-dist", version="9.9") as info:
        assert (info.name, info.status, info.distribution, info.version) == ("recipes", "loaded", "tk-dist", "9.9")
        assert info.contributions == {"recipe": ("tk-int4",)}
        assert "tk-int4" in plugin_manager.get_recipes()
    assert "tk-int4" not in plugin_manager.get_recipes()
    assert [p.name for p in plugin_manager.plugins()] == ["core"]


def test_registered_checks_the_status(plugin_manager: PluginManager, registered) -> None:
    with registered(BrokenPlugin(), "broken", expect_status="failed") as info:
        assert "no recipes today" in (info.error or "")
    expected = r"'broken' has status 'failed', expected 'loaded': .*no recipes today"
    with pytest.raises(PluginStatusError, match=expected), registered(BrokenPlugin(), "broken"):
        pass  # pragma: no cover - never reached
    assert [p.name for p in plugin_manager.plugins()] == ["core"]  # unregistered even after the failure
    with registered(BrokenPlugin(), "broken", expect_status=None) as info:
        assert info.status == "failed"


def test_expected_conflicts_do_not_warn(plugin_manager: PluginManager, registered) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with registered(ImpostorPlugin(), "impostor", expect_status="conflict") as info:
            assert "'polyquant-core'" in (info.error or "")
    assert plugin_manager.provider("quantizer", "rtn") == "polyquant-core"


def test_registered_uses_the_installed_manager_when_requested(
    installed_plugin_manager: PluginManager, registered
) -> None:
    with registered(RecipePlugin(), "recipes"):
        assert "tk-int4" in installed_plugin_manager.get_recipes()


def test_register_plugin_validates_expect_status(plugin_manager: PluginManager) -> None:
    with (
        pytest.raises(ValueError, match="expect_status must be one of"),
        register_plugin(RecipePlugin(), expect_status="ok"),
    ):
        pass  # pragma: no cover - never reached


def test_register_plugin_defaults_to_the_current_manager(plugin_manager: PluginManager) -> None:
    with register_plugin(RecipePlugin()) as info:
        assert info.name == "RecipePlugin"
        assert "tk-int4" in plugin_manager.get_recipes()

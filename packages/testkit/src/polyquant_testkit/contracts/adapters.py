"""``AdapterContract``: the conformance suite every model adapter must pass.

Example (in a test module of a plugin)::

    from polyquant_testkit import AdapterContract
    import my_plugin

    class TestLlamaAdapter(AdapterContract):
        plugin = my_plugin
        adapter_name = "llama"

        @staticmethod
        def model_factory():
            return build_tiny_random_llama()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from polyquant_testkit.contracts.base import PluginContract

if TYPE_CHECKING:
    from torch import nn

    from polyquant.plugins import ModelAdapter

__all__ = ["AdapterContract"]


class AdapterContract(PluginContract):
    """Checks a registered model adapter (:class:`~polyquant.plugins.AdapterInfo`) on a small model.

    Attributes:
        adapter_name: the registry name (required).
        model_factory: builds a small model the adapter is meant for (required; a ``staticmethod``).
        recipe: the preset (or recipe mapping) the end-to-end test quantizes with.
        default_exclude_empty: set when the adapter intentionally keeps nothing of this model in high
            precision; the suite then checks that ``default_exclude`` is empty instead of non-empty.

    Tests: registered and constructible, matches the model, blocks are non-empty submodules in model
    order, every default-exclude pattern names existing modules, and :func:`polyquant.quantize` with the
    adapter quantizes something while leaving every default-excluded module untouched.
    """

    adapter_name: ClassVar[str]
    recipe: ClassVar[str] = "w8a16"
    default_exclude_empty: ClassVar[bool] = False

    @staticmethod
    def model_factory() -> nn.Module:
        """Build the model the adapter is tested on (override with a ``staticmethod``)."""
        raise AssertionError("AdapterContract: set model_factory to a staticmethod building a small model")

    # ------------------------------------------------------------------ helpers
    def adapter(self) -> ModelAdapter:
        """The adapter under test, built through the registry."""
        from polyquant.plugins import get_plugin_manager

        for info in get_plugin_manager().get_adapters():
            if info.name == self.adapter_name:
                return info.factory()
        raise AssertionError(f"no adapter named {self.adapter_name!r} is registered")

    def _excluded(self, model: nn.Module) -> list[str]:
        from polyquant.recipes import match_pattern

        patterns = list(self.adapter().default_exclude(model))
        return [name for name, _ in model.named_modules() if name and any(match_pattern(p, name) for p in patterns)]

    # ------------------------------------------------------------------ tests
    def test_adapter_is_registered(self) -> None:
        """The adapter is registered and its factory returns a ModelAdapter of that name."""
        from polyquant.plugins import ModelAdapter

        adapter = self.adapter()
        assert isinstance(adapter, ModelAdapter), "the factory must return a ModelAdapter"
        assert adapter.name == self.adapter_name

    def test_matches_the_model(self) -> None:
        """``matches`` is true for the model it is meant for."""
        assert self.adapter().matches(self.model_factory()) is True

    def test_blocks_are_submodules_in_order(self) -> None:
        """``blocks`` are distinct submodules of the model, listed in module order."""
        model = self.model_factory()
        blocks = self.adapter().blocks(model)
        assert blocks, f"{self.adapter_name}: blocks() returned nothing; return [('', model)] for a single block"
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        positions = []
        for name, module in blocks:
            assert model.get_submodule(name) is module, f"block {name!r} is not the submodule of that name"
            positions.append(order[name])
        assert positions == sorted(positions), "blocks must be listed in the model's module order"
        assert len({id(m) for _, m in blocks}) == len(blocks), "a block is listed twice"

    def test_default_exclude_patterns_match_modules(self) -> None:
        """Every default-exclude pattern names existing modules (or the list is empty on purpose)."""
        from polyquant.recipes import match_pattern

        model = self.model_factory()
        patterns = list(self.adapter().default_exclude(model))
        if self.default_exclude_empty:
            assert patterns == [], f"{self.adapter_name}: default_exclude_empty is set but it returned {patterns}"
            return
        assert patterns, (
            f"{self.adapter_name}: default_exclude() is empty for this model; if that is intended, set "
            f"default_exclude_empty = True in the test class"
        )
        names = [name for name, _ in model.named_modules()]
        for pattern in patterns:
            assert any(match_pattern(pattern, name) for name in names), f"pattern {pattern!r} matches no module"

    def test_quantize_respects_default_exclusions(self) -> None:
        """``polyquant.quantize`` with the adapter quantizes something and nothing it excludes."""
        import polyquant
        from polyquant.nn import QuantizedModule

        model = self.model_factory()
        excluded = set(self._excluded(model))
        model, report = polyquant.quantize(model, self.recipe, adapter=self.adapter_name, progress=False)
        assert report.summary.adapter == self.adapter_name
        assert report.rows, f"quantizing with {self.recipe!r} and adapter {self.adapter_name!r} quantized nothing"
        modules = dict(model.named_modules())
        for name in excluded:
            if name in modules:
                assert not isinstance(modules[name], QuantizedModule), f"default-excluded module {name!r} was quantized"
        assert not {row.name for row in report.rows} & excluded

"""int4_pow2 passes the testkit's format suite, and its numbers are what the format promises."""

from __future__ import annotations

import pytest
import torch

import polyquant.formats
import polyquant_example.plugin as plugin
from polyquant_example.format import INT4_POW2, integer_levels
from polyquant_testkit import FormatContract


class TestInt4Pow2Format(FormatContract):
    plugin = plugin
    plugin_name = "example"
    format_name = "int4_pow2"
    max_relative_error = 0.16  # measured 0.149 on N(0, 1), groups of 32 (int4 with fp16 scales: 0.097)


def test_values_are_integers_times_a_power_of_two_step() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    qt = INT4_POW2.quantize(w)
    step = qt.qparams().scale / 4  # one step per group of 32
    mantissa, _ = torch.frexp(step)
    assert bool((mantissa == 0.5).all()), "every step must be an exact power of two"
    q = qt.dequantize().reshape(64, 8, 32) / step.reshape(64, 8, 1)
    assert torch.equal(q, q.round()) and int(q.abs().max()) <= 7
    assert sorted({int(v) for v in q.unique().tolist()}) == integer_levels()


def test_no_weight_is_clipped() -> None:
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(2))
    qt = INT4_POW2.quantize(w)
    groups_max = w.abs().reshape(16, 4, 32).amax(-1)
    grid_max = 7 * qt.qparams().scale / 4
    assert bool((groups_max <= grid_max).all())
    assert bool((groups_max > grid_max / 2).all()), "rceil picks the smallest power of two that covers the group"


def test_storage_is_4_25_bits_per_weight() -> None:
    qt = INT4_POW2.quantize(torch.randn(32, 256))
    assert qt.bits_per_weight == 4.25
    assert qt.scale is not None and qt.scale.dtype == torch.uint8  # one E8M0 byte per group


@pytest.mark.parametrize("group_size", [16, 64, 0])
def test_group_size_option(group_size: int) -> None:
    spec = INT4_POW2.with_options(group_size=group_size)
    w = torch.randn(8, 128)
    assert spec.scale_dtype == "e8m0" and spec.scale_rounding == "rceil"
    assert spec.quantize(w).dequantize().shape == w.shape


def test_registered_only_through_the_plugin(plugin_manager, registered) -> None:
    assert "int4_pow2" not in polyquant.formats.available()
    with registered(plugin, "example") as info:
        assert polyquant.formats.get("int4_pow2") == INT4_POW2
        assert info.contributions["format"] == ("int4_pow2",)
        assert plugin_manager.provider("format", "int4_pow2") == "example"

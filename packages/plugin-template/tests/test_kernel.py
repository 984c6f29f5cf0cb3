"""The int4_pow2 CPU kernel passes the testkit's kernel suite and is chosen by dispatch."""

from __future__ import annotations

import pytest
import torch

import polyquant
import polyquant_example.plugin as plugin
from polyquant.activations import ActivationSpec
from polyquant.errors import KernelError
from polyquant.kernels import linear_reference
from polyquant_example.format import INT4_POW2
from polyquant_example.kernel import dequantize_int4_pow2, linear_int4_pow2
from polyquant_testkit import KernelContract


class TestInt4Pow2LinearKernel(KernelContract):
    plugin = plugin
    plugin_name = "example"
    op = "linear"
    kernel_name = "cpu_int4_pow2"
    format_name = "int4_pow2"
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    tolerance = 0.0  # both paths dequantize exactly and run the same float32 matmul


@pytest.mark.parametrize("group_size", [32, 128, 0])
def test_dequantize_is_bit_exact(group_size: int) -> None:
    spec = INT4_POW2.with_options(group_size=group_size)
    qt = spec.quantize(torch.randn(24, 256, generator=torch.Generator().manual_seed(group_size)) * 3)
    assert torch.equal(dequantize_int4_pow2(qt), qt.dequantize())


def test_activation_quantization_matches_reference() -> None:
    qt = INT4_POW2.quantize(torch.randn(32, 64))
    x = torch.randn(5, 64)
    act = ActivationSpec("int8")
    torch.testing.assert_close(linear_int4_pow2(x, qt, act=act), linear_reference(x, qt, act=act), rtol=0, atol=0)


def test_rejects_other_formats() -> None:
    qt = polyquant.formats.get("int4").quantize(torch.randn(8, 128))
    with pytest.raises(KernelError, match="needs int4_pow2 weights"):
        dequantize_int4_pow2(qt)


def test_dispatch_selects_it_for_quantized_models(plugin_manager, registered) -> None:
    with registered(plugin, "example"):
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
        model, report = polyquant.quantize(model, {"weights": {"format": "int4_pow2"}}, progress=False)
        assert [row.kernel for row in report.rows] == ["cpu_int4_pow2", "cpu_int4_pow2"]
        x = torch.randn(4, 64)
        with polyquant.kernels.use(linear="reference"):
            expected = model(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        assert [r.bits_per_weight for r in report.rows] == [4.25, 4.25]
        assert all(0 < row.weight_rel_error < 0.2 for row in report.rows)

"""Quantized modules: exact forward passes, buffers, state dicts, device/dtype moves, conv and embedding rules."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import polyquant.formats as formats
from polyquant import kernels
from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, FormatError
from polyquant.kernels.ops import fake_quantize_activation
from polyquant.nn import (
    ConvWeightView,
    QConv1d,
    QConv2d,
    QEmbedding,
    QLinear,
    quantize_module,
)
from polyquant.nn.qembedding import gather_rows
from polyquant.qtensor import QTensor


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- QLinear
@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4", "mxfp4", "nvfp4", "fp8_e4m3", "ternary"])
def test_qlinear_matches_dense_linear_on_dequantized_weight(fmt: str) -> None:
    linear = nn.Linear(64, 48)
    layer = QLinear.from_linear(linear, formats.get(fmt).with_options(group_size=32) if fmt in ("int4",) else fmt)
    x = torch.randn(5, 64, generator=_gen())
    with kernels.use(linear="reference"):
        y = layer(x)
    expected = F.linear(x, layer.weight.dequantize(torch.float32), linear.bias)
    assert torch.equal(y, expected)
    assert (layer.in_features, layer.out_features) == (64, 48)
    assert layer.bias is linear.bias


def test_qlinear_weight_is_a_view_over_named_buffers() -> None:
    layer = QLinear.from_linear(nn.Linear(64, 16), formats.get("int4").with_options(group_size=32, symmetric=False))
    buffers = dict(layer.named_buffers())
    assert set(buffers) == {"weight_packed", "weight_scale", "weight_zero"}
    for key, tensor in layer.weight.tensors().items():
        assert tensor is buffers[f"weight_{key}"]  # the same storage: nothing is held twice
    assert set(layer.state_dict()) == {"weight_packed", "weight_scale", "weight_zero", "bias"}
    assert layer.weight is layer.weight  # the view is cached while the buffers are unchanged


def test_qlinear_state_dict_round_trip_and_cache_reset() -> None:
    spec = formats.get("int8")
    a = QLinear.from_linear(nn.Linear(32, 16), spec)
    b = QLinear.from_linear(nn.Linear(32, 16), spec)
    x = torch.randn(3, 32, generator=_gen())
    b(x)  # populate b's kernel cache with its old weight
    b.load_state_dict(a.state_dict())
    assert not b._kernel_cache  # loading invalidates repacked weights
    assert torch.equal(a(x), b(x))


def test_qlinear_rebuilds_view_after_buffer_replacement() -> None:
    """accelerate's offloading swaps buffers in and out; the QTensor view must follow."""
    layer = QLinear.from_linear(nn.Linear(32, 16), "int8")
    first = layer.weight
    layer.weight_scale = layer.weight_scale.clone() * 2
    second = layer.weight
    assert second is not first
    assert torch.equal(second.dequantize(), first.dequantize() * 2)


def test_qlinear_works_under_accelerate_buffer_offloading() -> None:
    accelerate = pytest.importorskip("accelerate")
    static = ActivationSpec(format="int8", granularity="tensor", dynamic=False)
    model = nn.Sequential(QLinear.from_linear(nn.Linear(64, 32), "int8", act=static, act_scale=0.02))
    x = torch.randn(3, 64, generator=_gen())
    reference = model(x)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"), offload_buffers=True)
    assert {t.device.type for t in model[0].buffers()} == {"meta"}  # weights live in accelerate's store
    assert torch.equal(model(x), reference)


def test_qlinear_dtype_casts_keep_stored_tensors() -> None:
    layer = QLinear.from_linear(nn.Linear(64, 32), "nvfp4")
    stored = {k: v.clone() for k, v in layer.state_dict().items() if k.startswith("weight_")}
    layer = layer.to(torch.bfloat16)
    for key, tensor in stored.items():
        assert torch.equal(getattr(layer, key), tensor)  # codes and fp32 tensor scale untouched
    assert layer.weight.dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert layer(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_qlinear_deepcopy_is_independent() -> None:
    layer = QLinear.from_linear(nn.Linear(32, 8), "int8")
    clone = copy.deepcopy(layer)
    clone.weight_packed.zero_()
    assert not torch.equal(layer.weight.codes(), clone.weight.codes())


def test_qlinear_static_and_dynamic_activations() -> None:
    linear = nn.Linear(32, 8)
    x = torch.randn(4, 32, generator=_gen())
    static = ActivationSpec(format="int8", granularity="tensor", dynamic=False)
    layer = QLinear.from_linear(linear, "int8", act=static, act_scale=0.05)
    assert layer.act_scale is not None and layer.act_scale.dtype == torch.float32
    assert "act_scale" in layer.state_dict()
    with kernels.use(linear="reference"):
        y = layer(x)
    xq = fake_quantize_activation(x, static, torch.tensor(0.05))
    assert torch.equal(y, F.linear(xq, layer.weight.dequantize(), linear.bias))
    dynamic = QLinear.from_linear(linear, "int8", act=ActivationSpec(format="int8", granularity="token"))
    assert dynamic.act_scale is None and "act_scale" not in dynamic.state_dict()
    with pytest.raises(CalibrationError, match=r"static activations .* need act_scale"):
        QLinear.from_linear(linear, "int8", act=static)
    with pytest.raises(CalibrationError, match="positive and finite"):
        QLinear.from_linear(linear, "int8", act=static, act_scale=float("nan"))


def test_qlinear_repr_and_kernel_context() -> None:
    layer = QLinear.from_linear(nn.Linear(64, 32), formats.get("int4").with_options(group_size=32))
    text = repr(layer)
    assert "format=int4" in text and "per-group(32)" in text and "bits/weight=" in text and "kernel=" in text
    ctx = layer.kernel_context(batch=7)
    assert (ctx.op, ctx.format, ctx.batch, ctx.weight) == ("linear", "int4", 7, layer.weight)
    assert layer.selected_kernel().op == "linear"


def test_qlinear_rejects_bad_inputs() -> None:
    with pytest.raises(TypeError, match=r"expects an nn\.Linear"):
        QLinear.from_linear(nn.Conv1d(2, 2, 1), "int8")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="2-D"):
        QLinear(formats.get("int8").quantize(torch.randn(2, 3, 4)))
    with pytest.raises(FormatError, match="bias must have shape"):
        QLinear(formats.get("int8").quantize(torch.randn(4, 8)), torch.zeros(5))
    with pytest.raises(TypeError, match="must be a QTensor"):
        QLinear.from_linear(nn.Linear(4, 4), "int8").weight = torch.zeros(4, 4)  # type: ignore[assignment]


# ------------------------------------------------------------------------------------------- convs
def _mamba_conv() -> nn.Conv1d:
    transformers = pytest.importorskip("transformers")
    config = transformers.MambaConfig(
        hidden_size=32, state_size=8, num_hidden_layers=1, vocab_size=64, intermediate_size=64
    )
    model = transformers.MambaForCausalLM(config)
    conv = model.backbone.layers[0].mixer.conv1d
    assert conv.groups == conv.in_channels == 64 and conv.padding == (3,)
    return conv


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_qconv1d_on_mamba_depthwise_conv(fmt: str) -> None:
    conv = _mamba_conv()
    spec = formats.get(fmt).with_options(group_size=0 if fmt == "int4" else None)
    qconv = QConv1d.from_conv(conv, spec)
    x = torch.randn(2, 64, 12, generator=_gen())
    with torch.no_grad(), kernels.use(conv="reference"):
        y, ref = qconv(x), conv(x)
        expected = F.conv1d(x, qconv.dequantized_weight(), conv.bias, padding=3, groups=64)
    assert torch.equal(y, expected)
    assert float((y - ref).norm() / ref.norm()) < (0.01 if fmt == "int8" else 0.15)
    assert qconv.dequantized_weight().shape == conv.weight.shape


def test_qconv1d_group_divisibility_error_names_fix() -> None:
    conv = _mamba_conv()
    with pytest.raises(
        FormatError,
        match=r"reduction size of in_channels/groups·kernel = 4, not divisible by group size 128.*group_size: 0.*4, 2",
    ):
        QConv1d.from_conv(conv, formats.get("int4"))  # int4 defaults to groups of 128


def test_qconv2d_groups_span_the_flattened_filter() -> None:
    """Groups of 16 over a (8, 4, 3, 3) weight: each group covers 16 consecutive elements of weight.flatten(1)."""
    conv = nn.Conv2d(4, 8, 3, padding=1, stride=2)
    spec = formats.get("int4").with_options(group_size=12)
    qconv = QConv2d.from_conv(conv, spec)
    assert tuple(qconv.weight.shape) == (8, 36)
    expected = spec.fake_quantize(conv.weight.detach().flatten(1)).reshape(8, 4, 3, 3)
    assert torch.equal(qconv.dequantized_weight(), expected)
    x = torch.randn(2, 4, 9, 9, generator=_gen())
    with kernels.use(conv="reference"):
        y = qconv(x)
    assert torch.equal(y, F.conv2d(x, expected, conv.bias, stride=2, padding=1))


def test_qconv2d_in_a_tiny_unet_block_with_activations() -> None:
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.SiLU())
    x = torch.randn(2, 3, 16, 16, generator=_gen())
    with torch.no_grad():
        ref = block(x)
    act = ActivationSpec(format="int8", granularity="token")
    for i in (0, 2):
        block[i] = quantize_module(block[i], "int8", act=act)
    assert isinstance(block[2], QConv2d) and block[2].groups == 2
    with torch.no_grad():
        out = block(x)
    assert float((out - ref).norm() / ref.norm()) < 0.03


def test_conv_weight_view_forwards_to_base() -> None:
    qconv = QConv2d.from_conv(nn.Conv2d(3, 4, 3), "int8")
    view = qconv.conv_weight()
    assert isinstance(view, ConvWeightView) and qconv.conv_weight() is view
    assert view.shape == torch.Size((4, 3, 3, 3)) and view.spec is qconv.weight.spec
    assert view.nbytes == qconv.weight.nbytes and view.codes().shape == view.shape
    assert qconv.kernel_context(batch=2).weight is view
    with pytest.raises(FormatError, match="cannot view"):
        ConvWeightView(qconv.weight, (4, 3, 3, 2))


def test_qconv_rejects_unsupported_padding_mode() -> None:
    with pytest.raises(FormatError, match="padding_mode='reflect'"):
        QConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "int8")
    with pytest.raises(TypeError, match=r"expects an nn\.Conv1d"):
        QConv1d.from_conv(nn.Conv2d(3, 4, 3), "int8")


# ------------------------------------------------------------------------------------------- embedding
@settings(max_examples=25, deadline=None)
@given(
    fmt=st.sampled_from(["int8", "int4", "nf4", "mxfp4", "nvfp4", "ternary", "uint4"]),
    index=st.lists(st.integers(min_value=0, max_value=63), min_size=1, max_size=20),
)
def test_gather_rows_is_bit_exact(fmt: str, index: list[int]) -> None:
    table = torch.randn(64, 128, generator=_gen(1))
    qt = formats.get(fmt).quantize(table)
    idx = torch.tensor(index)
    assert torch.equal(gather_rows(qt, idx).dequantize(), qt.dequantize()[idx])


def test_qembedding_looks_up_rows_without_full_dequantize(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = nn.Embedding(100, 32, padding_idx=0)
    qemb = QEmbedding.from_embedding(emb, formats.get("int4").with_options(group_size=16))
    full = qemb.weight.dequantize()
    assert qemb.row_gather and qemb.padding_idx == 0

    def forbidden(self: QTensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        assert self.shape[0] < 100, "the whole table was dequantized"
        return original(self, dtype)

    original = QTensor.dequantize
    monkeypatch.setattr(QTensor, "dequantize", forbidden)
    idx = torch.tensor([[5, 7, 5], [99, 0, 7]])
    assert torch.equal(qemb(idx), full[idx])
    with pytest.raises(IndexError, match="out of range"):
        qemb(torch.tensor([100]))


def test_qembedding_falls_back_to_the_table_for_flat_blocks() -> None:
    """bitsandbytes-style flat blocks span rows, so rows cannot be gathered alone: the table is dequantized."""
    emb = nn.Embedding(64, 64)
    qemb = QEmbedding.from_embedding(emb, "int8_blockwise")
    assert not qemb.row_gather and "lookup=table" in repr(qemb)
    idx = torch.tensor([3, 63, 3])
    assert torch.equal(qemb(idx), qemb.weight.dequantize()[idx])
    with pytest.raises(FormatError, match="not stored independently"):
        gather_rows(qemb.weight, idx)


def test_qembedding_rejects_activation_settings_and_unsupported_tables() -> None:
    with pytest.raises(FormatError, match="activation quantization does not apply"):
        QEmbedding.from_embedding(nn.Embedding(4, 8), "int8", act=ActivationSpec())
    with pytest.raises(FormatError, match="max_norm"):
        QEmbedding.from_embedding(nn.Embedding(4, 8, max_norm=1.0), "int8")
    with pytest.raises(TypeError, match="integer indices"):
        QEmbedding.from_embedding(nn.Embedding(4, 8), "int8")(torch.zeros(2))


def test_quantize_module_dispatches_by_type() -> None:
    assert isinstance(quantize_module(nn.Linear(8, 8), "int8"), QLinear)
    assert isinstance(quantize_module(nn.Conv1d(8, 8, 1), "int8"), QConv1d)
    assert isinstance(quantize_module(nn.Conv2d(8, 8, 1), "int8"), QConv2d)
    assert isinstance(quantize_module(nn.Embedding(8, 8), "int8"), QEmbedding)
    with pytest.raises(TypeError, match=r"cannot quantize a LayerNorm; supported: nn\.Linear"):
        quantize_module(nn.LayerNorm(8), "int8")

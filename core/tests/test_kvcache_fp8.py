"""FP8 (E4M3/E5M2) KV quantization with per-token and per-tensor scales."""

from __future__ import annotations

import pytest
import torch

from polyquant import kvcache
from polyquant.errors import FormatError
from polyquant.formats.minifloat import FP8_E4M3
from polyquant.kvcache import FP8KVConfig


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum() / (b**2).sum())


def test_fp8_per_token_matches_torch_float8() -> None:
    x = torch.randn(2, 2, 9, 64) * torch.logspace(-3, 3, 9).reshape(1, 1, 9, 1)
    quantizer = FP8KVConfig().build()
    codes = quantizer.encode(x)
    scale = codes["scale"]
    assert codes["codes"].dtype == torch.uint8 and scale.shape == (2, 2, 9, 1)
    torch.testing.assert_close(scale, x.abs().amax(-1, keepdim=True) / 448)
    assert torch.equal(codes["codes"], FP8_E4M3.encode(x / scale))
    if hasattr(torch, "float8_e4m3fn"):
        reference = (x / scale).to(torch.float8_e4m3fn).float() * scale
        assert torch.equal(quantizer.decode(codes), reference)
    assert _rel(quantizer.decode(codes), x) < 1e-3


def test_fp8_per_tensor_scale_is_static() -> None:
    cache = kvcache.get("fp8_e4m3-tensor").cache()
    first = torch.randn(1, 2, 8, 64)
    cache.append(first, first)
    scale = cache.key_quantizer.tensor_scale  # type: ignore[attr-defined]
    assert scale == pytest.approx(float(first.abs().max()) / 448)
    cache.append(10 * first, first)  # beyond the first chunk's range: saturates at ±448·scale
    assert cache.key_quantizer.tensor_scale == scale  # type: ignore[attr-defined]
    assert float(cache.keys()[:, :, 8:].abs().max()) == pytest.approx(448 * scale)
    assert cache.memory()["key.state"] == 4 and "key.scale" not in cache.memory()
    fixed = kvcache.get("fp8_e4m3-tensor", scale=0.5).cache()
    fixed.append(first, first)
    assert fixed.key_quantizer.tensor_scale == 0.5  # type: ignore[attr-defined]


def test_fp8_e5m2_and_errors() -> None:
    x = torch.randn(1, 1, 4, 32)
    quantizer = FP8KVConfig(element="e5m2").build()
    assert _rel(quantizer.decode(quantizer.encode(x)), x) < 5e-3
    with pytest.raises(FormatError, match="use it with granularity='tensor'"):
        FP8KVConfig(scale=1.0)
    with pytest.raises(FormatError, match="element must be one of e4m3, e5m2"):
        FP8KVConfig(element="e3m4")  # type: ignore[arg-type]
    assert FP8KVConfig().bits_per_element(128) == 8.25 and FP8KVConfig(granularity="tensor").bits_per_element(64) == 8

"""QuantizedKVCache: append/read, attention scores, memory accounting, RoPE-first (algorithms.md §2 check 3)."""

from __future__ import annotations

import pytest
import torch

from polyquant import kvcache
from polyquant.errors import FormatError
from polyquant.kvcache import KVFormat, QuantizedKVCache, TurboQuantConfig, random_orthogonal

ALL_FORMATS = kvcache.available()


def _rope(x: torch.Tensor, position: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding (interleaved pairs) of vectors ``x`` at ``position``."""
    d = x.shape[-1]
    angles = position * base ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    cos, sin = torch.cos(angles), torch.sin(angles)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def test_rotation_after_rope_preserves_scores_before_does_not() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 128, generator=gen, dtype=torch.float64)
    p = random_orthogonal(128, seed=7)
    matrix = p.matrix.double()
    score = _rope(q, 7) @ _rope(k, 3)
    after = (matrix @ _rope(q, 7)) @ (matrix @ _rope(k, 3))  # what the cache does: Π after RoPE
    before = _rope(matrix @ q, 7) @ _rope(matrix @ k, 3)  # Π folded into W_q / W_k
    assert float(abs(after - score)) < 1e-5 * float(abs(score))
    assert float(abs(before - score)) > 0.1 * float(abs(score))
    # and the library's rotation object agrees with the explicit matrix
    torch.testing.assert_close(p.apply(_rope(q, 7).float()), (matrix @ _rope(q, 7)).float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_every_format_round_trips(name: str) -> None:
    fmt = kvcache.get(name, residual_length=16)
    cache = fmt.cache()
    gen = torch.Generator().manual_seed(1)
    k, v = torch.randn(2, 2, 2, 96, 64, generator=gen)
    cache.append(k[:, :, :60], v[:, :, :60])
    cache.append(k[:, :, 60:], v[:, :, 60:])
    assert len(cache) == 96 and cache.quantized_tokens > 0
    keys, values = cache.keys(), cache.values()
    assert keys.shape == k.shape and values.shape == v.shape
    assert float(((values - v) ** 2).sum() / (v**2).sum()) < 0.45  # worst: turbo1 (0.36)
    q = torch.randn(2, 4, 3, 64, generator=gen)  # grouped-query: 4 query heads on 2 KV heads
    scores = cache.attention_scores(q)
    assert scores.shape == (2, 4, 3, 96)
    reference = (q.reshape(2, 2, 6, 64) @ keys.transpose(-1, -2)).reshape(2, 4, 3, 96)
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)


def test_the_cache_stores_codes_not_floats() -> None:
    cache = kvcache.get("turbo3-prod").cache()
    cache.append(torch.randn(1, 4, 64, 128), torch.randn(1, 4, 64, 128))
    stored = {**cache._keys, **{f"v.{n}": t for n, t in (cache._values or {}).items()}}  # type: ignore[arg-type]
    assert all(t.dtype in (torch.uint8, torch.float16) for t in stored.values())
    assert all(t.shape[-1] <= 48 for t in stored.values())  # packed rows, never 128 floats
    assert cache.residual_tokens == 0


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("turbo1", 1.125),
        ("turbo3", 3.125),
        ("turbo4", 4.125),
        ("turbo2.5", 2.5),
        ("turbo3-prod", (3.25 + 3.125) / 2),
        ("int4", 4.25),
        ("fp8_e4m3", 8.25),
    ],
)
def test_bits_per_element_is_exact(name: str, bits: float) -> None:
    fmt = kvcache.get(name)
    assert fmt.bits_per_element(128) == bits
    cache = fmt.cache()
    heads, tokens = 8, 512
    cache.append(torch.randn(1, heads, tokens, 128), torch.randn(1, heads, tokens, 128))
    state = cache.memory()["key.state"] + cache.memory()["value.state"]  # turbo2.5: channel permutations
    assert 8 * (cache.nbytes - state) / (2 * heads * tokens * 128) == bits
    assert cache.nbytes == sum(cache.memory().values())
    fp16_bytes = 2 * heads * tokens * 128 * 2
    assert fp16_bytes / (cache.nbytes - state) == pytest.approx(16 / bits)


def test_prod_attention_scores_use_the_unbiased_estimator() -> None:
    gen = torch.Generator().manual_seed(4)
    k = torch.randn(1, 1, 2000, 128, generator=gen)
    q = torch.randn(1, 1, 64, 128, generator=gen)
    true = q @ k.transpose(-1, -2)
    slopes = {}
    for name in ("turbo2", "turbo2-prod"):
        cache = kvcache.get(name).cache()
        cache.append(k, k)
        est = cache.attention_scores(q)
        x, y = true.flatten(), est.flatten()
        slopes[name] = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert slopes["turbo2-prod"] == pytest.approx(1.0, abs=0.03)
    assert slopes["turbo2"] < 0.92  # MSE-only shrinks inner products (2 bits: ≈ 0.88)


def test_dtype_device_and_incremental_equivalence() -> None:
    k = torch.randn(1, 2, 40, 64, dtype=torch.bfloat16)
    one = kvcache.get("turbo3").cache()
    one.append(k, k)
    many = kvcache.get("turbo3").cache()
    for t in range(40):
        many.append(k[:, :, t : t + 1], k[:, :, t : t + 1])
    assert one.keys().dtype == torch.bfloat16 and one.keys().device == k.device
    assert torch.equal(one.keys(), many.keys()) and one.nbytes == many.nbytes


def test_clear_and_repr() -> None:
    cache = kvcache.get("int4").cache()
    cache.append(torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 8))
    assert "int4" in repr(cache) and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.bits_per_element == 0.0
    cache.append(torch.randn(2, 3, 1, 16), torch.randn(2, 3, 1, 16))  # a new shape after clear()
    assert cache.keys().shape == (2, 3, 1, 16)


def test_errors() -> None:
    cache = kvcache.get("turbo2").cache()
    with pytest.raises(FormatError, match="the cache is empty"):
        cache.keys()
    with pytest.raises(FormatError, match="the cache is empty"):
        cache.attention_scores(torch.randn(1, 1, 1, 64))
    with pytest.raises(FormatError, match=r"must agree in batch, heads and tokens"):
        cache.append(torch.randn(1, 2, 3, 64), torch.randn(1, 2, 4, 64))
    with pytest.raises(FormatError, match=r"transpose \(batch, tokens, heads, head_dim\)"):
        cache.append(torch.randn(3, 64), torch.randn(3, 64))
    cache.append(torch.randn(1, 2, 3, 64), torch.randn(1, 2, 3, 64))
    with pytest.raises(FormatError, match="one cache per layer"):
        cache.append(torch.randn(1, 4, 3, 64), torch.randn(1, 4, 3, 64))
    with pytest.raises(FormatError, match="multiple of 2"):
        cache.attention_scores(torch.randn(1, 3, 1, 64))
    with pytest.raises(FormatError, match="needs a KVFormat"):
        QuantizedKVCache("turbo2")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="residual_length must be a non-negative integer"):
        KVFormat("x", TurboQuantConfig(), TurboQuantConfig(), residual_length=-1)
    with pytest.raises(FormatError, match="must be a quantizer config"):
        KVFormat("x", "turbo", TurboQuantConfig())  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda() -> None:
    for name in ("turbo3-prod", "turbo2.5", "kivi2", "fp8_e4m3"):
        cache = kvcache.get(name, residual_length=8).cache()
        k = torch.randn(1, 2, 64, 128, device="cuda", dtype=torch.float16)
        cache.append(k, k)
        assert cache.keys().device.type == "cuda"
        cpu = kvcache.get(name, residual_length=8).cache()
        cpu.append(k.cpu(), k.cpu())
        torch.testing.assert_close(cache.keys().cpu(), cpu.keys(), atol=2e-2, rtol=1e-2)
        scores = cache.attention_scores(torch.randn(1, 2, 1, 128, device="cuda"))
        assert scores.device.type == "cuda"

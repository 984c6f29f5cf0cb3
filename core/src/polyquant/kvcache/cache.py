"""A quantized KV cache independent of any model library: :class:`KVFormat` and :class:`QuantizedKVCache`.

A :class:`KVFormat` (frozen) names the quantizer of the keys, the one of the values, and how many of the
most recent tokens stay in full precision (``residual_length``). :meth:`KVFormat.cache` (or
``QuantizedKVCache(fmt)``) makes an empty cache for **one attention layer**:

* ``append(key, value)`` takes ``(batch, heads, tokens, head_dim)`` tensors (any floating dtype, any
  device). New tokens join the full-precision window; whenever more than ``residual_length`` tokens are
  in it, the oldest ones leave it in whole blocks (e.g. KIVI's groups of 32 tokens) and are encoded. The
  cache keeps **only the encoded tensors** (packed codes, norms, scales) and the window, never
  dequantized floats.
* ``keys()`` / ``values()`` return the dequantized quantized part followed by the exact window, in the
  dtype of the first append; ``attention_scores(query)`` returns ``query · keysᵀ`` computed on the codes
  (for TurboQuant-prod keys, the unbiased inner-product estimator).
* ``nbytes`` is the exact size of what is stored (encoded tensors + window + data-dependent state such
  as a per-tensor scale or TurboQuant's channel permutation; seeded rotations and sketches are
  regenerated from the seed and not counted); ``bits_per_element`` is ``8·nbytes`` per cached
  key/value element.

**Append keys after RoPE.** Rotation-based formats (TurboQuant) rotate each cached key by an orthogonal
``Π``. Scores are preserved only when ``Π`` acts after the rotary embedding:
``(Π R_m q)ᵀ(Π R_n k) = qᵀ R_{n−m} k`` exactly, while ``Π`` folded into the projections before RoPE
changes them. So pass the post-RoPE keys, and ``attention_scores`` the post-RoPE queries; the cache
applies ``Π`` to both. KIVI's per-channel key statistics are likewise those of post-RoPE keys.

Example:
    >>> import torch
    >>> from polyquant import kvcache
    >>> cache = kvcache.get("kivi2", residual_length=32).cache()
    >>> for _ in range(3):
    ...     cache.append(torch.randn(1, 4, 40, 128), torch.randn(1, 4, 40, 128))
    >>> len(cache), cache.quantized_tokens, cache.residual_tokens
    (120, 64, 56)
    >>> cache.keys().shape
    torch.Size([1, 4, 120, 128])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from polyquant.errors import FormatError
from polyquant.kvcache.base import KVQuantizerConfig, KVTensorQuantizer, check_kv_tensor, encoded_nbytes

__all__ = ["KVFormat", "QuantizedKVCache"]


@dataclass(frozen=True)
class KVFormat:
    """A KV-cache format: the key quantizer, the value quantizer and the full-precision window.

    Attributes:
        name: the registry name (``"turbo3-prod"``) or any label.
        key: settings of the key quantizer (e.g. :class:`~polyquant.kvcache.TurboQuantConfig`).
        value: settings of the value quantizer.
        residual_length: most recent tokens kept in full precision (``R``; at least this many, fewer
            than ``R + block_tokens``).
        description: one line.

    Example:
        >>> from polyquant.kvcache import FP8KVConfig
        >>> fmt = KVFormat("fp8", FP8KVConfig(), FP8KVConfig())
        >>> fmt.bits_per_element(128)
        8.25
    """

    name: str
    key: KVQuantizerConfig
    value: KVQuantizerConfig
    residual_length: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise FormatError(f"KVFormat.name must be a non-empty string, got {self.name!r}")
        for attr in ("key", "value"):
            config = getattr(self, attr)
            if not callable(getattr(config, "build", None)) or not callable(getattr(config, "bits_per_element", None)):
                raise FormatError(
                    f"KVFormat {self.name!r}: {attr} must be a quantizer config with build() and bits_per_element() "
                    f"(e.g. TurboQuantConfig, IntKVConfig, FP8KVConfig), got {type(config).__name__}"
                )
        r = self.residual_length
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise FormatError(f"KVFormat {self.name!r}: residual_length must be a non-negative integer, got {r!r}")

    @property
    def block_tokens(self) -> int:
        """Tokens leave the full-precision window in multiples of this (lcm of both quantizers' blocks)."""
        return math.lcm(int(self.key.block_tokens), int(self.value.block_tokens))

    def bits_per_element(self, head_dim: int) -> float:
        """Stored bits per element of the quantized part (mean of keys and values, window excluded)."""
        return (self.key.bits_per_element(head_dim) + self.value.bits_per_element(head_dim)) / 2

    def cache(self) -> QuantizedKVCache:
        """An empty cache for one attention layer."""
        return QuantizedKVCache(self)


def _concat(old: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if old is None:
        return new
    if set(old) != set(new):
        raise FormatError(f"encoded tensors changed from {sorted(old)} to {sorted(new)}; a quantizer must be stable")
    return {name: torch.cat([old[name], new[name]], dim=2) for name in old}


class QuantizedKVCache:
    """The quantized keys and values of one attention layer (see the module docstring).

    Args:
        fmt: the format; :func:`polyquant.kvcache.get` builds the registered ones.

    Example:
        >>> import torch
        >>> from polyquant import kvcache
        >>> cache = kvcache.get("turbo3-prod").cache()
        >>> cache.append(torch.randn(2, 4, 16, 64), torch.randn(2, 4, 16, 64))
        >>> cache.attention_scores(torch.randn(2, 8, 1, 64)).shape  # 8 query heads share 4 KV heads
        torch.Size([2, 8, 1, 16])
    """

    def __init__(self, fmt: KVFormat) -> None:
        if not isinstance(fmt, KVFormat):
            raise FormatError(
                f"QuantizedKVCache needs a KVFormat, got {type(fmt).__name__}; "
                f"build one with polyquant.kvcache.get(name)"
            )
        self.format = fmt
        self.key_quantizer: KVTensorQuantizer = fmt.key.build()
        self.value_quantizer: KVTensorQuantizer = fmt.value.build()
        self.clear()

    def clear(self) -> None:
        """Drop every token (quantizer state, such as outlier channels, is kept)."""
        self._keys: dict[str, torch.Tensor] | None = None
        self._values: dict[str, torch.Tensor] | None = None
        self._residual_keys: torch.Tensor | None = None
        self._residual_values: torch.Tensor | None = None
        self._quantized = 0
        self._dtype: torch.dtype | None = None
        self._shape: tuple[int, int, int, int] | None = None  # batch, heads, key head_dim, value head_dim

    # ------------------------------------------------------------------ writing
    def _check(self, key: torch.Tensor, value: torch.Tensor) -> None:
        key, value = check_kv_tensor(key, "key"), check_kv_tensor(value, "value")
        if key.shape[:3] != value.shape[:3]:
            raise FormatError(
                f"key {tuple(key.shape)} and value {tuple(value.shape)} must agree in batch, heads and tokens"
            )
        shape = (key.shape[0], key.shape[1], key.shape[3], value.shape[3])
        if self._shape is not None and shape != self._shape:
            raise FormatError(
                f"this cache holds batch {self._shape[0]}, {self._shape[1]} heads, head_dim {self._shape[2]}/"
                f"{self._shape[3]}; the new tokens have {shape[0]}, {shape[1]}, {shape[2]}/{shape[3]}. "
                f"Use one cache per layer and clear() it between sequences"
            )
        if self._residual_keys is not None and key.device != self._residual_keys.device:
            raise FormatError(f"the cache lives on {self._residual_keys.device}, the new tokens on {key.device}")

    def append(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Add tokens: ``key`` and ``value`` are ``(batch, heads, tokens, head_dim)`` (keys after RoPE).

        Raises:
            FormatError: for malformed tensors or shapes that differ from earlier appends.
        """
        self._check(key, value)
        if self._shape is None:
            self._shape = (key.shape[0], key.shape[1], key.shape[3], value.shape[3])
            self._dtype = key.dtype
            self._residual_keys, self._residual_values = key[:, :, :0].detach(), value[:, :, :0].detach()
        assert self._residual_keys is not None and self._residual_values is not None and self._dtype is not None
        keys = torch.cat([self._residual_keys, key.detach().to(self._dtype)], dim=2)
        values = torch.cat([self._residual_values, value.detach().to(self._dtype)], dim=2)
        block = self.format.block_tokens
        flush = max(0, keys.shape[2] - self.format.residual_length) // block * block
        if flush:
            self._keys = _concat(self._keys, self.key_quantizer.encode(keys[:, :, :flush]))
            self._values = _concat(self._values, self.value_quantizer.encode(values[:, :, :flush]))
            self._quantized += flush
        # clone: keep the window compact instead of a view pinning the whole concatenation
        self._residual_keys, self._residual_values = keys[:, :, flush:].clone(), values[:, :, flush:].clone()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._quantized + self.residual_tokens

    @property
    def quantized_tokens(self) -> int:
        """Tokens stored quantized."""
        return self._quantized

    @property
    def residual_tokens(self) -> int:
        """Tokens in the full-precision window."""
        return 0 if self._residual_keys is None else int(self._residual_keys.shape[2])

    def _read(
        self, quantizer: KVTensorQuantizer, codes: Mapping[str, torch.Tensor] | None, window: torch.Tensor | None
    ) -> torch.Tensor:
        if window is None or self._dtype is None:
            raise FormatError("the cache is empty; append(key, value) first")
        if codes is None:
            return window.clone()
        return torch.cat([quantizer.decode(codes).to(self._dtype), window], dim=2)

    def keys(self) -> torch.Tensor:
        """All cached keys ``(batch, heads, tokens, head_dim)``: dequantized, then the exact window."""
        return self._read(self.key_quantizer, self._keys, self._residual_keys)

    def values(self) -> torch.Tensor:
        """All cached values ``(batch, heads, tokens, head_dim)``: dequantized, then the exact window."""
        return self._read(self.value_quantizer, self._values, self._residual_values)

    def attention_scores(self, query: torch.Tensor) -> torch.Tensor:
        """``query · keysᵀ`` (no ``1/√d`` scaling, no mask) computed on the stored codes, as ``float32``.

        For TurboQuant-prod keys this is the unbiased estimator
        ``‖k‖·(⟨Πq, c[idx]⟩ + (√(π/2)/d)·γ·⟨S'q, sgn(S'r)⟩)``; for other formats it equals the product with
        :meth:`keys`. Pass post-RoPE queries.

        Args:
            query: ``(batch, query_heads, M, head_dim)``; ``query_heads`` is a multiple of the cache's heads
                (grouped-query attention: query head ``j`` reads KV head ``j // (query_heads/heads)``).

        Returns:
            ``(batch, query_heads, M, tokens)``.

        Raises:
            FormatError: for an empty cache or a query that does not fit.
        """
        query = check_kv_tensor(query, "query")
        if self._shape is None or self._residual_keys is None:
            raise FormatError("the cache is empty; append(key, value) first")
        batch, heads, head_dim = self._shape[0], self._shape[1], self._shape[2]
        qb, qh, m, qd = query.shape
        if qb != batch or qd != head_dim or qh % heads:
            raise FormatError(
                f"query {tuple(query.shape)} does not fit a cache of batch {batch}, {heads} KV heads of size "
                f"{head_dim}: the batch and head_dim must match and query heads must be a multiple of {heads}"
            )
        grouped = query.float().reshape(batch, heads, (qh // heads) * m, qd)
        parts = []
        if self._keys is not None:
            parts.append(self.key_quantizer.scores(grouped, self._keys))
        parts.append(grouped @ self._residual_keys.float().transpose(-1, -2))
        return torch.cat(parts, dim=-1).reshape(batch, qh, m, len(self))

    # ------------------------------------------------------------------ memory
    def memory(self) -> dict[str, int]:
        """Bytes stored, by part: ``key.<tensor>``, ``value.<tensor>``, ``*.residual``, ``*.state``.

        Example:
            >>> import torch
            >>> from polyquant import kvcache
            >>> cache = kvcache.get("turbo4").cache()
            >>> cache.append(torch.randn(1, 1, 2, 128), torch.randn(1, 1, 2, 128))
            >>> cache.memory()["key.idx"], cache.memory()["key.norm"]
            (128, 4)
        """
        out: dict[str, int] = {}
        for stream, codes, window, quantizer in (
            ("key", self._keys, self._residual_keys, self.key_quantizer),
            ("value", self._values, self._residual_values, self.value_quantizer),
        ):
            for name, tensor in (codes or {}).items():
                out[f"{stream}.{name}"] = encoded_nbytes({name: tensor})
            out[f"{stream}.residual"] = 0 if window is None else window.numel() * window.element_size()
            out[f"{stream}.state"] = int(quantizer.state_nbytes)
        return out

    @property
    def nbytes(self) -> int:
        """Exact bytes stored (see :meth:`memory`)."""
        return sum(self.memory().values())

    @property
    def bits_per_element(self) -> float:
        """``8·nbytes`` per cached key and value element (0.0 when empty)."""
        if self._shape is None or not len(self):
            return 0.0
        batch, heads, dk, dv = self._shape
        elements = batch * heads * len(self) * (dk + dv)
        return 8.0 * self.nbytes / elements

    def __repr__(self) -> str:
        return f"QuantizedKVCache({self.format.name!r}, tokens={len(self)}, nbytes={self.nbytes})"

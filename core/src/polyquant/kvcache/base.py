"""The contract between a KV-cache format and the cache that stores it.

A KV format (:class:`polyquant.kvcache.KVFormat`) names one :class:`KVQuantizerConfig` for the keys and
one for the values. A config is frozen, comparable data; :meth:`KVQuantizerConfig.build` makes the
stateful :class:`KVTensorQuantizer` a cache uses for one stream (keys or values). State that depends on
the data (a per-tensor scale, the outlier channels of TurboQuant's channel split) is fixed on the first
call to :meth:`~KVTensorQuantizer.encode`.

Layout rules every quantizer follows:

* Inputs are ``(batch, heads, tokens, head_dim)`` tensors of any floating dtype, on any device;
  ``tokens`` is a multiple of :attr:`~KVTensorQuantizer.block_tokens`.
* :meth:`~KVTensorQuantizer.encode` returns a mapping ``name → tensor`` (packed ``uint8`` codes, norms,
  scales, zero points) in which **every tensor has its time axis at dim 2** — tokens, or blocks of
  ``block_tokens`` tokens for per-block data — so a cache appends by concatenating along dim 2, and
  its memory is exactly the sum of these tensors' bytes.
* :meth:`~KVTensorQuantizer.decode` returns ``float32``.

Example:
    >>> import torch
    >>> from polyquant.kvcache import IntKVConfig
    >>> quantizer = IntKVConfig(bits=4).build()
    >>> codes = quantizer.encode(torch.randn(1, 2, 3, 8))
    >>> sorted(codes), tuple(codes["codes"].shape)
    (['codes', 'scale', 'zero'], (1, 2, 3, 4))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from polyquant.errors import FormatError

__all__ = [
    "KVQuantizerConfig",
    "KVTensorQuantizer",
    "check_kv_tensor",
    "dequantized_scores",
    "encoded_nbytes",
    "smallest_positive",
]


@runtime_checkable
class KVTensorQuantizer(Protocol):
    """Quantizes one stream (keys or values) of a KV cache; see the module docstring for the layout."""

    @property
    def block_tokens(self) -> int:
        """Tokens are encoded in multiples of this (``1`` for per-token formats)."""
        ...

    @property
    def state_nbytes(self) -> int:
        """Bytes of data-dependent state kept besides the encoded tensors (``0`` when none)."""
        ...

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Quantize ``x`` ``(batch, heads, tokens, head_dim)``; every returned tensor has time at dim 2."""
        ...

    def decode(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Dequantize to ``float32`` ``(batch, heads, tokens, head_dim)``."""
        ...

    def scores(self, query: torch.Tensor, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inner products ``query @ decoded.mT``: ``(batch, heads, M, head_dim)`` → ``(batch, heads, M, tokens)``."""
        ...


class KVQuantizerConfig(Protocol):
    """Frozen settings of one stream's quantizer (e.g. :class:`~polyquant.kvcache.TurboQuantConfig`)."""

    @property
    def block_tokens(self) -> int:
        """Tokens are encoded in multiples of this."""
        ...

    def build(self) -> KVTensorQuantizer:
        """A fresh quantizer (its data-dependent state is fixed on its first ``encode``)."""
        ...

    def bits_per_element(self, head_dim: int) -> float:
        """Stored bits per cached element (codes + norms/scales), excluding per-cache state."""
        ...


def check_kv_tensor(x: object, what: str = "tensor") -> torch.Tensor:
    """Validate a ``(batch, heads, tokens, head_dim)`` floating tensor and return it.

    Raises:
        FormatError: for anything else, naming ``what``.

    Example:
        >>> import torch
        >>> check_kv_tensor(torch.zeros(1, 1, 2, 4)).shape
        torch.Size([1, 1, 2, 4])
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise FormatError(
            f"{what} must be a floating tensor of shape (batch, heads, tokens, head_dim), got a {got}; "
            f"transpose (batch, tokens, heads, head_dim) layouts with .transpose(1, 2)"
        )
    return x


def encoded_nbytes(codes: Mapping[str, torch.Tensor] | None) -> int:
    """Total bytes of the tensors in an encoded mapping (``0`` for ``None``).

    Example:
        >>> import torch
        >>> encoded_nbytes({"codes": torch.zeros(4, dtype=torch.uint8), "scale": torch.zeros(2, dtype=torch.float16)})
        8
    """
    if codes is None:
        return 0
    return sum(t.numel() * t.element_size() for t in codes.values())


def smallest_positive(dtype: torch.dtype) -> float:
    """Smallest positive normal number of ``dtype`` (the floor of stored scales, so none becomes zero).

    Example:
        >>> smallest_positive(torch.float16)
        6.103515625e-05
    """
    return float(torch.finfo(dtype).tiny)


def dequantized_scores(
    quantizer: KVTensorQuantizer, query: torch.Tensor, codes: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Inner products with the dequantized tensor: the generic :meth:`KVTensorQuantizer.scores`."""
    return query.float() @ quantizer.decode(codes).transpose(-1, -2)

"""Asymmetric min-max integer KV quantization, per channel or per token: the building block of KIVI.

KIVI (Liu et al., 2024) quantizes the two halves of the cache along different axes, because they have
different outliers: **keys per channel** (a few channels of post-RoPE keys are large for every token, so
each channel gets its own range, computed over a group of ``G`` consecutive tokens), **values per token**
(groups of ``G`` channels of one token). The most recent ``R`` tokens stay in full precision; that window
is kept by the cache (:class:`polyquant.kvcache.QuantizedKVCache`, ``residual_length``), so keys are
quantized once ``G`` tokens have left it. Keys are quantized **after RoPE**, as they are cached.

:class:`IntKVConfig` is one stream's quantizer: ``axis="channel"`` (a scale and zero point per channel and
group of ``group_size`` tokens) or ``axis="token"`` (per token and group of ``group_size`` channels;
``None`` = the whole head). With ``dequant = code · scale + zero``, ``scale = (max − min)/(2^b − 1)``
and ``zero = min``, both stored as ``float16``, the cost is ``bits + 32/group_size`` bits per element.

Example:
    >>> import torch
    >>> quantizer = IntKVConfig(bits=2, axis="channel", group_size=4).build()
    >>> keys = torch.randn(1, 1, 8, 16)
    >>> quantizer.decode(quantizer.encode(keys)).shape
    torch.Size([1, 1, 8, 16])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from polyquant.errors import FormatError
from polyquant.kvcache.base import check_kv_tensor, dequantized_scores, smallest_positive
from polyquant.packing import pack, unpack

__all__ = ["IntKVConfig", "IntKVQuantizer", "kivi_configs"]

_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class IntKVConfig:
    """Asymmetric min-max integer quantization of one KV stream.

    Attributes:
        bits: 1..8 bits per code.
        axis: ``"channel"`` — one range per channel and group of ``group_size`` tokens (KIVI keys);
            ``"token"`` — one range per token and group of ``group_size`` channels (KIVI values).
        group_size: tokens per group (``axis="channel"``, required) or channels per group
            (``axis="token"``; ``None`` = the whole head, which must be a multiple of it otherwise).
        scale_dtype: dtype of the stored scales and zero points.

    Example:
        >>> IntKVConfig(bits=2, axis="channel", group_size=32).bits_per_element(128)
        3.0
    """

    bits: int = 4
    axis: Literal["channel", "token"] = "token"
    group_size: int | None = None
    scale_dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise FormatError(f"IntKVConfig.bits must be an integer in 1..8, got {self.bits!r}")
        if self.axis not in ("channel", "token"):
            raise FormatError(f"IntKVConfig.axis must be 'channel' or 'token', got {self.axis!r}")
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 1):
            raise FormatError(f"IntKVConfig.group_size must be a positive integer or None, got {gs!r}")
        if self.axis == "channel" and gs is None:
            raise FormatError("IntKVConfig.group_size is required for axis='channel' (tokens per group, e.g. 32)")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise FormatError(f"IntKVConfig.scale_dtype must be float16, bfloat16 or float32, got {self.scale_dtype}")

    @property
    def block_tokens(self) -> int:
        """``group_size`` for per-channel quantization (whole token groups), else 1."""
        return int(self.group_size) if self.axis == "channel" and self.group_size else 1

    def build(self) -> IntKVQuantizer:
        """A quantizer for one stream."""
        return IntKVQuantizer(self)

    def bits_per_element(self, head_dim: int) -> float:
        """``bits + 2·scale_bits/group`` (one scale and one zero point per group)."""
        group = self.group_size if self.group_size is not None else head_dim
        return self.bits + 2 * torch.finfo(self.scale_dtype).bits / group


class IntKVQuantizer:
    """The stateless quantizer of an :class:`IntKVConfig` (see :class:`polyquant.kvcache.KVTensorQuantizer`).

    Encoded tensors: ``codes`` (packed along ``head_dim``, one row per token), ``scale`` and ``zero``
    (``(batch, heads, tokens/group_size, head_dim)`` per channel, ``(batch, heads, tokens, head_dim/group)``
    per token).
    """

    def __init__(self, config: IntKVConfig) -> None:
        self.config = config
        self._qmax = float((1 << config.bits) - 1)
        self._head_dim: int | None = None

    @property
    def block_tokens(self) -> int:
        """See :attr:`IntKVConfig.block_tokens`."""
        return self.config.block_tokens

    @property
    def state_nbytes(self) -> int:
        """No data-dependent state."""
        return 0

    def _token_group(self, head_dim: int) -> int:
        group = self.config.group_size if self.config.group_size is not None else head_dim
        if head_dim % group:
            raise FormatError(
                f"head_dim {head_dim} is not a multiple of the per-token group size {group}; "
                f"pick a group_size that divides it (or None for one group per head)"
            )
        return group

    def _grouped(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """View ``x`` with the reduced axis last-but-one (channel) or last (token); returns the axis reduced."""
        b, h, t, d = x.shape
        if self.config.axis == "channel":
            g = self.block_tokens
            if t % g:
                raise FormatError(f"per-channel quantization needs whole groups of {g} tokens, got {t} tokens")
            return x.reshape(b, h, t // g, g, d), 3
        group = self._token_group(d)
        return x.reshape(b, h, t, d // group, group), 4

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Codes, scales and zero points of ``x`` ``(batch, heads, tokens, head_dim)``."""
        x = check_kv_tensor(x, "KV tensor")
        grouped, axis = self._grouped(x.float())
        self._head_dim = x.shape[-1]
        lo = grouped.amin(dim=axis, keepdim=True)
        hi = grouped.amax(dim=axis, keepdim=True)
        dtype = self.config.scale_dtype
        scale = ((hi - lo) / self._qmax).to(dtype).clamp_min(smallest_positive(dtype))
        zero = lo.to(dtype)
        codes = ((grouped - zero.float()) / scale.float()).round().clamp(0, self._qmax).to(torch.uint8)
        return {
            "codes": pack(codes.reshape(x.shape), self.config.bits),
            "scale": scale.squeeze(axis),
            "zero": zero.squeeze(axis),
        }

    def decode(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``code · scale + zero`` as ``float32`` ``(batch, heads, tokens, head_dim)``."""
        scale, zero, packed = codes["scale"], codes["zero"], codes["codes"]
        b, h = packed.shape[:2]
        if self.config.axis == "channel":
            d = scale.shape[-1]
            t = scale.shape[2] * self.block_tokens
            values = unpack(packed, self.config.bits, d).reshape(b, h, scale.shape[2], self.block_tokens, d)
            out = values.float() * scale.float().unsqueeze(3) + zero.float().unsqueeze(3)
            return out.reshape(b, h, t, d)
        t, groups = packed.shape[2], scale.shape[-1]
        if self._head_dim is None:
            raise FormatError("decode() before encode(): this quantizer has not seen a head_dim yet")
        d = self._head_dim
        values = unpack(packed, self.config.bits, d).reshape(b, h, t, groups, d // groups)
        out = values.float() * scale.float().unsqueeze(-1) + zero.float().unsqueeze(-1)
        return out.reshape(b, h, t, d)

    def scores(self, query: torch.Tensor, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``query @ decode(codes).mT``."""
        return dequantized_scores(self, query, codes)


def kivi_configs(bits: int, group_size: int = 32) -> tuple[IntKVConfig, IntKVConfig]:
    """KIVI's (key, value) configs: keys per channel over ``group_size`` tokens, values per token.

    Example:
        >>> keys, values = kivi_configs(2)
        >>> keys.axis, values.axis, values.group_size
        ('channel', 'token', 32)
    """
    return (
        IntKVConfig(bits=bits, axis="channel", group_size=group_size),
        IntKVConfig(bits=bits, axis="token", group_size=group_size),
    )

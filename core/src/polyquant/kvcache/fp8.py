"""FP8 KV cache: E4M3 (or E5M2) codes with a per-token or a per-tensor scale.

Each element is stored as the ``uint8`` bit pattern of ``x / scale`` rounded to FP8 (round to nearest
even, saturating at ±448 for E4M3FN and ±57344 for E5M2; :mod:`polyquant.formats.minifloat`). The
scale maps the largest magnitude to the format's maximum:

* ``granularity="token"``: one ``float32`` scale per token and head (``amax / max``): 8 + 32/head_dim
  bits per element (8.25 at ``head_dim = 128``);
* ``granularity="tensor"``: one static scale per stream, either given (``scale=``, e.g. calibrated
  offline) or taken from the first chunk appended (the prefill); later tokens beyond its range saturate.
  8 bits per element, plus 4 bytes.

Example:
    >>> import torch
    >>> quantizer = FP8KVConfig().build()
    >>> x = torch.randn(1, 2, 5, 64)
    >>> bool((quantizer.decode(quantizer.encode(x)) - x).abs().max() < 0.1 * x.abs().max())
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from polyquant.errors import FormatError
from polyquant.formats.minifloat import FP8_E4M3, FP8_E5M2, FloatElement
from polyquant.kvcache.base import check_kv_tensor, dequantized_scores, smallest_positive

__all__ = ["FP8KVConfig", "FP8KVQuantizer"]

_ELEMENTS: dict[str, FloatElement] = {"e4m3": FP8_E4M3, "e5m2": FP8_E5M2}
_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class FP8KVConfig:
    """FP8 quantization of one KV stream.

    Attributes:
        element: ``"e4m3"`` (E4M3FN, max 448) or ``"e5m2"`` (max 57344).
        granularity: ``"token"`` (a scale per token and head) or ``"tensor"`` (one static scale).
        scale: the per-tensor scale (``granularity="tensor"`` only); ``None`` takes
            ``amax / max`` of the first chunk encoded.
        scale_dtype: dtype of per-token scales.

    Example:
        >>> FP8KVConfig().bits_per_element(128)
        8.25
    """

    element: Literal["e4m3", "e5m2"] = "e4m3"
    granularity: Literal["token", "tensor"] = "token"
    scale: float | None = None
    scale_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.element not in _ELEMENTS:
            raise FormatError(f"FP8KVConfig.element must be one of {', '.join(_ELEMENTS)}, got {self.element!r}")
        if self.granularity not in ("token", "tensor"):
            raise FormatError(f"FP8KVConfig.granularity must be 'token' or 'tensor', got {self.granularity!r}")
        if self.scale is not None:
            if self.granularity != "tensor":
                raise FormatError("FP8KVConfig.scale is a per-tensor scale: use it with granularity='tensor'")
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
                raise FormatError(f"FP8KVConfig.scale must be a positive number, got {self.scale!r}")
        if self.scale_dtype not in _SCALE_DTYPES:
            raise FormatError(f"FP8KVConfig.scale_dtype must be float16, bfloat16 or float32, got {self.scale_dtype}")

    @property
    def codec(self) -> FloatElement:
        """The FP8 element codec."""
        return _ELEMENTS[self.element]

    @property
    def block_tokens(self) -> int:
        """Every token is encoded on its own."""
        return 1

    def build(self) -> FP8KVQuantizer:
        """A quantizer for one stream."""
        return FP8KVQuantizer(self)

    def bits_per_element(self, head_dim: int) -> float:
        """8, plus the per-token scale spread over the head."""
        if self.granularity == "tensor":
            return 8.0
        return 8.0 + torch.finfo(self.scale_dtype).bits / head_dim


class FP8KVQuantizer:
    """The quantizer of an :class:`FP8KVConfig`.

    Encoded tensors: ``codes`` (``uint8`` FP8 bit patterns, ``(batch, heads, tokens, head_dim)``) and,
    per token, ``scale`` (``(batch, heads, tokens, 1)``). A per-tensor scale is state (4 bytes).
    """

    def __init__(self, config: FP8KVConfig) -> None:
        self.config = config
        self._tensor_scale: float | None = None if config.scale is None else float(config.scale)

    @property
    def block_tokens(self) -> int:
        """Every token is encoded on its own."""
        return 1

    @property
    def tensor_scale(self) -> float | None:
        """The per-tensor scale once known (``None`` for per-token scales or before the first encode)."""
        return self._tensor_scale

    @property
    def state_nbytes(self) -> int:
        """4 bytes for a per-tensor scale, else 0."""
        return 4 if self.config.granularity == "tensor" else 0

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """FP8 codes of ``x / scale`` (and the per-token scales)."""
        x = check_kv_tensor(x, "KV tensor").float()
        codec = self.config.codec
        if self.config.granularity == "tensor":
            if self._tensor_scale is None:
                amax = float(x.abs().max()) if x.numel() else 0.0
                self._tensor_scale = max(amax / codec.max_value, smallest_positive(torch.float32))
            return {"codes": codec.encode(x / self._tensor_scale)}
        dtype = self.config.scale_dtype
        scale = (x.abs().amax(dim=-1, keepdim=True) / codec.max_value).to(dtype).clamp_min(smallest_positive(dtype))
        return {"codes": codec.encode(x / scale.float()), "scale": scale}

    def decode(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``fp8(code) · scale`` as ``float32``."""
        values = self.config.codec.decode(codes["codes"])
        if self.config.granularity == "tensor":
            if self._tensor_scale is None:
                raise FormatError("decode() before encode(): the per-tensor scale is not known yet")
            return values * self._tensor_scale
        return values * codes["scale"].float()

    def scores(self, query: torch.Tensor, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``query @ decode(codes).mT``."""
        return dequantized_scores(self, query, codes)

"""Element codecs: how one number becomes a 1–8 bit code and back, without any scale.

Every codec implements :class:`~polyquant.formats.codec.ElementCodec` (``encode``, ``decode``,
``round``, ``name``, ``bits``, ``kind``, ``max_value``) and is a frozen, hashable dataclass:

* :class:`IntElement` — signed (two's complement) or unsigned integers, round half to even, clamp.
* :class:`~polyquant.formats.minifloat.FloatElement` — FP8 E4M3FN / E5M2, FP6 E3M2 / E2M3, FP4 E2M1,
  bit-exact with ``ml_dtypes`` in range and saturating outside it;
  :class:`~polyquant.formats.minifloat.E8M0Element` — the OCP MX power-of-two scale.
* :class:`~polyquant.formats.lut.LUTElement` — fixed tables (NF4, the bitsandbytes dynamic map);
  :class:`~polyquant.formats.lut.CodebookElement` — tables whose levels are data.
* :class:`BinaryElement` (±1) and :class:`TernaryElement` (−1, 0, +1).

Example:
    >>> import torch
    >>> int4 = IntElement(4, signed=True)
    >>> int4.encode(torch.tensor([-1.0, 2.5, 7.6]))  # -1 → 0b1111, 2.5 → 2 (ties to even), 7.6 → 7 (clamped)
    tensor([15,  2,  7], dtype=torch.uint8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from polyquant.errors import FormatError
from polyquant.formats.codec import ElementCodec, check_codes, working_float
from polyquant.formats.lut import (
    DYNAMIC8,
    NF4,
    NF4_LEVELS,
    CodebookElement,
    LUTElement,
    dynamic_map_levels,
    nearest_level,
)
from polyquant.formats.minifloat import (
    E8M0,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    E8M0Element,
    FloatElement,
)

__all__ = [
    "DYNAMIC8",
    "E8M0",
    "FP4_E2M1",
    "FP6_E2M3",
    "FP6_E3M2",
    "FP8_E4M3",
    "FP8_E5M2",
    "NF4",
    "NF4_LEVELS",
    "BinaryElement",
    "CodebookElement",
    "E8M0Element",
    "ElementCodec",
    "FloatElement",
    "IntElement",
    "LUTElement",
    "TernaryElement",
    "dynamic_map_levels",
    "element_from_dict",
    "nearest_level",
]


def _reject_nan(x: torch.Tensor, name: str) -> None:
    if bool(torch.isnan(x).any()):
        raise FormatError(f"{name} cannot encode NaN, but the input contains NaN; remove NaNs before encoding")


@dataclass(frozen=True)
class IntElement:
    """Integers of ``bits`` bits: values round half to even, then clamp to ``[qmin, qmax]``.

    Signed elements cover ``-2**(bits-1) .. 2**(bits-1)-1`` and their code is the two's complement bit
    pattern in the low ``bits`` bits (int4: -1 → 0b1111); unsigned elements cover ``0 .. 2**bits-1``
    and the code is the value. ±Inf clamp to the range ends; NaN raises :class:`FormatError`.

    Args:
        bits: 1..8.
        signed: two's complement (``int<bits>``) or unsigned (``uint<bits>``).

    Example:
        >>> IntElement(4).qmin, IntElement(4).qmax, IntElement(4, signed=False).qmax
        (-8, 7, 15)
    """

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise FormatError(f"integer elements need 1..8 bits, got {self.bits!r}")

    @property
    def name(self) -> str:
        """``int<bits>`` or ``uint<bits>``."""
        return f"{'' if self.signed else 'u'}int{self.bits}"

    @property
    def kind(self) -> str:
        """Always ``"int"``."""
        return "int"

    @property
    def qmin(self) -> int:
        """Smallest value (``-2**(bits-1)`` signed, 0 unsigned)."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest value (``2**(bits-1)-1`` signed, ``2**bits-1`` unsigned)."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_value(self) -> float:
        """``max(|qmin|, qmax)``; symmetric scaling divides by :attr:`qmax` instead (see FormatSpec)."""
        return float(max(-self.qmin, self.qmax))

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``clamp(round_half_even(x), qmin, qmax)`` as ``float32``."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        return torch.round(xf).clamp(self.qmin, self.qmax).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Rounded, clamped values as ``uint8`` codes (two's complement in the low bits when signed)."""
        values = self.round(x).to(torch.int16)
        return (values & ((1 << self.bits) - 1)).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer values of ``codes`` as ``float32``."""
        values = check_codes(codes, 1 << self.bits, self.name, as_index=False).float()
        if self.signed:  # two's complement: codes above qmax wrap around to negatives
            values = torch.where(values > self.qmax, values - (1 << self.bits), values)
        return values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"type": "int", "bits": self.bits, "signed": self.signed}


@dataclass(frozen=True)
class BinaryElement:
    """Sign bits: code 0 → -1, code 1 → +1. Zero (and -0.0) encodes as +1; NaN raises.

    Example:
        >>> import torch
        >>> BinaryElement().round(torch.tensor([-0.3, 0.0, 2.0]))
        tensor([-1.,  1.,  1.])
    """

    @property
    def name(self) -> str:
        """Always ``"binary"``."""
        return "binary"

    @property
    def bits(self) -> int:
        """1 bit."""
        return 1

    @property
    def kind(self) -> str:
        """Always ``"binary"``."""
        return "binary"

    @property
    def max_value(self) -> float:
        """1.0."""
        return 1.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``1`` where ``x >= 0`` else ``0``."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        return (xf >= 0).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``2·code - 1`` as ``float32``."""
        return check_codes(codes, 2, self.name, as_index=False).float() * 2 - 1

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """±1 by sign (``float32``)."""
        return self.decode(self.encode(x))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"type": "binary"}


@dataclass(frozen=True)
class TernaryElement:
    """Values -1, 0, +1 in 2-bit codes ``value + 1`` (0 → -1, 1 → 0, 2 → +1; code 3 is invalid).

    Encoding rounds half to even and clamps, as BitNet b1.58 does (``clamp(round(x), -1, 1)``).

    Example:
        >>> import torch
        >>> TernaryElement().encode(torch.tensor([-2.0, 0.5, 0.7]))
        tensor([0, 1, 2], dtype=torch.uint8)
    """

    @property
    def name(self) -> str:
        """Always ``"ternary"``."""
        return "ternary"

    @property
    def bits(self) -> int:
        """2 bits per code."""
        return 2

    @property
    def kind(self) -> str:
        """Always ``"ternary"``."""
        return "ternary"

    @property
    def max_value(self) -> float:
        """1.0."""
        return 1.0

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``clamp(round_half_even(x), -1, 1)`` as ``float32``."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        return torch.round(xf).clamp(-1, 1).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``round(x) + 1``."""
        return (self.round(x) + 1).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``code - 1`` as ``float32``."""
        return check_codes(codes, 3, self.name, as_index=False).float() - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"type": "ternary"}


def element_from_dict(data: dict[str, Any]) -> ElementCodec:
    """Rebuild a built-in element codec from its :meth:`to_dict` form.

    Raises:
        FormatError: for an unknown ``type`` or missing fields.

    Example:
        >>> element_from_dict({"type": "int", "bits": 4, "signed": True})
        IntElement(bits=4, signed=True)
    """
    kind = data.get("type")
    try:
        if kind == "int":
            return IntElement(int(data["bits"]), bool(data["signed"]))
        if kind == "float":
            return FloatElement(
                int(data["ebits"]), int(data["mbits"]), int(data["bias"]), data["special"], str(data.get("name", ""))
            )
        if kind == "e8m0":
            return E8M0Element(data.get("rounding", "floor"))
        if kind == "lut":
            return LUTElement(tuple(float(v) for v in data["levels"]), str(data["name"]))
        if kind == "codebook":
            return CodebookElement(int(data["bits"]))
        if kind == "binary":
            return BinaryElement()
        if kind == "ternary":
            return TernaryElement()
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"element description {data!r} is malformed ({exc}); it must come from to_dict()") from exc
    raise FormatError(
        f"element type {kind!r} is unknown; built-in types are int, float, e8m0, lut, codebook, binary, ternary "
        f"(a plugin format is rebuilt by its registered name instead)"
    )

"""Minifloat element codecs: FP8 (E4M3FN, E5M2), FP6 (E3M2, E2M3), FP4 (E2M1) and the E8M0 scale.

Codes are exactly the bit patterns ``ml_dtypes`` uses (sign, exponent, mantissa from the most to the
least significant bit, in the low ``bits`` bits of a ``uint8``). Encoding rounds to nearest, ties to
even, subnormals included, and is exact: it works on the binary exponent (``frexp``) and divides by
powers of two only.

Conversion is *saturating* (OCP "satfinite", the behaviour quantization needs), which differs from a
plain ``ml_dtypes`` cast in three places:

* E4M3FN: finite values above 448 become ±448 (ml_dtypes: NaN); ±Inf become ±448 (ml_dtypes: NaN).
* E5M2: finite values above 57344 become ±57344 (ml_dtypes: ±Inf); ±Inf stay ±Inf.
* FP6/FP4 have no NaN encoding: a NaN input raises :class:`~polyquant.errors.FormatError`
  (ml_dtypes silently returns a zero). Out-of-range values saturate, as in ml_dtypes.

Inside the representable range every conversion is bit-identical to ml_dtypes (tested on every code,
every midpoint between neighbours, subnormals and random floats).

Example:
    >>> import torch
    >>> FP4_E2M1.round(torch.tensor([0.25, 2.6, 100.0]))
    tensor([0., 3., 6.])
    >>> hex(int(FP8_E4M3.encode(torch.tensor([448.0]))))
    '0x7e'
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from polyquant.errors import FormatError
from polyquant.formats.codec import check_codes, working_float

__all__ = [
    "E8M0",
    "FP4_E2M1",
    "FP6_E2M3",
    "FP6_E3M2",
    "FP8_E4M3",
    "FP8_E5M2",
    "E8M0Element",
    "FloatElement",
    "ceil_log2",
    "floor_log2",
    "pow2",
]

Special = Literal["fn", "ieee", "finite"]


def floor_log2(x: torch.Tensor) -> torch.Tensor:
    """Exact ``floor(log2(x))`` of positive finite floats, as ``int32`` (subnormal inputs included)."""
    _, exp = torch.frexp(x)
    return exp - 1


def ceil_log2(x: torch.Tensor) -> torch.Tensor:
    """Exact ``ceil(log2(x))`` of positive finite floats, as ``int32``."""
    mant, exp = torch.frexp(x)
    return torch.where(mant == 0.5, exp - 1, exp)


def _normal_exponent(x: torch.Tensor) -> torch.Tensor:
    """``floor(log2(x))`` read from the exponent field of *normal* non-negative floats (int32)."""
    if x.dtype == torch.float64:
        return ((x.view(torch.int64) >> 52) - 1023).int()
    return (x.view(torch.int32) >> 23) - 127


def pow2(exponent: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact ``2**exponent`` for integer tensors whose powers are normal numbers of ``dtype``.

    Builds the IEEE bit pattern directly, so no ``pow``/``exp2`` rounding is involved.
    """
    if dtype == torch.float64:
        return ((exponent.long() + 1023) << 52).view(torch.float64)
    return ((exponent.int() + 127) << 23).view(torch.float32).to(dtype)


@dataclass(frozen=True)
class FloatElement:
    """A sign + exponent + mantissa minifloat with round-to-nearest-even, saturating conversion.

    Args:
        ebits: exponent bits.
        mbits: mantissa (fraction) bits.
        bias: exponent bias.
        special: which codes are not finite numbers: ``"fn"`` (only S.1…1.1…1 is NaN, no Inf;
            E4M3FN), ``"ieee"`` (an all-ones exponent encodes Inf/NaN; E5M2) or ``"finite"`` (every
            code is a number; FP6/FP4).
        name: display name; defaults to ``fp<bits>_e<ebits>m<mbits>``.

    Example:
        >>> e2m1 = FloatElement(2, 1, 1)
        >>> e2m1.max_value, e2m1.name
        (6.0, 'fp4_e2m1')
    """

    ebits: int
    mbits: int
    bias: int
    special: Special = "finite"
    name: str = ""

    def __post_init__(self) -> None:
        if self.ebits < 1 or self.mbits < 0 or 1 + self.ebits + self.mbits > 8:
            raise FormatError(
                f"FloatElement(e{self.ebits}m{self.mbits}) needs ebits >= 1, mbits >= 0 and at most 8 bits in total"
            )
        if self.special not in ("fn", "ieee", "finite"):
            raise FormatError(f"FloatElement special {self.special!r} is unknown; use 'fn', 'ieee' or 'finite'")
        if self.special == "ieee" and self.ebits < 2:
            raise FormatError("an IEEE-style minifloat needs at least 2 exponent bits (one value is reserved)")
        if not self.name:
            object.__setattr__(self, "name", f"fp{self.bits}_e{self.ebits}m{self.mbits}")

    # ------------------------------------------------------------------ properties
    @property
    def bits(self) -> int:
        """Total bits: sign + exponent + mantissa."""
        return 1 + self.ebits + self.mbits

    @property
    def kind(self) -> str:
        """Always ``"float"``."""
        return "float"

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade (``1 - bias``)."""
        return 1 - self.bias

    @property
    def max_code(self) -> int:
        """Magnitude code (no sign bit) of the largest finite value."""
        top = (1 << (self.ebits + self.mbits)) - 1
        if self.special == "fn":
            return top - 1
        if self.special == "ieee":
            return top - (1 << self.mbits)
        return top

    @property
    def emax(self) -> int:
        """Exponent of the largest finite binade (2 for E2M1, 8 for E4M3, 15 for E5M2)."""
        return (self.max_code >> self.mbits) - self.bias

    @property
    def max_value(self) -> float:
        """Largest finite magnitude (448 for E4M3FN, 57344 for E5M2, 6 for E2M1)."""
        return _magnitude(self, self.max_code)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value."""
        return math.ldexp(1.0, self.emin - self.mbits)

    @property
    def nan_code(self) -> int | None:
        """Magnitude code of the canonical NaN, or ``None`` when the format has none."""
        if self.special == "fn":
            return (1 << (self.ebits + self.mbits)) - 1
        if self.special == "ieee":
            return ((1 << self.ebits) - 1) << self.mbits | (1 << (self.mbits - 1) if self.mbits else 1)
        return None

    @property
    def inf_code(self) -> int | None:
        """Magnitude code of infinity, or ``None`` when the format has none."""
        return ((1 << self.ebits) - 1) << self.mbits if self.special == "ieee" else None

    # ------------------------------------------------------------------ conversion
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Round ``x`` to the nearest element (ties to even, saturating) and return ``uint8`` codes.

        Raises:
            FormatError: for a NaN input when the format has no NaN, or a non-float tensor.
        """
        xf = working_float(x, self.name)
        nan, inf = self._specials(xf)
        native = self._native_dtype(xf)
        if native is not None:  # torch's own RNE cast, made saturating by clamping first
            code = xf.clamp(-self.max_value, self.max_value).to(native).view(torch.uint8)
        else:
            exponent, steps = self._quantize(xf.abs() if nan is None else xf.abs().masked_fill(nan, 0.0))
            # normal: (e + bias) << mbits | (steps - 2**mbits) == (e - emin) << mbits + steps; subnormal:
            # steps; a rounding carry (steps == 2**(mbits+1)) lands on the next binade by the same formula
            code = (((exponent - self.emin) << self.mbits) + steps.int()).to(torch.uint8)
            code = code | (torch.signbit(xf).to(torch.uint8) << (self.bits - 1))
        for mask, special in ((inf, self.inf_code), (nan, self.nan_code)):
            if mask is not None and special is not None:
                signed = (torch.signbit(xf).to(torch.uint8) << (self.bits - 1)) | special
                code = torch.where(mask, signed, code)
        return code

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Values of ``uint8`` codes as ``float32`` (NaN/Inf codes decode to NaN/Inf)."""
        idx = check_codes(codes, 1 << self.bits, self.name)
        return _decode_table(self, str(codes.device))[idx]

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` computed without building codes; returns ``float32``."""
        xf = working_float(x, self.name)
        nan, inf = self._specials(xf)
        native = self._native_dtype(xf)
        if native is not None:
            out = xf.clamp(-self.max_value, self.max_value).to(native).float()
        else:
            exponent, steps = self._quantize(xf.abs() if nan is None else xf.abs().masked_fill(nan, 0.0))
            out = torch.copysign(steps * pow2(exponent - self.mbits, xf.dtype), xf).float()
        for mask in (inf, nan):
            if mask is not None:
                out = torch.where(mask, xf.float(), out)
        return out

    def _native_dtype(self, xf: torch.Tensor) -> torch.dtype | None:
        """The torch float8 dtype with exactly this encoding, for float32 inputs (float64 would round twice)."""
        if xf.dtype != torch.float32:
            return None
        return _NATIVE.get((self.ebits, self.mbits, self.bias, self.special))

    def _specials(self, xf: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """NaN and Inf masks, ``None`` when absent (Inf only where the format encodes it)."""
        if bool(torch.isfinite(xf.sum())):  # one cheap reduction covers the common all-finite case
            return None, None
        nan = torch.isnan(xf)
        if not bool(nan.any()):
            nan_mask = None
        elif self.nan_code is None:
            raise FormatError(
                f"{self.name} has no NaN encoding but the input contains {int(nan.sum())} NaN value(s); "
                f"remove NaNs before quantizing (or use fp8_e4m3/fp8_e5m2, which encode NaN)"
            )
        else:
            nan_mask = nan
        inf_mask = None
        if self.inf_code is not None:
            inf = torch.isinf(xf)
            inf_mask = inf if bool(inf.any()) else None
        return nan_mask, inf_mask

    def _quantize(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Saturated RNE of magnitudes ``a``: ``steps · 2**(exponent − mbits)``.

        ``exponent`` (int32) is the binade of ``a``, at least ``emin`` (subnormals and zero share the
        lowest binade); ``steps`` (float, integer-valued) counts quanta of that binade. Scaling by a
        power of two is exact and ``torch.round`` ties to even, so the result is exact RNE.
        """
        a = a.clamp(max=self.max_value)  # saturation: out-of-range finite values (and Inf for finite formats)
        exponent = _normal_exponent(a.clamp(min=math.ldexp(1.0, self.emin)))
        steps = torch.round(a * pow2(self.mbits - exponent, a.dtype))
        return exponent, steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "type": "float",
            "name": self.name,
            "ebits": self.ebits,
            "mbits": self.mbits,
            "bias": self.bias,
            "special": self.special,
        }


def _magnitude(elem: FloatElement, code: int) -> float:
    """Value of a finite magnitude code (no sign bit)."""
    exp_field, mant = code >> elem.mbits, code & ((1 << elem.mbits) - 1)
    if exp_field == 0:
        return math.ldexp(mant, elem.emin - elem.mbits)
    return math.ldexp((1 << elem.mbits) + mant, exp_field - elem.bias - elem.mbits)


@functools.lru_cache(maxsize=64)
def _decode_table(elem: FloatElement, device: str) -> torch.Tensor:
    half = 1 << (elem.bits - 1)
    values = []
    for code in range(1 << elem.bits):
        mag = code & (half - 1)
        if mag == elem.nan_code or (elem.special == "ieee" and mag > elem.inf_code):  # type: ignore[operator]
            value = math.nan
        elif mag == elem.inf_code:
            value = math.inf
        else:
            value = _magnitude(elem, mag)
        values.append(-value if code & half else value)
    return torch.tensor(values, dtype=torch.float32, device=device)


@dataclass(frozen=True)
class E8M0Element:
    """The OCP MX shared-scale type: an unsigned power of two ``2**(code - 127)``; code 0xFF is NaN.

    Args:
        rounding: how :meth:`encode` maps a positive value to a power of two: ``"floor"`` (round the
            exponent down, as OCP MX derives scales) or ``"ceil"`` (round up).

    Zero and negative values have no encoding and raise :class:`FormatError`; values beyond the range
    saturate to 2**-127 / 2**127, +Inf to 2**127.

    Example:
        >>> import torch
        >>> E8M0Element("floor").encode(torch.tensor([3.0, 0.25]))
        tensor([128, 125], dtype=torch.uint8)
    """

    rounding: Literal["floor", "ceil"] = "floor"

    def __post_init__(self) -> None:
        if self.rounding not in ("floor", "ceil"):
            raise FormatError(f"E8M0 rounding {self.rounding!r} is unknown; use 'floor' or 'ceil'")

    @property
    def name(self) -> str:
        """Always ``"e8m0"``."""
        return "e8m0"

    @property
    def bits(self) -> int:
        """8 bits per scale."""
        return 8

    @property
    def kind(self) -> str:
        """Always ``"scale"``."""
        return "scale"

    @property
    def max_value(self) -> float:
        """``2**127``."""
        return math.ldexp(1.0, 127)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``clamp(floor_or_ceil(log2 x), -127, 127) + 127``; NaN → 0xFF.

        Raises:
            FormatError: for zero or negative inputs (E8M0 has neither).
        """
        xf = working_float(x, self.name)
        nan = torch.isnan(xf)
        if bool((xf[~nan] <= 0).any()):
            raise FormatError(
                "e8m0 encodes positive powers of two only, but the input has zero or negative values; "
                "replace them (e.g. zero-range blocks by 1.0) before encoding"
            )
        safe = torch.where(nan, 1.0, xf).clamp(max=torch.finfo(xf.dtype).max)
        exponent = floor_log2(safe) if self.rounding == "floor" else ceil_log2(safe)
        code = (exponent.long().clamp(-127, 127) + 127).masked_fill(nan, 255)
        return code.to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``2**(code - 127)`` as ``float32`` (0xFF → NaN; 2**-127 is a float32 subnormal, kept exact)."""
        idx = check_codes(codes, 256, self.name)
        return _e8m0_table(str(codes.device))[idx]

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"type": "e8m0", "rounding": self.rounding}


@functools.lru_cache(maxsize=8)
def _e8m0_table(device: str) -> torch.Tensor:
    values = [math.ldexp(1.0, c - 127) for c in range(255)] + [math.nan]
    return torch.tensor(values, dtype=torch.float32, device=device)


#: Encodings torch casts to natively (with round-to-nearest-even), keyed by (ebits, mbits, bias, special).
_NATIVE: dict[tuple[int, int, int, str], torch.dtype] = {
    (4, 3, 7, "fn"): torch.float8_e4m3fn,
    (5, 2, 15, "ieee"): torch.float8_e5m2,
}

#: FP8 E4M3FN (OCP/NVIDIA): bias 7, max 448, no Inf, NaN = S.1111.111.
FP8_E4M3 = FloatElement(4, 3, 7, "fn", name="fp8_e4m3")
#: FP8 E5M2: bias 15, max 57344, IEEE Inf/NaN.
FP8_E5M2 = FloatElement(5, 2, 15, "ieee", name="fp8_e5m2")
#: FP6 E3M2 (OCP MX): bias 3, max 28, finite only.
FP6_E3M2 = FloatElement(3, 2, 3, "finite", name="fp6_e3m2")
#: FP6 E2M3 (OCP MX): bias 1, max 7.5, finite only.
FP6_E2M3 = FloatElement(2, 3, 1, "finite", name="fp6_e2m3")
#: FP4 E2M1 (OCP MX, NVFP4): bias 1, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, finite only.
FP4_E2M1 = FloatElement(2, 1, 1, "finite", name="fp4_e2m1")
#: E8M0 scale with the OCP rounding (floor of log2).
E8M0 = E8M0Element("floor")

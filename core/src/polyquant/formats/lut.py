"""Lookup-table element codecs: fixed tables (NF4, the bitsandbytes dynamic 8-bit map) and data codebooks.

A code is an index into a table of levels; encoding picks the nearest level. Ties (a value exactly
halfway between two levels) go to the *smaller* level, which is the lower index for the ascending
fixed tables. Midpoints are compared in float64, where the midpoint of two float32 levels is exact,
so the choice never depends on rounding of the midpoint itself (float32 inputs are compared against the
midpoints rounded *down* to float32, which gives the same answer: no float32 lies strictly between).

Example:
    >>> import torch
    >>> NF4.round(torch.tensor([0.9, -0.1, 0.0]))
    tensor([ 1.0000, -0.0911,  0.0000])
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from polyquant.errors import FormatError
from polyquant.formats.codec import check_codes, working_float

__all__ = [
    "DYNAMIC8",
    "NF4",
    "NF4_LEVELS",
    "CodebookElement",
    "LUTElement",
    "dynamic_map_levels",
    "nearest_level",
]

#: The 16 NormalFloat levels of QLoRA / bitsandbytes (``get_4bit_type("nf4")``), ascending.
NF4_LEVELS: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


def dynamic_map_levels(max_exponent_bits: int = 7) -> tuple[float, ...]:
    """The 256 levels of the bitsandbytes signed dynamic 8-bit map, ascending.

    Each level is ``±10**(i - (max_exponent_bits - 1)) · f`` for a "dynamic exponent" ``i`` and a
    linear fraction ``f`` in (0.1, 1): exponent ``i`` gets ``2**i`` fraction steps (the midpoints of
    an even split of [0.1, 1]), so precision grows toward large magnitudes. ``0`` and ``1.0`` complete
    the 256 values; ``-1.0`` is not a level. The arithmetic follows ``create_dynamic_map`` of
    bitsandbytes (float32 fractions), so the table matches it value for value.

    Example:
        >>> levels = dynamic_map_levels()
        >>> len(levels), levels[-1], levels[127]
        (256, 1.0, 0.0)
    """
    levels: list[float] = [0.0, 1.0]
    for i in range(max_exponent_bits):
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        decade = 10 ** (i - (max_exponent_bits - 1)) * means
        levels += decade.tolist() + (-decade).tolist()
    if len(levels) != 256:
        raise FormatError(f"max_exponent_bits={max_exponent_bits} does not give 256 levels; use 7 (the default)")
    return tuple(sorted(levels))


def nearest_level(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for each element of ``x`` (ties to the smaller level).

    Args:
        x: values, any shape when ``levels`` is 1-D; ``(*batch, M)`` for batched ``levels``.
        levels: ``(L,)`` shared levels, or ``(*batch, L)`` one table per batch row; any order.

    Returns:
        ``int64`` indices into ``levels`` (its original order), shaped like ``x``.

    Example:
        >>> nearest_level(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 0.0, 3.0]))
        tensor([1, 0])
    """
    ordered, order = torch.sort(levels.double(), dim=-1, stable=True)
    midpoints = (ordered[..., 1:] + ordered[..., :-1]) / 2  # exact: float32 levels summed in float64
    if x.dtype != torch.float64:
        # For float32 x, "m < x" holds exactly when "m' < x" for m' = m rounded down to float32.
        nearest = midpoints.float()
        midpoints = torch.where(nearest.double() > midpoints, torch.nextafter(nearest, nearest - 1), nearest)
        x = x.float()
    position = torch.searchsorted(midpoints.contiguous(), x.contiguous(), right=False)  # ties → lower
    if levels.dim() == 1:
        ascending = bool((order == torch.arange(order.numel(), device=order.device)).all())
        return position if ascending else order[position]
    return torch.gather(order, -1, position)


def _reject_nan(x: torch.Tensor, name: str) -> None:
    if bool(torch.isnan(x).any()):
        raise FormatError(f"{name} has no NaN level but the input contains NaN; remove NaNs before encoding")


@dataclass(frozen=True)
class LUTElement:
    """A fixed table of levels; the code is the index of the nearest level.

    Args:
        levels: strictly ascending finite levels (2..256 of them); stored rounded to float32.
        name: display name (``"nf4"``).

    Example:
        >>> import torch
        >>> lut = LUTElement((-1.0, 0.0, 0.5, 1.0), "tiny")
        >>> lut.encode(torch.tensor([0.25, 0.8]))  # 0.25 is a tie between 0 and .5 → the smaller
        tensor([1, 3], dtype=torch.uint8)
    """

    levels: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        levels = tuple(torch.tensor([float(v) for v in self.levels], dtype=torch.float32).tolist())
        if not 2 <= len(levels) <= 256:
            raise FormatError(f"LUT {self.name!r} needs 2..256 levels, got {len(levels)}")
        if not all(math.isfinite(v) for v in levels):
            raise FormatError(f"LUT {self.name!r} levels must be finite numbers")
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise FormatError(f"LUT {self.name!r} levels must be strictly ascending (after rounding to float32)")
        object.__setattr__(self, "levels", levels)

    @property
    def bits(self) -> int:
        """Bits per code: ``ceil(log2(len(levels)))``."""
        return max(1, (len(self.levels) - 1).bit_length())

    @property
    def kind(self) -> str:
        """Always ``"lut"``."""
        return "lut"

    @property
    def max_value(self) -> float:
        """Largest level magnitude (1.0 for NF4)."""
        return max(abs(v) for v in self.levels)

    def table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The levels as a ``float32`` tensor on ``device``."""
        return _table(self.levels, str(device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest level (ties to the smaller level); NaN raises :class:`FormatError`."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        return nearest_level(xf, self.table(xf.device)).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The levels selected by ``codes`` (``float32``)."""
        return self.table(codes.device)[check_codes(codes, len(self.levels), self.name)]

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest level of each element (``float32``)."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        table = self.table(xf.device)
        return table[nearest_level(xf, table)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (levels included, exact)."""
        return {"type": "lut", "name": self.name, "levels": list(self.levels)}


@functools.lru_cache(maxsize=64)
def _table(levels: tuple[float, ...], device: str) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.float32, device=device)


@dataclass(frozen=True)
class CodebookElement:
    """A ``2**bits``-level codebook whose levels are *data* (per tensor or per group).

    The levels travel in :attr:`QParams.levels <polyquant.formats.spec.QParams.levels>` and in the
    :class:`~polyquant.qtensor.QTensor`; every method takes them as ``levels``. Without levels the
    codec uses :meth:`default_levels`, an even grid on [-1, 1] (the codebook before any data is seen).

    Args:
        bits: code width, 1..8.

    Example:
        >>> import torch
        >>> cb = CodebookElement(2)
        >>> cb.round(torch.tensor([0.1, 0.9]), levels=torch.tensor([-1.0, 0.0, 0.2, 1.0]))
        tensor([0., 1.])
    """

    bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise FormatError(f"codebook bits must be 1..8, got {self.bits}")

    @property
    def name(self) -> str:
        """``codebook<bits>``."""
        return f"codebook{self.bits}"

    @property
    def kind(self) -> str:
        """Always ``"lut"``."""
        return "lut"

    @property
    def size(self) -> int:
        """Number of levels, ``2**bits``."""
        return 1 << self.bits

    @property
    def max_value(self) -> float:
        """1.0, the largest magnitude of the default levels."""
        return 1.0

    def default_levels(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``2**bits`` evenly spaced levels from -1 to 1."""
        return torch.linspace(-1.0, 1.0, self.size, dtype=torch.float32, device=device)

    def _levels(self, levels: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        if levels is None:
            return self.default_levels(device)
        if levels.shape[-1:] != (self.size,):
            raise FormatError(
                f"{self.name} needs {self.size} levels along the last axis, got levels of shape {tuple(levels.shape)}"
            )
        return levels.float()

    def encode(self, x: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        """Index of the nearest of ``levels`` (``(L,)`` or batched ``(*batch, L)`` with ``x`` ``(*batch, M)``)."""
        xf = working_float(x, self.name)
        _reject_nan(xf, self.name)
        return nearest_level(xf, self._levels(levels, xf.device)).to(torch.uint8)

    def decode(self, codes: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        """The levels selected by ``codes`` (``float32``); batched levels pair with ``(*batch, M)`` codes."""
        idx = check_codes(codes, self.size, self.name)
        table = self._levels(levels, codes.device)
        if table.dim() == 1:
            return table[idx]
        return torch.gather(table, -1, idx)

    def round(self, x: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        """``decode(encode(x, levels), levels)``."""
        return self.decode(self.encode(x, levels), levels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"type": "codebook", "bits": self.bits}


#: NF4 (QLoRA): 16 levels in [-1, 1] placed at normal quantiles.
NF4 = LUTElement(NF4_LEVELS, "nf4")
#: bitsandbytes' signed dynamic 8-bit map (sign, dynamic exponent, linear fraction).
DYNAMIC8 = LUTElement(dynamic_map_levels(), "dynamic8")

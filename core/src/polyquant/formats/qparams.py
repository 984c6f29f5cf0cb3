"""QParams and the scale arithmetic behind them: storage types, rounding, MX exponents, codebook init.

:class:`QParams` holds a tensor's quantization parameters as ``float32`` values. The functions here
convert scales between those values and their stored form (fp32/fp16/bf16 tensors, or E8M0/E4M3 codes),
round arbitrary positive scales to what storage can hold, derive OCP MX power-of-two scales and
initialise codebook levels. :class:`~polyquant.formats.spec.FormatSpec` applies them.

Example:
    >>> import torch
    >>> round_scale(torch.tensor([0.3, 3.0]), "e8m0", "floor", "demo")
    tensor([0.2500, 2.0000])
    >>> store_scale(torch.tensor([0.25, 2.0]), "e8m0", "floor")
    tensor([125, 128], dtype=torch.uint8)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from polyquant.errors import FormatError
from polyquant.formats.layout import GroupLayout
from polyquant.formats.minifloat import FP8_E4M3, E8M0Element, FloatElement, ceil_log2, floor_log2, pow2

__all__ = [
    "SCALE_DTYPES",
    "QParams",
    "load_scale",
    "mx_scale",
    "quantile_levels",
    "round_scale",
    "store_scale",
]

#: ``scale_dtype`` name → (torch dtype of the stored tensor, bits per stored scale).
SCALE_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "fp32": (torch.float32, 32),
    "fp16": (torch.float16, 16),
    "bf16": (torch.bfloat16, 16),
    "e8m0": (torch.uint8, 8),
    "e4m3": (torch.uint8, 8),
}
_E4M3_SCALE_LIMIT = 464.0  # from here on values no longer round to 448 in E4M3


@dataclass(frozen=True, eq=False)
class QParams:
    """Quantization parameters of one tensor, all decoded to ``float32``.

    E8M0/E4M3 scales appear here as their float values (exact powers of two / E4M3 numbers); the
    :class:`~polyquant.qtensor.QTensor` stores them as 8-bit codes. Equality is identity (tensors do not
    compare as booleans).

    Attributes:
        scale: shape ``granularity.scale_shape(w.shape)``; all ones for ``scale_method="none"``.
        zero: zero point in code units, same shape as ``scale`` (asymmetric integer formats only).
        tensor_scale: 0-dim second-level scale (NVFP4).
        levels: codebook levels, ``(2**b,)`` per tensor or ``(*scale_shape, 2**b)`` per group.

    Example:
        >>> QParams(scale=torch.tensor(0.5)).zero is None
        True
    """

    scale: torch.Tensor
    zero: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None
    levels: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> QParams:
        """The same parameters on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return QParams(self.scale.to(device), move(self.zero), move(self.tensor_scale), move(self.levels))


def _e8m0(rounding: str) -> E8M0Element:
    return E8M0Element("ceil" if rounding == "rceil" else "floor")


def store_scale(scale: torch.Tensor, scale_dtype: str, rounding: str = "nearest") -> torch.Tensor:
    """Float32 scales (already representable) → the stored tensor (fp32/fp16/bf16, or 8-bit codes)."""
    if scale_dtype == "e8m0":
        return _e8m0(rounding).encode(scale)
    if scale_dtype == "e4m3":
        return FP8_E4M3.encode(scale)
    return scale.to(SCALE_DTYPES[scale_dtype][0])


def load_scale(stored: torch.Tensor, scale_dtype: str) -> torch.Tensor:
    """Inverse of :func:`store_scale`: stored scales → ``float32`` values."""
    if scale_dtype == "e8m0":
        return E8M0Element().decode(stored)
    if scale_dtype == "e4m3":
        return FP8_E4M3.decode(stored)
    return stored.float()


def round_scale(raw: torch.Tensor, scale_dtype: str, rounding: str, fmt: str) -> torch.Tensor:
    """Positive scales rounded to what ``scale_dtype`` stores, as ``float32``.

    E8M0 rounds the exponent down (``floor``) or up (``rceil``); E4M3 rounds to nearest and floors at
    its smallest subnormal; fp16/bf16 round to nearest and floor at their smallest normal, so scales
    never become zero.

    Raises:
        FormatError: when a scale exceeds the storage range (the message names a wider type).
    """
    raw = raw.float()
    if scale_dtype == "e8m0":
        return load_scale(_e8m0(rounding).encode(raw), "e8m0")
    if scale_dtype == "e4m3":
        if bool((raw >= _E4M3_SCALE_LIMIT).any()):
            raise FormatError(
                f"format {fmt!r}: a scale of {float(raw.max()):.4g} exceeds the e4m3 range (448); "
                f"enable tensor_scale (NVFP4-style) or store scales as fp16/fp32"
            )
        return FP8_E4M3.round(raw.clamp(min=FP8_E4M3.min_subnormal))
    dtype = SCALE_DTYPES[scale_dtype][0]
    info = torch.finfo(dtype)
    if bool((raw > info.max).any()):
        raise FormatError(
            f"format {fmt!r}: a scale of {float(raw.max()):.4g} overflows {scale_dtype}; "
            f"use scale_dtype='fp32' (or 'bf16') for tensors with values this large"
        )
    rounded = raw.clamp(min=info.tiny).to(dtype).float()
    if bool(torch.isinf(rounded).any()):
        raise FormatError(f"format {fmt!r}: a scale rounds to infinity in {scale_dtype}; use scale_dtype='fp32'")
    return rounded


def mx_scale(amax: torch.Tensor, element: FloatElement, rounding: str) -> torch.Tensor:
    """OCP MX shared scales (float32 powers of two) from per-block ``amax``.

    ``"floor"``: ``X = 2**(floor(log2 amax) − emax)`` (OCP MX v1.0; may clip up to just below
    ``2**(emax+1)``). ``"rceil"``: the smallest power of two with ``amax / X ≤ max_value`` (never clips).
    Exponents clamp to the E8M0 range; all-zero blocks get ``X = 1``.

    Example:
        >>> from polyquant.formats.minifloat import FP4_E2M1
        >>> mx_scale(torch.tensor([7.0, 6.0]), FP4_E2M1, "floor"), mx_scale(torch.tensor([7.0]), FP4_E2M1, "rceil")
        (tensor([1., 1.]), tensor([2.]))
    """
    positive = amax > 0
    safe = torch.where(positive, amax, torch.ones_like(amax)).double()
    if rounding == "floor":
        exponent = floor_log2(safe).long() - element.emax
    else:
        exponent = ceil_log2(safe / element.max_value).long()
        # division may round: step up where the power of two is still too small
        exponent = torch.where(element.max_value * pow2(exponent, torch.float64) < safe, exponent + 1, exponent)
    exponent = torch.where(positive, exponent.clamp(-127, 127), torch.zeros_like(exponent))
    return E8M0Element().decode((exponent + 127).to(torch.uint8))


def quantile_levels(x: torch.Tensor, layout: GroupLayout, bits: int, clip: torch.Tensor | None) -> torch.Tensor:
    """RTN codebook initialisation: the ``(i + 0.5)/L`` quantiles of each codebook group.

    Returns:
        Levels of shape ``(*layout.scale_shape, 2**bits)``, ascending, scaled by ``clip`` when given.
    """
    size = 1 << bits
    rows = layout.rows(x).float().sort(dim=-1).values
    n = rows.shape[-1]
    picks = ((torch.arange(size, dtype=torch.float64) + 0.5) * n / size).floor().long().clamp(max=n - 1)
    levels = rows[:, picks.to(rows.device)].reshape(*layout.scale_shape, size)
    if clip is not None:
        levels = levels * clip.expand(layout.scale_shape).unsqueeze(-1)
    return levels

"""The element codec contract and the validation helpers every codec shares.

An *element codec* maps real numbers to small integer codes and back, element by element and without
any scale: ``encode`` rounds each value to the nearest representable element and returns its bit
pattern as ``torch.uint8``; ``decode`` turns codes back into ``float32`` values; ``round`` is
``decode(encode(x))``. Scaling, grouping and zero points live one level up, in
:class:`~polyquant.formats.spec.FormatSpec`.

Example:
    >>> import torch
    >>> from polyquant.formats.elements import IntElement
    >>> codec: ElementCodec = IntElement(4, signed=True)
    >>> codec.decode(codec.encode(torch.tensor([2.4, -9.0])))
    tensor([ 2., -8.])
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from polyquant.errors import FormatError

__all__ = ["ElementCodec", "check_codes", "working_float"]


@runtime_checkable
class ElementCodec(Protocol):
    """What every element codec provides (frozen dataclasses in :mod:`polyquant.formats.elements`).

    Attributes:
        name: short name (``"int4"``, ``"fp8_e4m3"``, ``"nf4"``, ``"e8m0"``, ...).
        bits: storage bits per code, 1..8.
        kind: ``"int"``, ``"float"``, ``"lut"``, ``"binary"``, ``"ternary"`` or ``"scale"``.
        max_value: largest finite magnitude an element can take.
    """

    @property
    def name(self) -> str:
        """Short name of the element type."""
        ...

    @property
    def bits(self) -> int:
        """Storage bits per element code (1..8)."""
        ...

    @property
    def kind(self) -> str:
        """Element family: int, float, lut, binary, ternary or scale."""
        ...

    @property
    def max_value(self) -> float:
        """Largest finite magnitude representable."""
        ...

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Round ``x`` element-wise to the nearest element and return its ``uint8`` code."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Turn ``uint8`` codes into ``float32`` values."""
        ...

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``, possibly through a faster path."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, inverse of :func:`polyquant.formats.elements.element_from_dict`."""
        ...


def working_float(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as the float type codecs compute in: float64 stays float64, other floats become float32.

    Keeping float64 inputs in float64 avoids double rounding (float64 → float32 → element); every
    narrower float converts to float32 exactly.

    Raises:
        FormatError: when ``x`` is not a floating-point tensor.
    """
    if not torch.is_floating_point(x):
        raise FormatError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype}; convert it with .float() first"
        )
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_codes(codes: torch.Tensor, count: int, name: str, *, as_index: bool = True) -> torch.Tensor:
    """Validate ``codes`` as ``uint8`` values below ``count``.

    Returns:
        The codes as ``int64`` indices (``as_index=True``) or unchanged.

    Raises:
        FormatError: for a non-``uint8`` tensor or a code outside ``0..count-1``.
    """
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise FormatError(f"{name}: codes must be a torch.uint8 tensor, got {got}; encode values first")
    if codes.numel() and count < 256:
        top = int(codes.max())
        if top >= count:
            raise FormatError(
                f"{name}: code {top} is out of range; valid codes are 0..{count - 1} "
                f"(the data was not produced by this format, or was unpacked with the wrong bit width)"
            )
    return codes.long() if as_index else codes

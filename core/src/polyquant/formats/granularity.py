"""Granularity: which elements share one scale (per tensor, per channel, per group, per 2-D block).

Conventions (for a weight of shape ``(..., N, K)`` where ``K`` is the reduction axis of a Linear):

* ``per_tensor()``: one scale; scale shape ``()``.
* ``per_channel(axis=0)``: one scale per index of ``axis``; the scale keeps every dim as 1 except
  ``axis`` (``(N, 1)`` for a Linear weight).
* ``per_group(g)``: groups of ``g`` consecutive elements along the *last* axis; scale shape
  ``(*shape[:-1], K // g)``.
* ``per_block(r, c)``: 2-D tiles over the last two axes; scale shape ``(*shape[:-2], N // r, K // c)``.
* ``per_flat_block(b)``: blocks of ``b`` consecutive elements of the row-major flattened tensor
  (bitsandbytes' blockwise layout); scale shape ``(numel // b,)``. Equal to ``per_group(b)`` when ``b``
  divides ``K``, and also defined when only the element count is divisible.

Shapes that do not divide evenly raise :class:`~polyquant.errors.FormatError` naming the shape, the
group size and divisors that would work. polyquant never pads or truncates silently.

Example:
    >>> Granularity.per_group(128).scale_shape((4096, 4096))
    (4096, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from polyquant.errors import FormatError

__all__ = ["Granularity"]

Kind = Literal["tensor", "channel", "group", "block", "flat"]


@dataclass(frozen=True)
class Granularity:
    """Which elements share a scale. Build with the ``per_*`` constructors."""

    kind: Kind = "tensor"
    axis: int = 0
    group_size: int = 0
    block: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.kind not in ("tensor", "channel", "group", "block", "flat"):
            raise FormatError(f"granularity kind {self.kind!r} is unknown; use tensor, channel, group, block or flat")
        if self.kind in ("group", "flat") and self.group_size < 1:
            raise FormatError(f"group size must be a positive integer, got {self.group_size}")
        if self.kind == "block" and (self.block[0] < 1 or self.block[1] < 1):
            raise FormatError(f"block must be two positive integers, got {self.block}")

    @classmethod
    def per_tensor(cls) -> Granularity:
        """One scale for the whole tensor."""
        return cls("tensor")

    @classmethod
    def per_channel(cls, axis: int = 0) -> Granularity:
        """One scale per index of ``axis`` (0: per output channel of a Linear/Conv weight)."""
        return cls("channel", axis=axis)

    @classmethod
    def per_group(cls, group_size: int) -> Granularity:
        """One scale per ``group_size`` consecutive elements of the last axis."""
        return cls("group", group_size=int(group_size))

    @classmethod
    def per_block(cls, rows: int, cols: int) -> Granularity:
        """One scale per ``rows × cols`` tile of the last two axes."""
        return cls("block", block=(int(rows), int(cols)))

    @classmethod
    def per_flat_block(cls, block_size: int) -> Granularity:
        """One scale per ``block_size`` consecutive elements of the flattened tensor (bitsandbytes layout)."""
        return cls("flat", group_size=int(block_size))

    def validate(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`FormatError` when ``shape`` cannot be split by this granularity."""
        shape = tuple(int(s) for s in shape)
        if self.kind == "channel":
            if not shape:
                raise FormatError("per-channel scaling needs a tensor with at least one dimension")
            if not -len(shape) <= self.axis < len(shape):
                raise FormatError(f"per-channel axis {self.axis} is out of range for shape {shape}")
        elif self.kind == "group":
            if not shape:
                raise FormatError("per-group scaling needs a tensor with at least one dimension")
            k = shape[-1]
            if k % self.group_size:
                raise FormatError(
                    f"shape {shape} is not divisible by group size {self.group_size} along its last axis ({k}); "
                    f"choose a group size that divides {k} (e.g. {_divisors_hint(k)}) or exclude this module"
                )
        elif self.kind == "flat":
            numel = 1
            for s in shape:
                numel *= s
            if numel % self.group_size:
                raise FormatError(
                    f"shape {shape} has {numel} elements, not a multiple of the block size {self.group_size}; "
                    f"choose a block size dividing {numel} (e.g. {_divisors_hint(numel)}) or exclude this module"
                )
        elif self.kind == "block":
            if len(shape) < 2:
                raise FormatError(f"2-D block scaling needs a tensor with at least two dimensions, got shape {shape}")
            r, c = self.block
            if shape[-2] % r or shape[-1] % c:
                raise FormatError(
                    f"shape {shape} is not divisible by block {r}x{c}; choose a block dividing "
                    f"({shape[-2]}, {shape[-1]}) or exclude this module"
                )

    def scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the scale tensor for a tensor of ``shape`` (validates first)."""
        shape = tuple(int(s) for s in shape)
        self.validate(shape)
        if self.kind == "tensor":
            return ()
        if self.kind == "channel":
            axis = self.axis % len(shape)
            return tuple(s if i == axis else 1 for i, s in enumerate(shape))
        if self.kind == "group":
            return (*shape[:-1], shape[-1] // self.group_size)
        if self.kind == "flat":
            numel = 1
            for s in shape:
                numel *= s
            return (numel // self.group_size,)
        r, c = self.block
        return (*shape[:-2], shape[-2] // r, shape[-1] // c)

    def __str__(self) -> str:
        if self.kind == "tensor":
            return "per-tensor"
        if self.kind == "channel":
            return f"per-channel(axis={self.axis})"
        if self.kind == "group":
            return f"per-group({self.group_size})"
        if self.kind == "flat":
            return f"per-flat-block({self.group_size})"
        return f"per-block({self.block[0]}x{self.block[1]})"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (stored in checkpoints)."""
        return {"kind": self.kind, "axis": self.axis, "group_size": self.group_size, "block": list(self.block)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Granularity:
        """Inverse of :meth:`to_dict`."""
        block = data.get("block", (0, 0))
        assert isinstance(block, (list, tuple))
        return cls(
            kind=str(data["kind"]),  # type: ignore[arg-type]
            axis=int(data.get("axis", 0)),  # type: ignore[call-overload]
            group_size=int(data.get("group_size", 0)),  # type: ignore[call-overload]
            block=(int(block[0]), int(block[1])),
        )


def _divisors_hint(k: int) -> str:
    divs = [g for g in (256, 128, 64, 32, 16, 8) if k % g == 0]
    return ", ".join(str(d) for d in divs) if divs else "a divisor of the axis, or per-channel scaling"

"""Views of a tensor in which each scale group is a set of reduction axes.

:class:`GroupLayout` turns a :class:`~polyquant.formats.granularity.Granularity` and a shape into a
*view shape* of the tensor plus the axes to reduce over: reducing the view over ``reduce_dims`` (with
``keepdim``) gives one value per group, which ``reshape`` maps to and from the granularity's scale
shape. Scales then broadcast against the view without ever being expanded to the tensor's size.

Example:
    >>> import torch
    >>> from polyquant.formats.granularity import Granularity
    >>> layout = GroupLayout.of(Granularity.per_group(4), (2, 8))
    >>> layout.view_shape, layout.reduce_dims, layout.scale_shape
    ((2, 2, 4), (2,), (2, 2))
    >>> layout.reduce(torch.arange(16.0).reshape(2, 8), "amax")
    tensor([[ 3.,  7.],
            [11., 15.]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from polyquant.formats.granularity import Granularity

__all__ = ["GroupLayout"]


@dataclass(frozen=True)
class GroupLayout:
    """How the elements of a tensor of ``shape`` split into the groups of a granularity.

    Attributes:
        shape: the tensor's logical shape.
        view_shape: shape of the grouped view (``x.reshape(view_shape)``).
        reduce_dims: axes of the view that run inside one group.
        scale_shape: the granularity's scale shape (one value per group).
    """

    shape: tuple[int, ...]
    view_shape: tuple[int, ...]
    reduce_dims: tuple[int, ...]
    scale_shape: tuple[int, ...]

    @classmethod
    def of(cls, granularity: Granularity, shape: tuple[int, ...] | torch.Size) -> GroupLayout:
        """Layout of ``granularity`` over ``shape`` (raises ``FormatError`` for indivisible shapes)."""
        shape = tuple(int(s) for s in shape)
        scale_shape = granularity.scale_shape(shape)
        kind, nd = granularity.kind, len(shape)
        if kind == "tensor":
            return cls(shape, shape, tuple(range(nd)), scale_shape)
        if kind == "channel":
            axis = granularity.axis % nd
            return cls(shape, shape, tuple(d for d in range(nd) if d != axis), scale_shape)
        if kind == "group":
            g = granularity.group_size
            return cls(shape, (*shape[:-1], shape[-1] // g, g), (nd,), scale_shape)
        if kind == "flat":
            g = granularity.group_size
            return cls(shape, (math.prod(shape) // g, g), (1,), scale_shape)
        r, c = granularity.block
        view = (*shape[:-2], shape[-2] // r, r, shape[-1] // c, c)
        return cls(shape, view, (len(view) - 3, len(view) - 1), scale_shape)

    @property
    def keep_shape(self) -> tuple[int, ...]:
        """View shape with every reduced axis set to 1: the shape a scale takes to broadcast."""
        return tuple(1 if d in self.reduce_dims else s for d, s in enumerate(self.view_shape))

    @property
    def num_groups(self) -> int:
        """Number of groups (scales)."""
        return math.prod(self.scale_shape)

    @property
    def group_numel(self) -> int:
        """Elements per group."""
        return math.prod(self.shape) // max(self.num_groups, 1)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` reshaped to :attr:`view_shape`."""
        return x.reshape(self.view_shape)

    def broadcastable(self, per_group: torch.Tensor) -> torch.Tensor:
        """A tensor of :attr:`scale_shape` reshaped to broadcast against :meth:`view`."""
        return per_group.reshape(self.keep_shape)

    def reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        """Per-group ``"amax"``, ``"amin"``, ``"absmax"`` or ``"absmean"`` of ``x``, shaped :attr:`scale_shape`."""
        v = self.view(x)
        if op == "absmax":
            out = v.abs().amax(dim=self.reduce_dims, keepdim=True)
        elif op == "absmean":
            out = v.abs().mean(dim=self.reduce_dims, keepdim=True)
        elif op == "amax":
            out = v.amax(dim=self.reduce_dims, keepdim=True)
        elif op == "amin":
            out = v.amin(dim=self.reduce_dims, keepdim=True)
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown reduction {op!r}")
        return out.reshape(self.scale_shape)

    def _perm(self) -> list[int]:
        keep = [d for d in range(len(self.view_shape)) if d not in self.reduce_dims]
        return keep + list(self.reduce_dims)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rearranged to ``(num_groups, group_numel)``, one group per row (row order = scale order)."""
        return self.view(x).permute(self._perm()).reshape(self.num_groups, self.group_numel)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`rows`: back to :attr:`shape`."""
        perm = self._perm()
        permuted_shape = [self.view_shape[d] for d in perm]
        inverse = [perm.index(d) for d in range(len(perm))]
        return rows.reshape(permuted_shape).permute(inverse).reshape(self.shape)

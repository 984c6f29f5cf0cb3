"""Reading polyquant integer weights in the affine form that fast kernels consume.

A polyquant integer weight dequantizes as ``(v − zero) · scale [· tensor_scale]`` where ``v`` is the
decoded code value (``−8..7`` for ``int4``, ``0..15`` for ``uint4``). Kernels want the codes shifted to
``q = v − qmin`` (``0..levels−1``) and one scale (and zero) per group of consecutive input features. This
module converts any per-group, per-output-channel or per-tensor integer weight to that form; the
kernels then repack it into their own layouts.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("uint4").with_options(group_size=32).quantize(torch.randn(16, 64))
    >>> groups = affine_groups(qt)
    >>> groups.q.shape, groups.scale.shape, groups.group_size
    (torch.Size([16, 64]), torch.Size([16, 2]), 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from polyquant.qtensor import QTensor

__all__ = ["AffineGroups", "affine_groups", "check_integer_matrix", "group_size_along_k", "integer_range"]


@dataclass(frozen=True)
class AffineGroups:
    """An integer ``(N, K)`` weight as shifted codes plus per-group affine parameters.

    ``dense = (q + qmin − zero) · scale`` with ``scale``/``zero`` repeated ``group_size`` times along K.

    Attributes:
        q: int32 ``(N, K)`` codes shifted to ``0..levels−1``.
        qmin: the smallest code value of the format (``−8`` for int4, ``0`` for uint4).
        scale: float32 ``(N, K // group_size)``, with any per-tensor scale folded in.
        zero: float32 ``(N, K // group_size)`` zero points in code units, or ``None`` (symmetric).
        group_size: consecutive input features sharing one scale (``K`` for per-channel scales).
    """

    q: torch.Tensor
    qmin: int
    scale: torch.Tensor
    zero: torch.Tensor | None
    group_size: int

    def dequantize(self) -> torch.Tensor:
        """Dense float32 ``(N, K)`` weight (for checks; kernels never materialize it).

        Example:
            >>> import torch, polyquant
            >>> qt = polyquant.formats.get("int4").with_options(group_size=32).quantize(torch.randn(16, 64))
            >>> torch.equal(affine_groups(qt).dequantize(), qt.dequantize(torch.float32))
            True
        """
        zero = 0.0 if self.zero is None else self.zero.repeat_interleave(self.group_size, dim=1)
        values = (self.q + self.qmin).float()
        return (values - zero) * self.scale.repeat_interleave(self.group_size, dim=1)

    def regroup(self, group_size: int) -> AffineGroups:
        """The same weight with scales repeated so that groups have ``group_size`` (a divisor of the current one).

        Example:
            >>> import torch, polyquant
            >>> qt = polyquant.formats.get("int4").with_options(group_size=64).quantize(torch.randn(16, 128))
            >>> affine_groups(qt).regroup(32).scale.shape
            torch.Size([16, 4])
        """
        if self.group_size % group_size:
            raise ValueError(f"group size {group_size} does not divide {self.group_size}")
        factor = self.group_size // group_size
        zero = None if self.zero is None else self.zero.repeat_interleave(factor, dim=1)
        return AffineGroups(self.q, self.qmin, self.scale.repeat_interleave(factor, dim=1), zero, group_size)


def integer_range(spec: Any) -> tuple[int, int] | None:
    """``(qmin, qmax)`` of an integer format's code values, or ``None`` for non-integer formats.

    Example:
        >>> import polyquant
        >>> integer_range(polyquant.formats.get("int4"))
        (-8, 7)
    """
    element = getattr(spec, "element", None)
    qmin, qmax = getattr(element, "qmin", None), getattr(element, "qmax", None)
    if not isinstance(qmin, int) or not isinstance(qmax, int) or isinstance(qmin, bool):
        return None
    return qmin, qmax


def group_size_along_k(spec: Any, shape: tuple[int, ...]) -> int | None:
    """How many consecutive input features share a scale in a ``(N, K)`` weight, or ``None``.

    Per-group scales give the group size, per-output-channel and per-tensor scales give ``K``; 2-D blocks
    and per-input-channel scales do not group along K (``None``).

    Example:
        >>> import polyquant
        >>> group_size_along_k(polyquant.formats.get("int8"), (64, 256))
        256
    """
    granularity = spec.granularity
    k = int(shape[-1])
    if granularity.kind == "group":
        return int(granularity.group_size)
    if granularity.kind == "tensor":
        return k
    if granularity.kind == "channel" and granularity.axis % len(shape) == 0:
        return k
    return None


def check_integer_matrix(weight: QTensor | None, levels: int | None = None) -> str | None:
    """Why ``weight`` is not a 2-D integer weight grouped along K (``None`` when it is).

    Args:
        weight: the quantized weight of a call (``None`` when the call has none).
        levels: the exact number of code values the kernel handles (``16`` for 4-bit), or ``None``.

    Example:
        >>> import torch, polyquant
        >>> check_integer_matrix(polyquant.formats.get("int8").quantize(torch.randn(2, 4, 4)))
        'needs a 2-D weight, got shape (2, 4, 4)'
    """
    if weight is None:
        return "needs a quantized weight"
    shape = tuple(int(s) for s in weight.shape)
    if len(shape) != 2:
        return f"needs a 2-D weight, got shape {shape}"
    bounds = integer_range(weight.spec)
    if bounds is None:
        return f"needs an integer format, got {weight.spec.name}"
    if levels is not None and bounds[1] - bounds[0] + 1 != levels:
        return f"needs {levels} code values, {weight.spec.name} has {bounds[1] - bounds[0] + 1}"
    if group_size_along_k(weight.spec, shape) is None:
        return f"needs per-group, per-output-channel or per-tensor scales, got {weight.spec.granularity}"
    return None


def affine_groups(weight: QTensor) -> AffineGroups:
    """Convert a 2-D integer weight to :class:`AffineGroups` (check it with :func:`check_integer_matrix` first).

    Example:
        >>> import torch, polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(8, 32))
        >>> affine_groups(qt).group_size
        32
    """
    problem = check_integer_matrix(weight)
    if problem is not None:
        raise ValueError(f"{weight.spec.name} weight of shape {tuple(weight.shape)}: {problem}")
    spec = weight.spec
    qmin, _ = integer_range(spec)  # type: ignore[misc]
    n, k = (int(s) for s in weight.shape)
    group_size = group_size_along_k(spec, (n, k))
    assert group_size is not None
    values = spec.element.decode(weight.codes()).to(weight.device)
    q = (torch.round(values).to(torch.int32) - qmin).reshape(n, k)
    qparams = weight.qparams()
    groups = k // group_size
    scale = _per_group(qparams.scale, n, groups)
    if qparams.tensor_scale is not None:
        scale = scale * qparams.tensor_scale.float().reshape(())
    zero = None if qparams.zero is None else _per_group(qparams.zero, n, groups)
    return AffineGroups(q.contiguous(), int(qmin), scale.contiguous(), zero, group_size)


def _per_group(t: torch.Tensor, n: int, groups: int) -> torch.Tensor:
    """A scale/zero tensor of shape ``()``, ``(N, 1)`` or ``(N, groups)`` as float32 ``(N, groups)``."""
    t = t.float()
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1, 1).expand(n, groups).contiguous()
    return t.reshape(n, -1).expand(n, groups).contiguous()

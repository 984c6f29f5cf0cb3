"""4-bit weight-only linear on CPU through torch's int4 kernel (``aten._weight_int4pack_mm_for_cpu``).

The aten kernel multiplies a bfloat16 input by 4-bit weights packed with
``aten._convert_weight_to_int4pack_for_cpu`` and computes each weight as ``(q − 8) · s + z_f`` with
``q`` in ``0..15`` and a float scale ``s`` / offset ``z_f`` per group of 32, 64, 128 or 256 input features.
A polyquant weight ``(v − z) · s`` with code value ``v = q + qmin`` maps onto it exactly with
``z_f = (8 + qmin − z) · s``: ``int4`` (``qmin = −8``) gives ``z_f = −z · s`` and ``uint4``
(``qmin = 0``) gives ``z_f = (8 − z) · s``. Larger groups and per-channel scales use the largest
supported group dividing them, with scales repeated.

The kernel is fast only for bfloat16 inputs (float32/float16 inputs take a path tens of times slower), so the
input is converted to bfloat16 and the output back to the input's dtype: expect bfloat16 rounding
(≈0.4% relative) versus the float32 reference.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("int4").with_options(group_size=128).quantize(torch.randn(256, 512))
    >>> prepared = prepare(qt)
    >>> linear_int4(torch.randn(2, 512), qt, prepared=prepared).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from polyquant.plugins import KernelContext, KernelSpec
from polyquant_kernels.layout import affine_groups, check_integer_matrix, group_size_along_k

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

__all__ = ["KERNEL", "KERNEL_GROUP_SIZES", "Int4PackedWeight", "available", "linear_int4", "prepare", "supports"]

#: Group sizes the aten kernel accepts, largest first.
KERNEL_GROUP_SIZES = (256, 128, 64, 32)
#: Input dtypes the kernel accepts (all converted to bfloat16 inside).
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: ``inner_k_tiles`` argument of the packing op (only the CUDA layout depends on it).
INNER_K_TILES = 8
_OUT_MULTIPLE = 16


@dataclass(frozen=True)
class Int4PackedWeight:
    """A weight repacked for ``aten._weight_int4pack_mm_for_cpu`` (built once by :func:`prepare`).

    Attributes:
        packed: uint8 ``(N, K / 2)`` in torch's CPU int4 layout.
        scales_and_zeros: bfloat16 ``(K / group_size, N, 2)``: scale and float offset per group.
        group_size: the kernel's group size (32, 64, 128 or 256).
        out_features: ``N``.
        in_features: ``K``.
    """

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    group_size: int
    out_features: int
    in_features: int


def available() -> str | None:
    """``None`` when torch has a working int4 CPU kernel, else why not.

    Example:
        >>> available() is None
        True
    """
    aten = torch.ops.aten
    for op in ("_weight_int4pack_mm_for_cpu", "_convert_weight_to_int4pack_for_cpu"):
        if not hasattr(aten, op):
            return f"torch {torch.__version__} has no aten.{op} (needs torch >= 2.6)"
    try:  # a tiny probe: some builds register the op but cannot run it
        packed = aten._convert_weight_to_int4pack_for_cpu(torch.zeros(16, 32, dtype=torch.int32), INNER_K_TILES)
        aten._weight_int4pack_mm_for_cpu(
            torch.ones(1, 32, dtype=torch.bfloat16), packed, 32, torch.ones(1, 16, 2, dtype=torch.bfloat16)
        )
    except RuntimeError as exc:
        return f"aten._weight_int4pack_mm_for_cpu failed on this machine: {exc}"
    return None


def _kernel_group(group_size: int) -> int | None:
    return next((g for g in KERNEL_GROUP_SIZES if group_size % g == 0), None)


def supports(ctx: KernelContext) -> str | None:
    """``None`` when the call fits the kernel, else why not (shown by ``polyquant kernels --explain``).

    Example:
        >>> ctx = KernelContext(op="linear", format="int4", device="cpu", dtype=torch.float64)
        >>> supports(ctx)
        'needs a quantized weight'
    """
    problem = check_integer_matrix(ctx.weight, levels=16)
    if problem is not None:
        return problem
    assert ctx.weight is not None
    if ctx.act_format is not None:
        return f"weight-only kernel: activations must not be quantized (got {ctx.act_format})"
    if ctx.dtype not in INPUT_DTYPES:
        return f"needs a float32, float16 or bfloat16 input, got {ctx.dtype}"
    n, k = (int(s) for s in ctx.weight.shape)
    group_size = group_size_along_k(ctx.weight.spec, (n, k))
    assert group_size is not None
    if _kernel_group(group_size) is None:
        return f"needs group size multiple of 32 (got {group_size})"
    if n % _OUT_MULTIPLE:
        return f"needs out_features multiple of {_OUT_MULTIPLE} (got {n})"
    return None


def prepare(weight: QTensor) -> Int4PackedWeight:
    """Repack ``weight`` (a 2-D 16-level integer weight on CPU) for the aten kernel; run once per weight.

    Example:
        >>> import torch, polyquant
        >>> qt = polyquant.formats.get("uint4").with_options(group_size=64).quantize(torch.randn(32, 128))
        >>> prepare(qt).scales_and_zeros.shape
        torch.Size([2, 32, 2])
    """
    groups = affine_groups(weight)
    kernel_group = _kernel_group(groups.group_size)
    if kernel_group is None:
        raise ValueError(f"group size {groups.group_size} is not a multiple of 32")
    groups = groups.regroup(kernel_group)
    n, k = groups.q.shape
    zero = 0.0 if groups.zero is None else groups.zero
    offset = (8 + groups.qmin - zero) * groups.scale  # the kernel's float zero z_f
    scales_and_zeros = torch.stack([groups.scale.t(), offset.t()], dim=-1).to(torch.bfloat16).contiguous()
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(groups.q.cpu().contiguous(), INNER_K_TILES)
    return Int4PackedWeight(packed, scales_and_zeros, kernel_group, int(n), int(k))


def linear_int4(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Int4PackedWeight | None = None,
) -> torch.Tensor:
    """``x · dequant(weight)ᵀ + bias`` with the aten int4 kernel (bfloat16 math inside, output in ``x.dtype``).

    Args:
        x: input ``(..., K)``.
        weight: the quantized weight (used only when ``prepared`` is missing).
        bias: optional ``(N,)`` bias, added in ``x.dtype``.
        act: must be ``None`` (weight-only kernel).
        act_scale: unused.
        prepared: the result of :func:`prepare` (repacked on every call when missing: slow).

    Example:
        >>> import torch, polyquant
        >>> qt = polyquant.formats.get("int4").with_options(group_size=32).quantize(torch.randn(16, 64))
        >>> linear_int4(torch.randn(3, 64, dtype=torch.bfloat16), qt).dtype
        torch.bfloat16
    """
    if act is not None:
        raise ValueError("linear_int4 is a weight-only kernel; use the reference for quantized activations")
    packed = prepared if prepared is not None else prepare(weight)
    rows = x.reshape(-1, packed.in_features).to(torch.bfloat16).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed.packed, packed.group_size, packed.scales_and_zeros)
    y = y.to(x.dtype).reshape(*x.shape[:-1], packed.out_features)
    return y if bias is None else y + bias.to(x.dtype)


KERNEL = KernelSpec(
    op="linear",
    name="cpu_int4pack",
    formats=("int4", "uint4"),
    device="cpu",
    backend="aten",
    fn=linear_int4,
    priority=10,
    available=available,
    supports=supports,
    prepare=prepare,
    description="4-bit weight-only linear via aten._weight_int4pack_mm_for_cpu (bfloat16 inside; groups 32..256)",
)

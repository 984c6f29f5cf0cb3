"""4-bit weight-only linear on CUDA with a fused Triton dequantize + matmul (``triton_int4``).

Each program loads a tile of nibble-packed codes, dequantizes it in registers as
``q · scale + offset`` (``offset = (qmin − zero) · scale``, so ``int4``, ``uint4``, symmetric and
asymmetric weights share one formula) and accumulates ``x · w`` in float32; the dense weight never
exists in memory. Any group size along K works, including per-channel scales.

Triton is imported lazily (only when the kernel runs); :func:`available` explains when Triton or a CUDA
device is missing. The Triton program lives in :mod:`polyquant_kernels.triton_int4_kernel`; its launcher
:func:`~polyquant_kernels.triton_int4_kernel.int4_matmul` also runs on CPU tensors under
``TRITON_INTERPRET=1``, which is how the tests check it without a GPU.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("int4").with_options(group_size=32).quantize(torch.randn(16, 64))
    >>> prepare(qt).packed.shape
    torch.Size([32, 16])
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from polyquant.packing import pack
from polyquant.plugins import KernelContext, KernelSpec
from polyquant_kernels.layout import affine_groups, check_integer_matrix

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

__all__ = ["KERNEL", "TritonInt4Weight", "available", "linear_triton_int4", "pack_nibbles", "prepare", "supports"]

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class TritonInt4Weight:
    """A 4-bit weight in the Triton kernel's layout (see :mod:`polyquant_kernels.triton_int4_kernel`).

    Attributes:
        packed: uint8 ``(K / 2, N)``: two codes per byte along K, low nibble first.
        scale: float32 ``(K / group_size, N)``.
        offset: float32 ``(K / group_size, N)``: ``(qmin − zero) · scale``.
        group_size: input features per scale.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    group_size: int


def available() -> str | None:
    """``None`` when Triton is installed and a CUDA device is visible, else why not.

    Example:
        >>> available() in (None, "triton is not installed (pip install 'polyquant-kernels[triton]')", "no CUDA device")
        True
    """
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'polyquant-kernels[triton]')"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def supports(ctx: KernelContext) -> str | None:
    """Why the Triton int4 kernel cannot run ``ctx`` (``None`` when it can).

    Example:
        >>> supports(KernelContext(op="linear", format="int4", device="cuda", dtype=torch.float16))
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
    if int(ctx.weight.shape[-1]) % 2:
        return f"needs an even in_features (got {int(ctx.weight.shape[-1])})"
    return None


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Pack ``(N, K)`` codes in ``0..15`` into uint8 ``(K / 2, N)``, low nibble = even k.

    This is :func:`polyquant.packing.pack` (4 bits, low nibble first along K), transposed so that the
    kernel's loads along N are contiguous.

    Example:
        >>> pack_nibbles(torch.tensor([[1, 2, 3, 4]])).flatten().tolist()
        [33, 67]
    """
    if q.shape[-1] % 2:
        raise ValueError(f"pack_nibbles needs an even number of columns, got shape {tuple(q.shape)}")
    return pack(q.to(torch.uint8), 4).t().contiguous()


def prepare(weight: QTensor) -> TritonInt4Weight:
    """Repack a 2-D 16-level integer weight for the Triton kernel (on the weight's device); run once per weight.

    Example:
        >>> import torch, polyquant
        >>> qt = polyquant.formats.get("uint4").quantize(torch.randn(16, 256))
        >>> prepare(qt).group_size
        128
    """
    groups = affine_groups(weight)
    zero = 0.0 if groups.zero is None else groups.zero
    offset = (groups.qmin - zero) * groups.scale
    return TritonInt4Weight(
        pack_nibbles(groups.q), groups.scale.t().contiguous(), offset.t().contiguous(), groups.group_size
    )


def linear_triton_int4(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: TritonInt4Weight | None = None,
) -> torch.Tensor:
    """``x · dequant(weight)ᵀ + bias`` with the fused Triton kernel (float32 accumulation, output in ``x.dtype``).

    Args:
        x: input ``(..., K)`` on a CUDA device (or CPU under ``TRITON_INTERPRET=1``).
        weight: the quantized weight (used only when ``prepared`` is missing).
        bias: optional ``(N,)`` bias.
        act: must be ``None`` (weight-only kernel).
        act_scale: unused.
        prepared: the result of :func:`prepare`.
    """
    if act is not None:
        raise ValueError("linear_triton_int4 is a weight-only kernel; use the reference for quantized activations")
    from polyquant_kernels.triton_int4_kernel import int4_matmul

    w = prepared if prepared is not None else prepare(weight)
    k, n = w.packed.shape[0] * 2, w.packed.shape[1]
    rows = x.reshape(-1, k).contiguous()
    y = int4_matmul(rows, w.packed, w.scale, w.offset, w.group_size).reshape(*x.shape[:-1], n)
    return y if bias is None else y + bias.to(x.dtype)


KERNEL = KernelSpec(
    op="linear",
    name="triton_int4",
    formats=("int4", "uint4"),
    device="cuda",
    backend="triton",
    fn=linear_triton_int4,
    priority=20,
    available=available,
    supports=supports,
    prepare=prepare,
    description="4-bit weight-only linear: fused Triton dequantize + matmul (any group size, float32 accumulation)",
)

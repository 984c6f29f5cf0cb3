"""8-bit linear kernels on CPU: weight-only (W8A16) and weight + activation (W8A8).

Both take symmetric ``int8`` weights with one scale per output channel (or per tensor).

* ``cpu_int8pack`` (weight-only) runs ``aten._weight_int8pack_mm(x, w_int8, scales)``. That op is fast
  only for bfloat16 inputs, so the input is converted to bfloat16 inside and the output back: expect
  bfloat16 rounding (≈0.4% relative) versus the float32 reference.
* ``cpu_w8a8_intmm`` quantizes the input to int8 exactly as the reference does
  (:func:`polyquant.kernels.ops.activation_qparams`: dynamic per token or per tensor, or a static
  per-tensor scale; asymmetric zero points included), multiplies int8 by int8 into int32 with
  ``torch._int_mm(a, w.t())`` (the weight is kept ``(N, K)`` and passed transposed: no copy, and faster
  than a contiguous ``(K, N)`` for decode), subtracts ``zero · Σ_k w`` for asymmetric inputs and rescales
  by ``a_scale ⊗ w_scale``. Integer products are exact, so it matches the float32 reference to float32
  rounding.

Example:
    >>> import torch, polyquant
    >>> from polyquant.activations import ActivationSpec
    >>> qt = polyquant.formats.get("int8").quantize(torch.randn(64, 128))
    >>> y = linear_w8a8(torch.randn(4, 128), qt, act=ActivationSpec("int8"), prepared=prepare(qt))
    >>> y.shape
    torch.Size([4, 64])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from polyquant.kernels.ops import activation_qparams
from polyquant.plugins import KernelContext, KernelSpec
from polyquant_kernels.layout import affine_groups, check_integer_matrix, group_size_along_k, integer_range

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

__all__ = [
    "INT8PACK_KERNEL",
    "W8A8_KERNEL",
    "Int8Weight",
    "available_int8pack",
    "available_int_mm",
    "linear_int8_weight_only",
    "linear_w8a8",
    "prepare",
    "supports_int8pack",
    "supports_w8a8",
]

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Largest K for which int8·int8 sums (plus the zero-point correction) cannot overflow int32.
MAX_IN_FEATURES = 65536
_ACT_RANGE = (-128, 127)


@dataclass(frozen=True)
class Int8Weight:
    """A symmetric per-channel int8 weight ready for the int8 kernels (built once by :func:`prepare`).

    Attributes:
        weight: int8 ``(N, K)``, contiguous.
        scale: float32 ``(N,)`` per-output-channel scales.
        scale_bf16: the same scales in bfloat16 (``_weight_int8pack_mm`` wants the input's dtype).
        row_sum: int32 ``(N,)`` sums of each weight row (zero-point correction of asymmetric inputs).
    """

    weight: torch.Tensor
    scale: torch.Tensor
    scale_bf16: torch.Tensor
    row_sum: torch.Tensor


def available_int8pack() -> str | None:
    """``None`` when ``aten._weight_int8pack_mm`` exists and runs, else why not.

    Example:
        >>> available_int8pack() is None
        True
    """
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return f"torch {torch.__version__} has no aten._weight_int8pack_mm"
    try:
        torch.ops.aten._weight_int8pack_mm(
            torch.ones(1, 32, dtype=torch.bfloat16),
            torch.ones(8, 32, dtype=torch.int8),
            torch.ones(8, dtype=torch.bfloat16),
        )
    except RuntimeError as exc:
        return f"aten._weight_int8pack_mm failed on this machine: {exc}"
    return None


def available_int_mm() -> str | None:
    """``None`` when ``torch._int_mm`` runs on CPU and is exact, else why not.

    Example:
        >>> available_int_mm() is None
        True
    """
    if not hasattr(torch, "_int_mm"):
        return f"torch {torch.__version__} has no torch._int_mm"
    a = torch.arange(-64, 64, dtype=torch.int8).reshape(4, 32)
    b = torch.arange(127, -129, -1, dtype=torch.int8).reshape(8, 32)
    try:
        out = torch._int_mm(a, b.t())
    except RuntimeError as exc:
        return f"torch._int_mm failed on CPU: {exc}"
    if not torch.equal(out, a.int() @ b.int().t()):
        return "torch._int_mm gives wrong results on this machine"
    return None


def _int8_weight_problem(ctx: KernelContext) -> str | None:
    problem = check_integer_matrix(ctx.weight)
    if problem is not None:
        return problem
    assert ctx.weight is not None
    spec = ctx.weight.spec
    if not spec.symmetric:
        return "needs symmetric weights (no zero point)"
    qmin, qmax = integer_range(spec)  # type: ignore[misc]
    if qmin < -128 or qmax > 127:
        return f"needs codes in -128..127, {spec.name} has {qmin}..{qmax}"
    n, k = (int(s) for s in ctx.weight.shape)
    if group_size_along_k(spec, (n, k)) != k:
        return f"needs per-channel or per-tensor weight scales, got {spec.granularity}"
    if ctx.dtype not in INPUT_DTYPES:
        return f"needs a float32, float16 or bfloat16 input, got {ctx.dtype}"
    return None


def supports_int8pack(ctx: KernelContext) -> str | None:
    """Why the weight-only int8 kernel cannot run ``ctx`` (``None`` when it can).

    Example:
        >>> ctx = KernelContext(op="linear", format="int8", device="cpu", dtype=torch.float32, act_format="int8")
        >>> supports_int8pack(ctx)
        'needs a quantized weight'
    """
    problem = _int8_weight_problem(ctx)
    if problem is not None:
        return problem
    if ctx.act_format is not None:
        return f"weight-only kernel: activations must not be quantized (got {ctx.act_format})"
    return None


def supports_w8a8(ctx: KernelContext) -> str | None:
    """Why the W8A8 kernel cannot run ``ctx`` (``None`` when it can).

    Example:
        >>> supports_w8a8(KernelContext(op="linear", format="int8", device="cpu", dtype=torch.float32))
        'needs a quantized weight'
    """
    problem = _int8_weight_problem(ctx)
    if problem is not None:
        return problem
    assert ctx.weight is not None
    if ctx.act_format != "int8":
        return f"needs int8 activations (W8A8), got {ctx.act_format or 'unquantized activations'}"
    k = int(ctx.weight.shape[-1])
    if k < 2:  # torch._int_mm returns wrong sums for K = 1 on CPU (torch 2.13)
        return f"needs in_features >= 2 (got {k})"
    if k > MAX_IN_FEATURES:
        return f"needs in_features <= {MAX_IN_FEATURES} so int32 sums cannot overflow (got {k})"
    return None


def prepare(weight: QTensor) -> Int8Weight:
    """Int8 weight, float32/bfloat16 scales and row sums of a symmetric per-channel integer weight.

    Example:
        >>> import torch, polyquant
        >>> prepare(polyquant.formats.get("int8").quantize(torch.randn(8, 16))).weight.dtype
        torch.int8
    """
    groups = affine_groups(weight)
    if groups.zero is not None and bool(groups.zero.any()):
        raise ValueError("the int8 kernels need symmetric weights (zero point 0)")
    w = (groups.q + groups.qmin).to(torch.int8).contiguous()
    scale = groups.scale.reshape(-1).contiguous()
    return Int8Weight(w, scale, scale.to(torch.bfloat16), w.sum(dim=1, dtype=torch.int32))


def linear_int8_weight_only(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Int8Weight | None = None,
) -> torch.Tensor:
    """Weight-only int8 linear with ``aten._weight_int8pack_mm`` (bfloat16 math inside, output in ``x.dtype``).

    Example:
        >>> import torch, polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(8, 16))
        >>> linear_int8_weight_only(torch.randn(2, 16), qt).shape
        torch.Size([2, 8])
    """
    if act is not None:
        raise ValueError("linear_int8_weight_only is a weight-only kernel; use linear_w8a8 for quantized activations")
    w = prepared if prepared is not None else prepare(weight)
    n, k = w.weight.shape
    rows = x.reshape(-1, k).to(torch.bfloat16).contiguous()
    y = torch.ops.aten._weight_int8pack_mm(rows, w.weight, w.scale_bf16)
    y = y.to(x.dtype).reshape(*x.shape[:-1], n)
    return y if bias is None else y + bias.to(x.dtype)


def linear_w8a8(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Int8Weight | None = None,
) -> torch.Tensor:
    """W8A8 linear: int8 input codes × int8 weights with ``torch._int_mm``, rescaled in float32.

    Args:
        x: input ``(..., K)``.
        weight: the quantized weight (used only when ``prepared`` is missing).
        bias: optional ``(N,)`` bias.
        act: int8 activation settings (required).
        act_scale: calibrated per-tensor scale for a static ``act``.
        prepared: the result of :func:`prepare`.

    Example:
        >>> import torch, polyquant
        >>> from polyquant.activations import ActivationSpec
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(8, 16))
        >>> act = ActivationSpec("int8", granularity="tensor", dynamic=False)
        >>> linear_w8a8(torch.randn(2, 16), qt, act=act, act_scale=torch.tensor(0.05)).shape
        torch.Size([2, 8])
    """
    if act is None or act.format != "int8":
        raise ValueError("linear_w8a8 needs int8 activation settings (act=ActivationSpec('int8', ...))")
    w = prepared if prepared is not None else prepare(weight)
    n, k = w.weight.shape
    rows = x.reshape(-1, k)
    a_scale, a_zero = activation_qparams(rows, act, act_scale)
    scaled = rows.detach().float() / a_scale
    if a_zero is not None:
        scaled = scaled + a_zero
    codes = torch.round(scaled).clamp_(*_ACT_RANGE).to(torch.int8)
    acc = torch._int_mm(codes, w.weight.t())
    if a_zero is not None:
        acc = acc - a_zero.to(torch.int32) * w.row_sum
    y = acc.float().mul_(a_scale).mul_(w.scale)
    if bias is not None:
        y = y.add_(bias.float())
    return y.to(x.dtype).reshape(*x.shape[:-1], n)


INT8PACK_KERNEL = KernelSpec(
    op="linear",
    name="cpu_int8pack",
    formats=("int8",),
    device="cpu",
    backend="aten",
    fn=linear_int8_weight_only,
    priority=10,
    available=available_int8pack,
    supports=supports_int8pack,
    prepare=prepare,
    description="int8 weight-only linear via aten._weight_int8pack_mm (bfloat16 inside; per-channel symmetric)",
)

W8A8_KERNEL = KernelSpec(
    op="linear",
    name="cpu_w8a8_intmm",
    # Narrower symmetric integers (W4A8, ...) run on the same int8 engine: their codes widen to int8 once.
    formats=("int8", "int7", "int6", "int5", "int4", "int3", "int2"),
    device="cpu",
    backend="aten",
    fn=linear_w8a8,
    priority=10,
    available=available_int_mm,
    supports=supports_w8a8,
    prepare=prepare,
    description="W8A8 linear: int8 activations (dynamic/static) x int8 weights via torch._int_mm, exact int32 sums",
)

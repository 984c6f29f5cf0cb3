"""A ``linear`` kernel for ``int4_pow2`` on CPU: unpack nibbles, shift by the group exponent, matmul.

The reference kernel dequantizes through the generic path (bit unpacking, a decode table, a float
multiply per weight). This one uses what the format guarantees: a code is a sign bit and a 3-bit
magnitude, and a scale is an E8M0 exponent, so the dense weight is ``ldexp(±magnitude, exponent − 2)``.
The result is bit-identical to the reference's dequantization (both are exact), and so is the output.

Example:
    >>> import torch
    >>> from polyquant_example.format import INT4_POW2
    >>> qt = INT4_POW2.quantize(torch.randn(16, 64))
    >>> linear_int4_pow2(torch.randn(2, 64), qt).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from polyquant.errors import KernelError
from polyquant.kernels.ops import compute_dtype, fake_quantize_activation
from polyquant.plugins import KernelContext, KernelSpec
from polyquant_example.format import ELEMENT

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

__all__ = [
    "KERNEL_NAME",
    "dequantize_int4_pow2",
    "int4_pow2_linear_kernel",
    "linear_int4_pow2",
    "supports_int4_pow2",
]

KERNEL_NAME = "cpu_int4_pow2"
_E8M0_BIAS = 127
_STEP_SHIFT = 2  # the element's values are integers / 4


def _why_not(weight: Any) -> str | None:
    """Why this kernel cannot dequantize ``weight`` (``None`` when it can)."""
    spec = getattr(weight, "spec", None)
    if spec is None or spec.element != ELEMENT or spec.scale_dtype != "e8m0":
        return "needs int4_pow2 weights (E1M2 codes with E8M0 scales)"
    if len(weight.shape) != 2:
        return f"needs a 2-D weight, got shape {tuple(weight.shape)}"
    if spec.granularity.kind == "block":
        return "2-D block scales are not handled; use per-group or per-channel int4_pow2"
    return None


def dequantize_int4_pow2(weight: QTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense ``(N, K)`` tensor of an ``int4_pow2`` weight, computed with integer ops and ``ldexp``.

    Raises:
        KernelError: the weight is not an ``int4_pow2`` 2-D tensor.

    Example:
        >>> from polyquant_example.format import INT4_POW2
        >>> qt = INT4_POW2.quantize(torch.randn(4, 32))
        >>> torch.equal(dequantize_int4_pow2(qt), qt.dequantize())
        True
    """
    problem = _why_not(weight)
    if problem is not None:
        raise KernelError(f"{KERNEL_NAME}: {problem}")
    assert weight.scale is not None
    n, k = (int(s) for s in weight.shape)
    packed = weight.packed  # two codes per byte, the even element in the low nibble
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(n, -1)[:, :k]
    magnitude = (codes & 0x07).to(torch.int32)
    q = torch.where(codes >= 0x08, -magnitude, magnitude)
    exponent = weight.scale.to(torch.int32) - (_E8M0_BIAS + _STEP_SHIFT)
    if weight.spec.granularity.kind == "group":
        exponent = exponent.repeat_interleave(weight.spec.granularity.group_size, dim=-1)
    return torch.ldexp(q.to(dtype), exponent)


def linear_int4_pow2(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Any = None,
) -> torch.Tensor:
    """``F.linear`` with an ``int4_pow2`` weight; same signature and semantics as the reference.

    Math runs in float32 for float16/bfloat16 inputs, like the reference; ``act`` fake-quantizes the
    input first.
    """
    dtype = compute_dtype(x.dtype)
    w = dequantize_int4_pow2(weight, dtype)
    inp = x.to(dtype) if act is None else fake_quantize_activation(x, act, act_scale).to(dtype)
    return F.linear(inp, w, None if bias is None else bias.to(dtype)).to(x.dtype)


def supports_int4_pow2(ctx: KernelContext) -> str | None:
    """The kernel's call-level check: ``None`` when it can run ``ctx``, else why not."""
    if ctx.weight is None:
        return "needs the quantized weight"
    return _why_not(ctx.weight)


def int4_pow2_linear_kernel() -> KernelSpec:
    """The kernel record registered by the plugin (priority 10: above the reference's -100).

    Example:
        >>> int4_pow2_linear_kernel().key
        'linear/cpu_int4_pow2'
    """
    return KernelSpec(
        op="linear",
        name=KERNEL_NAME,
        formats=("int4_pow2",),
        device="cpu",
        backend="torch",
        fn=linear_int4_pow2,
        priority=10,
        supports=supports_int4_pow2,
        description="int4_pow2: unpack nibbles, ldexp by the group exponent, F.linear (example plugin)",
    )

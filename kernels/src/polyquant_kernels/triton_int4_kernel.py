"""The Triton program behind ``triton_int4``: fused 4-bit dequantization + matmul.

Importing this module imports Triton. On a CUDA device the program is compiled; on CPU tensors it runs
only in Triton's interpreter, which must be switched on *before* Triton is first imported
(``TRITON_INTERPRET=1``); the test suite does that (``kernels/tests/conftest.py``).

Weight layout (built by :func:`polyquant_kernels.triton_int4.prepare`): ``packed`` is uint8 ``(K / 2, N)``,
byte ``[i, n]`` holding ``q[n, 2i]`` in its low nibble and ``q[n, 2i + 1]`` in its high nibble (``q`` in
``0..15``); ``scale`` and ``offset`` are float32 ``(K / group_size, N)`` with ``w[n, k] = q[n, k] · scale + offset``.

Example (CPU, with ``TRITON_INTERPRET=1`` set before Python started)::

    y = int4_matmul(x, packed, scale, offset, group_size=32)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["block_sizes", "int4_matmul"]


@triton.jit
def _int4_matmul_kernel(
    x_ptr,
    packed_ptr,
    scale_ptr,
    offset_ptr,
    y_ptr,
    M,
    N,
    K,
    GROUP,
    stride_xm,
    stride_xk,
    stride_pk,
    stride_pn,
    stride_sg,
    stride_sn,
    stride_ym,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    FLOAT32_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        k_ok = k < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + k[None, :] * stride_xk, mask=row_ok[:, None] & k_ok[None, :], other=0.0
        )
        w_ok = k_ok[:, None] & col_ok[None, :]
        byte = tl.load(packed_ptr + (k // 2)[:, None] * stride_pk + cols[None, :] * stride_pn, mask=w_ok, other=0)
        q = (byte >> ((k % 2) * 4).to(tl.uint8)[:, None]) & 0xF
        group = k // GROUP
        at = group[:, None] * stride_sg + cols[None, :] * stride_sn
        scale = tl.load(scale_ptr + at, mask=w_ok, other=0.0)
        offset = tl.load(offset_ptr + at, mask=w_ok, other=0.0)
        w = q.to(tl.float32) * scale + offset
        if FLOAT32_DOT:
            acc += tl.dot(x.to(tl.float32), w, input_precision="ieee")
        else:
            acc += tl.dot(x, w.to(x.dtype))
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn, acc, mask=row_ok[:, None] & col_ok[None, :])


def block_sizes(m: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K)`` for ``m`` input rows (``tl.dot`` needs blocks of at least 16).

    Example:
        >>> block_sizes(1)
        (16, 64, 64)
    """
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    return block_m, 64, 64


def int4_matmul(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int
) -> torch.Tensor:
    """``x @ W`` for a packed 4-bit ``W`` of shape ``(K, N)``, accumulated in float32, returned in ``x.dtype``.

    On CUDA, float16/bfloat16 inputs meet the weight in their own dtype on the tensor cores and float32
    inputs use IEEE float32 dot products (no TF32). Off CUDA (Triton's interpreter) the dot product is
    always float32, because the interpreter mis-multiplies bfloat16 operands.

    Args:
        x: ``(M, K)`` float32/float16/bfloat16 input.
        packed: uint8 ``(K / 2, N)`` nibble-packed codes.
        scale: float32 ``(K / group_size, N)``.
        offset: float32 ``(K / group_size, N)``.
        group_size: input features per scale.

    Returns:
        ``(M, N)`` in ``x.dtype``.
    """
    m, k = x.shape
    n = packed.shape[1]
    if packed.shape[0] * 2 != k or scale.shape != offset.shape or scale.shape != (k // group_size, n):
        raise ValueError(
            f"int4_matmul: inconsistent shapes x {tuple(x.shape)}, packed {tuple(packed.shape)}, "
            f"scale {tuple(scale.shape)}, offset {tuple(offset.shape)} for group size {group_size}"
        )
    y = torch.empty((m, n), device=x.device, dtype=torch.float32)
    block_m, block_n, block_k = block_sizes(m)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _int4_matmul_kernel[grid](
        x,
        packed,
        scale,
        offset,
        y,
        m,
        n,
        k,
        group_size,
        x.stride(0),
        x.stride(1),
        packed.stride(0),
        packed.stride(1),
        scale.stride(0),
        scale.stride(1),
        y.stride(0),
        y.stride(1),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        FLOAT32_DOT=x.dtype == torch.float32 or x.device.type != "cuda",
    )
    return y.to(x.dtype)

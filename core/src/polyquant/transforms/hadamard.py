"""The fast Walsh–Hadamard transform for sizes ``n = K·2^m``, in ``O(n·(log n + K))``.

For a vector ``x`` of size ``n = K·2^m`` (``P = 2^m``), :func:`hadamard_transform` computes
``y = H_n x / √n`` with ``H_n = H_K ⊗ H_P`` (:func:`~polyquant.transforms.hadamard_matrix`), i.e.
``x @ (H_n / √n)ᵀ`` along ``dim``. The steps, as in QuaRot's online transform:

1. view ``x`` as ``(..., K, P)`` (index ``i = a·P + b``);
2. butterfly FWHT on the last axis (``log2 P`` stages of ``(u, v) → (u + v, u − v)``): ``X ↦ X H_P``;
3. left-multiply by ``H_K``: ``X ↦ H_K X``, which together gives ``(H_K ⊗ H_P) x``;
4. scale by ``1/√n``.

The work is done in float32 (float64 stays float64) and the result is returned in the input's dtype, so
bfloat16 and float16 activations are rotated with float32 accuracy. Pure PyTorch: it runs on any device,
supports autograd, and loops in Python over the ``log2 P`` stages only.

This module also re-exports the constructions of :mod:`polyquant.transforms.constructions`.

Example:
    >>> x = torch.randn(4, 768, dtype=torch.float64)
    >>> h = hadamard_matrix(768) / 768**0.5
    >>> bool(torch.allclose(hadamard_transform(x), x @ h.T))
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polyquant.errors import FormatError
from polyquant.transforms.constructions import (
    BASE_ORDERS,
    MAX_BASE_ORDER,
    _base_matrix_on,
    hadamard_construction,
    hadamard_factorization,
    hadamard_matrix,
    hadamard_size_supported,
)

__all__ = [
    "BASE_ORDERS",
    "MAX_BASE_ORDER",
    "compute_dtype",
    "hadamard_construction",
    "hadamard_factorization",
    "hadamard_matrix",
    "hadamard_size_supported",
    "hadamard_transform",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the transforms compute in for inputs of ``dtype``: float64 stays, others use float32.

    Example:
        >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _normalize_dim(x: Tensor, dim: int, what: str) -> int:
    """Check ``x`` (a floating tensor with at least one axis) and return ``dim`` as a non-negative axis."""
    if not isinstance(x, Tensor):
        raise FormatError(f"{what}: expected a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor")
    if not x.is_floating_point():
        raise FormatError(f"{what}: the input has dtype {x.dtype}; convert it to a floating dtype (x.float())")
    if x.ndim == 0:
        raise FormatError(f"{what}: the input is a scalar; pass a tensor with at least one axis")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise FormatError(
            f"{what}: dim={dim!r} is out of range for a tensor with {x.ndim} axes; use -{x.ndim} .. {x.ndim - 1}"
        )
    return dim % x.ndim


def _fwht_last(y: Tensor, *, transpose: bool, normalize: bool) -> Tensor:
    """``y ↦ (H_n y)`` (``transpose``: ``H_nᵀ y``) along the last axis, in ``y``'s dtype, optionally ÷ √n."""
    n = int(y.shape[-1])
    k, p = hadamard_factorization(n)
    batch = y.shape[:-1]
    z = y.reshape(*batch, k, p)
    h = 1
    while h < p:  # Sylvester butterflies: H_2h = H_2 ⊗ H_h acts on (pair, offset) = (axis -2, axis -1)
        z = z.reshape(*batch, k, p // (2 * h), 2, h)
        u, v = z.unbind(-2)
        z = torch.stack((u + v, u - v), dim=-2)
        h *= 2
    z = z.reshape(*batch, k, p)
    if k > 1:
        hk = _base_matrix_on(k, y.dtype, y.device)
        # (H_K Z) computed as (Zᵀ H_Kᵀ)ᵀ so that the batch folds into one matrix product.
        z = torch.matmul(z.transpose(-1, -2), hk if transpose else hk.T).transpose(-1, -2)
    z = z.reshape(*batch, n)
    if normalize:
        z = z * (1.0 / math.sqrt(n))
    return z


def hadamard_transform(x: Tensor, dim: int = -1, *, normalize: bool = True, transpose: bool = False) -> Tensor:
    """Fast Walsh–Hadamard transform of ``x`` along ``dim``: ``x @ (H_n / √n)ᵀ`` for ``n = x.shape[dim]``.

    Args:
        x: a floating tensor whose size along ``dim`` is ``K·2^m`` (see
            :func:`~polyquant.transforms.hadamard_size_supported`).
        dim: the axis to transform.
        normalize: divide by ``√n`` (an orthogonal transform); ``False`` applies the ±1 matrix ``H_n``.
        transpose: apply ``H_nᵀ`` instead of ``H_n`` (``x @ H_n / √n``); the two differ unless ``K = 1``.

    Returns:
        A tensor of ``x``'s shape and dtype, computed in float32 (float64 for float64 inputs).

    Raises:
        FormatError: ``x`` is not a floating tensor with at least one axis, ``dim`` is out of range, or the
            size along ``dim`` has no Hadamard matrix.

    Example:
        >>> x = torch.randn(3, 96, 5)  # 96 = 12·8, transformed along dim 1
        >>> y = hadamard_transform(x, dim=1)
        >>> y.shape, bool(torch.allclose(y.norm(dim=1), x.norm(dim=1), atol=1e-4))
        (torch.Size([3, 96, 5]), True)
    """
    axis = _normalize_dim(x, dim, "hadamard_transform")
    hadamard_factorization(int(x.shape[axis]))  # raises with the explanation for unsupported sizes
    y = x.movedim(axis, -1).to(compute_dtype(x.dtype))
    y = _fwht_last(y, transpose=transpose, normalize=normalize)
    return y.to(x.dtype).movedim(-1, axis)

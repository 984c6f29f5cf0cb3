"""Orthogonal transforms for rotation-based quantization (QuaRot, SpinQuant, QuEST): Hadamard and random rotations.

- :func:`hadamard_matrix`, :func:`hadamard_factorization`, :func:`hadamard_size_supported`,
  :func:`hadamard_construction`, :data:`BASE_ORDERS`: ±1 Hadamard matrices of order ``K·2^m``
  (Sylvester, Paley I/II, Williamson), see :mod:`polyquant.transforms.constructions`.
- :func:`hadamard_transform`: the fast Walsh–Hadamard transform ``x @ (H_n/√n)ᵀ`` along any axis, in
  ``O(n log n)``, see :mod:`polyquant.transforms.hadamard`.
- :func:`rotation`, :func:`random_hadamard`, :func:`random_orthogonal`, :class:`RandomHadamard`,
  :class:`RandomOrthogonal`, :class:`Rotation`: seeded random rotations, see
  :mod:`polyquant.transforms.rotations`.

Example:
    >>> import torch
    >>> from polyquant.transforms import rotation
    >>> q = rotation(4096, seed=0)
    >>> w, x = torch.randn(8, 4096), torch.randn(2, 4096)
    >>> bool(torch.allclose(q.apply(x) @ q.apply(w).T, x @ w.T, atol=1e-3))
    True
"""

from __future__ import annotations

from polyquant.transforms.constructions import (
    BASE_ORDERS,
    MAX_BASE_ORDER,
    hadamard_construction,
    hadamard_factorization,
    hadamard_matrix,
    hadamard_size_supported,
)
from polyquant.transforms.hadamard import compute_dtype, hadamard_transform
from polyquant.transforms.rotations import (
    RandomHadamard,
    RandomOrthogonal,
    Rotation,
    RotationKind,
    random_hadamard,
    random_orthogonal,
    rotation,
)

__all__ = [
    "BASE_ORDERS",
    "MAX_BASE_ORDER",
    "RandomHadamard",
    "RandomOrthogonal",
    "Rotation",
    "RotationKind",
    "compute_dtype",
    "hadamard_construction",
    "hadamard_factorization",
    "hadamard_matrix",
    "hadamard_size_supported",
    "hadamard_transform",
    "random_hadamard",
    "random_orthogonal",
    "rotation",
]

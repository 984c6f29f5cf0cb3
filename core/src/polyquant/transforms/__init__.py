"""Orthogonal transforms for rotation-based quantization (QuaRot, SpinQuant, QuEST): Hadamard and random rotations.

- :func:`hadamard_matrix`, :func:`hadamard_factorization`, :func:`hadamard_size_supported`,
  :func:`hadamard_construction`, :data:`BASE_ORDERS`: ±1 Hadamard matrices of order ``K·2^m``
  (Sylvester, Paley I/II, Williamson), see :mod:`polyquant.transforms.constructions`.
- :func:`hadamard_transform`: the fast Walsh–Hadamard transform ``x @ (H_n/√n)ᵀ`` along any axis, in
  ``O(n log n)``, see :mod:`polyquant.transforms.hadamard`.
- :func:`rotation`, :func:`random_hadamard`, :func:`random_orthogonal`, :class:`RandomHadamard`,
  :class:`RandomOrthogonal`, :class:`Rotation`: seeded random rotations, see
  :mod:`polyquant.transforms.rotations`.
- :func:`rotate_model`, :class:`RotationStructure`, :class:`BlockStructure`, :func:`llama_structure`,
  :class:`QuaRotTransform`, :class:`RotationReport`, :class:`OnlineHadamard` and the single steps
  (:func:`untie_embeddings`, :func:`fuse_norms`, :func:`rotate_residual`, :func:`rotate_vo`,
  :func:`insert_online_hadamard`): QuaRot's function-preserving rotation of transformers, see
  :mod:`polyquant.transforms.quarot`.

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
from polyquant.transforms.fusion import FusedNorm, fuse_norm, fuse_norms, untie_embeddings
from polyquant.transforms.hadamard import compute_dtype, hadamard_transform
from polyquant.transforms.online import OnlineHadamard, fold_online_hadamard, insert_online_hadamard
from polyquant.transforms.quarot import (
    OnlineSite,
    QuaRotTransform,
    RotationReport,
    rotate_model,
    rotate_residual,
    rotate_vo,
)
from polyquant.transforms.rotations import (
    RandomHadamard,
    RandomOrthogonal,
    Rotation,
    RotationKind,
    random_hadamard,
    random_orthogonal,
    rotation,
)
from polyquant.transforms.structure import BlockStructure, RotationStructure, llama_structure

__all__ = [
    "BASE_ORDERS",
    "MAX_BASE_ORDER",
    "BlockStructure",
    "FusedNorm",
    "OnlineHadamard",
    "OnlineSite",
    "QuaRotTransform",
    "RandomHadamard",
    "RandomOrthogonal",
    "Rotation",
    "RotationKind",
    "RotationReport",
    "RotationStructure",
    "compute_dtype",
    "fold_online_hadamard",
    "fuse_norm",
    "fuse_norms",
    "hadamard_construction",
    "hadamard_factorization",
    "hadamard_matrix",
    "hadamard_size_supported",
    "hadamard_transform",
    "insert_online_hadamard",
    "llama_structure",
    "random_hadamard",
    "random_orthogonal",
    "rotate_model",
    "rotate_residual",
    "rotate_vo",
    "rotation",
    "untie_embeddings",
]

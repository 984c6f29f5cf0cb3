"""Rotations for KV-cache quantization: the :class:`Rotation` protocol and a seeded Haar rotation.

TurboQuant rotates each key/value vector by an orthogonal matrix :math:`Π` before quantizing its
coordinates, so that every coordinate follows (nearly) the same known density whatever the input. Any
object with ``apply`` (:math:`x ↦ Πx` along the last axis) and ``apply_transpose``
(:math:`y ↦ Πᵀy`) can serve: the default is a Haar-random orthogonal matrix (:func:`random_orthogonal`,
QR of a seeded Gaussian matrix), and a fast randomized Hadamard transform or a calibrated basis (SVD of
post-RoPE keys) plugs in through :attr:`polyquant.kvcache.TurboQuantConfig.rotation`.

**Apply rotations after RoPE.** For rotary position embeddings :math:`R_m` and an orthogonal :math:`Π`,
:math:`(Π R_m q)ᵀ(Π R_n k) = qᵀ R_{n−m} k` exactly, so rotating post-RoPE queries and keys preserves every
attention score. Folding :math:`Π` into the projection weights (before RoPE) does not, unless :math:`Π`
commutes with every RoPE plane rotation (Hadamard and SVD bases do not).

Example:
    >>> import torch
    >>> rot = random_orthogonal(8, seed=0)
    >>> x = torch.randn(3, 8)
    >>> torch.allclose(rot.apply_transpose(rot.apply(x)), x, atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from polyquant.errors import FormatError

__all__ = [
    "HadamardRotation",
    "MatrixRotation",
    "Rotation",
    "RotationFactory",
    "hadamard_rotation",
    "random_orthogonal",
]


@runtime_checkable
class Rotation(Protocol):
    """An orthogonal transform of the last axis.

    ``apply(x)`` computes :math:`Πx` for every vector ``x`` along the last axis (``x @ Πᵀ`` for rows)
    and ``apply_transpose(y)`` the inverse :math:`Πᵀy`. Implementations must accept ``float32`` tensors
    on any device and return ``float32``.
    """

    @property
    def dim(self) -> int:
        """Length of the vectors it rotates."""
        ...

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`Πx` along the last axis."""
        ...

    def apply_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`Πᵀy` along the last axis."""
        ...


class RotationFactory(Protocol):
    """Builds the rotation of a ``dim``-dimensional (sub)space from a seed: ``factory(dim, seed)``."""

    def __call__(self, dim: int, seed: int) -> Rotation:
        """The rotation for vectors of length ``dim``, deterministic in ``seed``."""
        ...


class MatrixRotation:
    """A rotation given by an explicit orthogonal matrix :math:`Π` (``dim × dim``).

    The matrix is kept in ``float32`` on the CPU; a copy per device is made on first use there.

    Args:
        matrix: a square orthogonal matrix.
        check: verify :math:`ΠΠᵀ = I` (to 1e-4).

    Raises:
        FormatError: for a non-square or non-orthogonal matrix.

    Example:
        >>> import torch
        >>> MatrixRotation(torch.eye(4)).apply(torch.ones(4))
        tensor([1., 1., 1., 1.])
    """

    def __init__(self, matrix: torch.Tensor, *, check: bool = True) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise FormatError(f"a rotation matrix must be a square 2-D tensor, got {shape}")
        m = matrix.detach().to("cpu", torch.float64)
        if check:
            error = float((m @ m.T - torch.eye(m.shape[0], dtype=torch.float64)).abs().max())
            if error > 1e-4:
                raise FormatError(
                    f"the rotation matrix is not orthogonal (max |ΠΠᵀ − I| = {error:.2e}); orthogonalize it, "
                    f"e.g. with torch.linalg.qr"
                )
        self._matrix = m.to(torch.float32)
        self._on_device: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        """Length of the vectors it rotates."""
        return int(self._matrix.shape[0])

    @property
    def matrix(self) -> torch.Tensor:
        """:math:`Π` (``float32``, CPU)."""
        return self._matrix

    def _matrix_on(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self._matrix.to(device)
        return self._on_device[key]

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise FormatError(f"the rotation is {self.dim}-dimensional but the input's last axis has {x.shape[-1]}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`Πx` along the last axis (``float32``)."""
        self._check(x)
        return x.float() @ self._matrix_on(x.device).T

    def apply_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`Πᵀy` along the last axis (``float32``)."""
        self._check(y)
        return y.float() @ self._matrix_on(y.device)

    def __repr__(self) -> str:
        return f"MatrixRotation(dim={self.dim})"


def random_orthogonal(dim: int, seed: int = 0) -> MatrixRotation:
    """A Haar-random orthogonal rotation, deterministic in ``seed`` (on every device).

    Computed as the Q factor of the QR decomposition of a ``dim × dim`` standard Gaussian matrix drawn
    on the CPU in ``float64``, with the signs of Q's columns fixed by ``sign(diag R)`` (which makes the
    distribution exactly Haar).

    Args:
        dim: vector length (>= 1).
        seed: the random seed.

    Raises:
        FormatError: for a non-positive ``dim``.

    Example:
        >>> import torch
        >>> p = random_orthogonal(16, seed=3).matrix
        >>> torch.allclose(p @ p.T, torch.eye(16), atol=1e-5)
        True
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise FormatError(f"rotation dim must be a positive integer, got {dim!r}")
    from polyquant.transforms import random_orthogonal as haar

    return MatrixRotation(haar(dim, int(seed), dtype=torch.float64), check=False)


class HadamardRotation:
    """The fast randomized Hadamard :math:`Π = (H·diag(s)/√d)ᵀ` of :mod:`polyquant.transforms`, as a :class:`Rotation`.

    ``O(d log d)`` per vector instead of a ``d × d`` matrix product, for ``d = K·2^m`` with a known Hadamard
    order ``K`` (every power of two, and 12, 20, 28, ... up to 252).

    Example:
        >>> import torch
        >>> rot = hadamard_rotation(128, seed=0)
        >>> x = torch.randn(3, 128)
        >>> torch.allclose(rot.apply_transpose(rot.apply(x)), x, atol=1e-5)
        True
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        from polyquant.transforms import hadamard_size_supported, random_hadamard

        if not hadamard_size_supported(dim):
            raise FormatError(
                f"no Hadamard matrix of order {dim} is known here; use the default Haar rotation "
                "(polyquant.kvcache.random_orthogonal) for this head size"
            )
        self._q = random_hadamard(dim, seed)
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of the vectors it rotates."""
        return self._dim

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`Πx` along the last axis (``float32``)."""
        return self._q.apply(x.float())

    def apply_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`Πᵀy` along the last axis (``float32``)."""
        return self._q.apply_transpose(y.float())

    def __repr__(self) -> str:
        return f"HadamardRotation(dim={self.dim})"


def hadamard_rotation(dim: int, seed: int = 0) -> HadamardRotation:
    """A :class:`RotationFactory` for TurboQuant: ``TurboQuantConfig(bits=3, rotation=hadamard_rotation)``."""
    return HadamardRotation(dim, seed)

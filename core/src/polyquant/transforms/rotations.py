"""Random rotations for QuaRot-style rotation: random Hadamard ``H·diag(s)/√n`` or Haar-random orthogonal.

Rotating the residual stream with an orthogonal ``Q`` (``x ← xQ``, ``W ← WQ``) leaves every product
``(xQ)(WQ)ᵀ = xWᵀ`` unchanged while spreading outlier channels over all channels, which makes activations
and weights far easier to quantize. Two kinds:

- :class:`RandomHadamard` (``Q = H_n·diag(s)/√n``, ``s`` random signs): applied in ``O(n log n)`` by the fast
  transform; needs a size ``n`` with a Hadamard matrix (:func:`~polyquant.transforms.hadamard_size_supported`).
- :class:`RandomOrthogonal`: a Haar-random orthogonal matrix (QR of a Gaussian matrix with the signs of
  ``diag R`` folded in), for any ``n``; applied as a dense product.

:func:`rotation` picks a random Hadamard when it can and falls back to orthogonal otherwise. Both are frozen
and deterministic: the same ``(n, seed)`` gives the same rotation on every machine (CPU ``torch.Generator``).

Example:
    >>> q = rotation(768, seed=0)
    >>> q.kind, hadamard_factorization(768)
    ('hadamard', (12, 64))
    >>> x = torch.randn(2, 768)
    >>> bool(torch.allclose(q.apply_transpose(q.apply(x)), x, atol=1e-5))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from polyquant.errors import FormatError, RecipeError
from polyquant.transforms.constructions import (
    _check_order,
    _unsupported_reason,
    hadamard_factorization,
    hadamard_matrix,
    hadamard_size_supported,
)
from polyquant.transforms.hadamard import _fwht_last, _normalize_dim, compute_dtype

__all__ = [
    "RandomHadamard",
    "RandomOrthogonal",
    "Rotation",
    "RotationKind",
    "random_hadamard",
    "random_orthogonal",
    "rotation",
]

RotationKind = Literal["auto", "hadamard", "orthogonal"]
_KINDS = ("auto", "hadamard", "orthogonal")


@runtime_checkable
class Rotation(Protocol):
    """An orthogonal ``n × n`` matrix ``Q`` that can be applied along one axis of a tensor.

    Example:
        >>> isinstance(rotation(64, seed=1), Rotation)
        True
    """

    @property
    def n(self) -> int:
        """The size ``n``."""
        ...

    @property
    def kind(self) -> str:
        """``"hadamard"`` or ``"orthogonal"``."""
        ...

    def matrix(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """``Q`` as a dense ``n × n`` tensor."""
        ...

    def apply(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Q`` along ``dim``."""
        ...

    def apply_transpose(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Qᵀ`` along ``dim``."""
        ...


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise RecipeError(f"seed: {seed!r} is invalid; use an int in [0, 2**64) such as 0")
    return seed


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _along_last(x: Tensor, dim: int, n: int, what: str) -> tuple[Tensor, int]:
    """``x`` with axis ``dim`` moved last, in the compute dtype, after checking its size is ``n``."""
    axis = _normalize_dim(x, dim, what)
    if int(x.shape[axis]) != n:
        raise FormatError(
            f"{what}: the rotation has size {n} but the input has {int(x.shape[axis])} along dim {dim}; "
            f"rotate the axis of size {n} (pass dim=...) or build a rotation of the input's size"
        )
    return x.movedim(axis, -1).to(compute_dtype(x.dtype)), axis


@dataclass(frozen=True)
class RandomHadamard:
    """The random Hadamard rotation ``Q = H_n·diag(s)/√n`` with signs ``s`` drawn from ``seed``.

    ``Q`` is orthogonal (``Q Qᵀ = I``). :meth:`apply` and :meth:`apply_transpose` use the fast transform and
    compute in float32 (float64 for float64 inputs). Equality and hashing use ``(n, seed)``.

    Args:
        n: the size, with a Hadamard matrix (:func:`~polyquant.transforms.hadamard_size_supported`).
        seed: seeds the CPU ``torch.Generator`` that draws the signs.

    Raises:
        FormatError: ``n`` is invalid or has no Hadamard matrix.
        RecipeError: ``seed`` is not an int in ``[0, 2**64)``.

    Example:
        >>> q = RandomHadamard(96, seed=3)
        >>> m = q.matrix()
        >>> bool(torch.allclose(m @ m.T, torch.eye(96, dtype=torch.float64)))
        True
    """

    n: int
    seed: int
    _signs: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = _check_order(self.n)
        hadamard_factorization(n)
        seed = _check_seed(self.seed)
        bits = torch.randint(0, 2, (n,), generator=_generator(seed), dtype=torch.int64)
        object.__setattr__(self, "_signs", (1 - 2 * bits).to(torch.float64))

    @property
    def kind(self) -> str:
        """Always ``"hadamard"``."""
        return "hadamard"

    @property
    def signs(self) -> Tensor:
        """The random signs ``s`` (float64, a copy)."""
        return self._signs.clone()

    def _signs_for(self, y: Tensor) -> Tensor:
        return self._signs.to(dtype=y.dtype, device=y.device)

    def matrix(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """``Q = H_n·diag(s)/√n`` as a dense tensor.

        Example:
            >>> RandomHadamard(4, seed=0).matrix().abs().unique().tolist()
            [0.5]
        """
        q = hadamard_matrix(self.n) * self._signs[None, :] / math.sqrt(self.n)
        return q.to(dtype=dtype, device=device)

    def apply(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Q`` along ``dim`` in ``O(n log n)``: ``H_nᵀ`` by the fast transform, then the signs.

        Raises:
            FormatError: ``x`` is not floating, ``dim`` is out of range, or ``x.shape[dim] != n``.

        Example:
            >>> q = RandomHadamard(12, seed=0)
            >>> x = torch.randn(5, 12, dtype=torch.float64)
            >>> bool(torch.allclose(q.apply(x), x @ q.matrix()))
            True
        """
        y, axis = _along_last(x, dim, self.n, "RandomHadamard.apply")
        y = _fwht_last(y, transpose=True, normalize=True) * self._signs_for(y)
        return y.to(x.dtype).movedim(-1, axis)

    def apply_transpose(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Qᵀ`` along ``dim`` (the inverse of :meth:`apply`): the signs, then ``H_n`` by the fast transform.

        Raises:
            FormatError: as :meth:`apply`.

        Example:
            >>> q = RandomHadamard(12, seed=0)
            >>> x = torch.randn(5, 12, dtype=torch.float64)
            >>> bool(torch.allclose(q.apply_transpose(x), x @ q.matrix().T))
            True
        """
        y, axis = _along_last(x, dim, self.n, "RandomHadamard.apply_transpose")
        y = _fwht_last(y * self._signs_for(y), transpose=False, normalize=True)
        return y.to(x.dtype).movedim(-1, axis)

    def __call__(self, x: Tensor, dim: int = -1) -> Tensor:
        """Same as :meth:`apply`."""
        return self.apply(x, dim)


def random_orthogonal(
    n: int, seed: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """A Haar-random ``n × n`` orthogonal matrix: QR of a Gaussian matrix, with ``sign(diag R)`` folded into Q.

    Drawn in float64 from a CPU ``torch.Generator`` seeded with ``seed`` (deterministic), then converted.

    Raises:
        FormatError: ``n`` is not a positive int, or ``dtype`` is not floating.
        RecipeError: ``seed`` is not an int in ``[0, 2**64)``.

    Example:
        >>> q = random_orthogonal(100, seed=0)
        >>> bool(torch.allclose(q.T @ q, torch.eye(100, dtype=torch.float64)))
        True
    """
    n = _check_order(n)
    seed = _check_seed(seed)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise FormatError(f"dtype {dtype!r} is not floating; use float64, float32 or bfloat16")
    gaussian = torch.randn(n, n, generator=_generator(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    haar: Tensor = q * signs[None, :]
    return haar.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class RandomOrthogonal:
    """A Haar-random orthogonal rotation ``Q`` = :func:`random_orthogonal` ``(n, seed)``, for any size.

    The float64 matrix is drawn once; :meth:`apply` multiplies densely (``O(n²)`` per vector) in float32
    (float64 for float64 inputs), caching the converted matrix per dtype and device. Equality and hashing use
    ``(n, seed)``.

    Args:
        n: the size (any positive int).
        seed: seeds the CPU ``torch.Generator`` that draws the Gaussian matrix.

    Raises:
        FormatError: ``n`` is not a positive int.
        RecipeError: ``seed`` is not an int in ``[0, 2**64)``.

    Example:
        >>> q = RandomOrthogonal(10, seed=0)
        >>> x = torch.randn(3, 10, dtype=torch.float64)
        >>> bool(torch.allclose(q.apply(x), x @ q.matrix()))
        True
    """

    n: int
    seed: int
    _q: Tensor = field(init=False, repr=False, compare=False)
    _converted: dict[tuple[torch.dtype, torch.device], Tensor] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_q", random_orthogonal(self.n, self.seed))

    @property
    def kind(self) -> str:
        """Always ``"orthogonal"``."""
        return "orthogonal"

    def matrix(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """``Q`` as a dense tensor (a copy)."""
        return self._q.to(dtype=dtype, device=device, copy=True)

    def _q_for(self, y: Tensor) -> Tensor:
        key = (y.dtype, y.device)
        q = self._converted.get(key)
        if q is None:
            q = self._converted[key] = self._q.to(dtype=y.dtype, device=y.device)
        return q

    def apply(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Q`` along ``dim``.

        Raises:
            FormatError: ``x`` is not floating, ``dim`` is out of range, or ``x.shape[dim] != n``.
        """
        y, axis = _along_last(x, dim, self.n, "RandomOrthogonal.apply")
        return (y @ self._q_for(y)).to(x.dtype).movedim(-1, axis)

    def apply_transpose(self, x: Tensor, dim: int = -1) -> Tensor:
        """``x @ Qᵀ`` along ``dim`` (the inverse of :meth:`apply`).

        Raises:
            FormatError: as :meth:`apply`.
        """
        y, axis = _along_last(x, dim, self.n, "RandomOrthogonal.apply_transpose")
        return (y @ self._q_for(y).T).to(x.dtype).movedim(-1, axis)

    def __call__(self, x: Tensor, dim: int = -1) -> Tensor:
        """Same as :meth:`apply`."""
        return self.apply(x, dim)


def random_hadamard(n: int, seed: int) -> RandomHadamard:
    """The random Hadamard rotation ``Q = H_n·diag(s)/√n`` (see :class:`RandomHadamard`).

    Raises:
        FormatError: ``n`` is invalid or has no Hadamard matrix.
        RecipeError: ``seed`` is invalid.

    Example:
        >>> random_hadamard(11008, seed=0).signs.shape
        torch.Size([11008])
    """
    return RandomHadamard(n, seed)


def rotation(n: int, seed: int, kind: RotationKind = "auto") -> RandomHadamard | RandomOrthogonal:
    """A random rotation of size ``n``.

    Args:
        n: the size.
        seed: the seed of the random signs (Hadamard) or Gaussian matrix (orthogonal).
        kind: ``"auto"``: a random Hadamard when ``n`` has a Hadamard matrix, else a random orthogonal matrix;
            ``"hadamard"``: a random Hadamard or an error; ``"orthogonal"``: always random orthogonal.

    Raises:
        FormatError: ``n`` is not a positive int, or ``kind="hadamard"`` and ``n`` has no Hadamard matrix (the
            message lists the supported base orders).
        RecipeError: ``kind`` or ``seed`` is invalid.

    Example:
        >>> rotation(11008, seed=0).kind, rotation(90, seed=0).kind, rotation(64, 0, kind="orthogonal").kind
        ('hadamard', 'orthogonal', 'orthogonal')
    """
    if kind not in _KINDS:
        raise RecipeError(f"kind: {kind!r} is invalid; use one of {', '.join(repr(k) for k in _KINDS)}")
    n = _check_order(n)
    _check_seed(seed)
    if kind == "orthogonal" or (kind == "auto" and not hadamard_size_supported(n)):
        return RandomOrthogonal(n, seed)
    if not hadamard_size_supported(n):
        raise FormatError(
            f"kind='hadamard': {_unsupported_reason(n)}. Use kind='auto' (falls back to a random orthogonal "
            "matrix) or kind='orthogonal' for this size"
        )
    return RandomHadamard(n, seed)

"""Hadamard matrices of order K·2^m: Sylvester, Paley I and II, Williamson, and which orders can be built.

A Hadamard matrix ``H`` of order ``n`` has entries ±1 and ``H Hᵀ = n·I``. polyquant builds one for every
``n = K·2^m`` where ``K`` is 1 or a *base order* from :data:`BASE_ORDERS`, as ``H_n = H_K ⊗ H_{2^m}``
(the Kronecker order that :func:`polyquant.transforms.hadamard_transform` uses). Base orders come from
three classical constructions, all computed here:

- **Sylvester**: ``H_1 = [1]``, ``H_{2k} = [[H_k, H_k], [H_k, −H_k]]`` (natural ordering, symmetric).
- **Paley I** (``q`` a prime power, ``q ≡ 3 mod 4``): order ``q + 1``, e.g. 12, 20, 28 (q = 27, over
  GF(3³)), 60, 108, 140, 244 (q = 243, over GF(3⁵)). With the Jacobsthal matrix ``Q_ij = χ(e_j − e_i)``
  (``χ`` the quadratic character of GF(q); ``Q`` is skew), ``H = I + [[0, 1ᵀ], [−1, Q]]``.
- **Paley II** (``q`` a prime power, ``q ≡ 1 mod 4``), used where Paley I does not apply: order ``2(q + 1)``,
  e.g. 36 (q = 17), 52 (q = 25, over GF(5²)), 76 (q = 37), 100 (q = 49, over GF(7²)). With the symmetric
  conference matrix ``C = [[0, 1ᵀ], [1, Q]]``, ``H = C ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]]``.
- **Williamson**: four symmetric circulant ±1 matrices ``A, B, C, D`` of odd order ``w`` with
  ``A² + B² + C² + D² = 4w·I`` give ``[[A, B, C, D], [−B, A, −D, C], [−C, D, A, −B], [−D, −C, B, A]]`` of
  order ``4w``. polyquant carries published sequences (Baumert–Hall, in Hall's *Combinatorial Theory*, and
  Long 2013) for ``w`` = 23, 29, 39 and 43, the odd parts no Paley construction reaches: orders 92, 116, 156
  and 172. The tests check ``H Hᵀ = n·I`` for every one of them.

Finite fields GF(p^k) (for the prime powers 25, 49, 243, ...) are built from a monic irreducible polynomial
found by trial division.

**Base orders.** For every odd ``o ≥ 3`` the base order is the smallest ``o·2^j ≤`` :data:`MAX_BASE_ORDER`
that one of the constructions reaches (``4o`` except for 47 and 59, which have none up to 256: sizes with
those odd parts are not supported). So ``40 = 20·2`` is built as ``H_20 ⊗ H_2`` and ``24`` as ``H_12 ⊗ H_2``.
The QuaRot orders 172, 156, 140, 108, 60, 52, 36, 28, 20, 12 are base orders; its 40 is ``20·2``. The matrices
differ from QuaRot's hard-coded ones (any Hadamard matrix serves as a rotation), so rotations are
reproducible within polyquant, not bit-identical to QuaRot checkpoints.

Example:
    >>> hadamard_factorization(11008)
    (172, 64)
    >>> h = hadamard_matrix(12)
    >>> bool((h @ h.T == 12 * torch.eye(12, dtype=torch.float64)).all())
    True
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from polyquant.errors import FormatError

__all__ = [
    "BASE_ORDERS",
    "MAX_BASE_ORDER",
    "hadamard_construction",
    "hadamard_factorization",
    "hadamard_matrix",
    "hadamard_size_supported",
]

MAX_BASE_ORDER = 256
"""Largest base order ``K``: the transform spends ``K`` multiply-adds per element on ``H_K``."""

# Williamson sequences: for each odd order w, the first (w + 1) // 2 entries a_0 .. a_{(w-1)/2} of the first rows
# of the symmetric circulant matrices A, B, C, D ('+' = 1, '-' = -1); the rest follows from a_{w-i} = a_i.
_WILLIAMSON_HALVES: dict[int, tuple[str, str, str, str]] = {
    23: ("++---+---+-+", "+-++-++--+++", "+++---++-+-+", "+++-+++-+---"),
    29: ("+++---++--+-+--", "+-+---++--+-+++", "++++-++-+---+++", "++--+--+-+++-++"),
    39: ("+++--+-+-----+--++--", "+++--++-+---+-+--+--", "++++---+--++----+-+-", "+---++-+-+-----+++-+"),
    43: ("++---++++-+--+--++----", "+++-+-++--+-+-++++-+--", "++-++++++----+-+--++-+", "+---++--++++-+-+++-++-"),
}


# ------------------------------------------------------------------------------------------- number theory


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _split_power_of_two(n: int) -> tuple[int, int]:
    """``n = odd · 2^t`` → ``(odd, 2^t)``."""
    power = n & -n
    return n // power, power


def _prime_power(q: int) -> tuple[int, int] | None:
    """``(p, k)`` with ``q = p^k`` for a prime ``p``, or None."""
    if q < 2:
        return None
    p = next((d for d in range(2, math.isqrt(q) + 1) if q % d == 0), q)
    k, rest = 0, q
    while rest % p == 0:
        rest //= p
        k += 1
    return (p, k) if rest == 1 else None


def _construction(k: int) -> tuple[str, int] | None:
    """How an order ``k`` is built directly: ``(name, parameter)`` or None."""
    if _is_power_of_two(k):
        return "sylvester", k
    q = k - 1
    pk = _prime_power(q)
    if pk is not None and q % 4 == 3:
        return "paley1", q
    if k % 2 == 0:
        q = k // 2 - 1
        pk = _prime_power(q)
        if pk is not None and q % 4 == 1:
            return "paley2", q
    if k % 4 == 0 and k // 4 in _WILLIAMSON_HALVES:
        return "williamson", k // 4
    return None


def _base_orders() -> dict[int, int]:
    """Odd part ``o`` → the smallest directly constructible order ``o·2^j ≤ MAX_BASE_ORDER``."""
    table: dict[int, int] = {}
    for odd in range(3, MAX_BASE_ORDER // 4 + 1, 2):
        k = 4 * odd
        while k <= MAX_BASE_ORDER:
            if _construction(k) is not None:
                table[odd] = k
                break
            k *= 2
    return table


_BASE_BY_ODD_PART = _base_orders()

BASE_ORDERS: tuple[int, ...] = tuple(sorted(_BASE_BY_ODD_PART.values()))
"""The base orders ``K`` other than 1: every supported size is ``K·2^m`` with ``K`` here or ``K = 1``."""


# ------------------------------------------------------------------------------------------- finite fields


def _poly_rem(a: list[int], g: list[int], p: int) -> list[int]:
    """Remainder of ``a`` by the monic ``g`` over GF(p); coefficients low → high, result of length deg g."""
    r = [c % p for c in a]
    d = len(g) - 1
    for top in range(len(r) - 1, d - 1, -1):
        c = r[top]
        if c:
            for j in range(d + 1):
                r[top - d + j] = (r[top - d + j] - c * g[j]) % p
    r = r[:d]
    return r + [0] * (d - len(r))


def _digits(index: int, p: int, k: int) -> list[int]:
    return [(index // p**j) % p for j in range(k)]


def _irreducible(p: int, k: int) -> list[int]:
    """The first monic irreducible polynomial of degree ``k`` over GF(p) (trial division by lower degrees)."""
    for index in range(p**k):
        f = [*_digits(index, p, k), 1]
        if k > 1 and f[0] == 0:
            continue
        divisible = any(
            not any(_poly_rem(f, [*_digits(gi, p, d), 1], p)) for d in range(1, k // 2 + 1) for gi in range(p**d)
        )
        if not divisible:
            return f
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # pragma: no cover


def _quadratic_character(q: int) -> tuple[Tensor, int, int]:
    """``χ`` of GF(q) as an int64 table over element indices (base-p digits), with ``p`` and ``k``."""
    pk = _prime_power(q)
    if pk is None:
        raise AssertionError(f"{q} is not a prime power")  # pragma: no cover
    p, k = pk
    f = _irreducible(p, k)
    chi = [-1] * q
    chi[0] = 0
    for e in range(1, q):
        a = _digits(e, p, k)
        square = [0] * (2 * k - 1)
        for i, ai in enumerate(a):
            for j, aj in enumerate(a):
                square[i + j] += ai * aj
        chi[sum(c * p**j for j, c in enumerate(_poly_rem(square, f, p)))] = 1
    return torch.tensor(chi, dtype=torch.int64), p, k


def _jacobsthal(q: int) -> Tensor:
    """``Q_ij = χ(e_j − e_i)`` over GF(q), float64 (q × q); skew for q ≡ 3 mod 4, symmetric for q ≡ 1."""
    chi, p, k = _quadratic_character(q)
    powers = p ** torch.arange(k, dtype=torch.int64)
    digits = (torch.arange(q, dtype=torch.int64)[:, None] // powers) % p  # (q, k)
    diff = (digits[None, :, :] - digits[:, None, :]) % p  # [i, j] = e_j − e_i, digit-wise
    return chi[(diff * powers).sum(-1)].to(torch.float64)


# ------------------------------------------------------------------------------------------- constructions


def _sylvester(n: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


def _paley1(q: int) -> Tensor:
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return torch.eye(q + 1, dtype=torch.float64) + s


def _paley2(q: int) -> Tensor:
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    off = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, h2) + torch.kron(torch.eye(q + 1, dtype=torch.float64), off)


def _symmetric_circulant(half: str) -> Tensor:
    w = 2 * len(half) - 1
    first = [1.0 if c == "+" else -1.0 for c in half]
    row = torch.tensor(first + first[1:][::-1], dtype=torch.float64)
    idx = torch.arange(w)
    return row[(idx[None, :] - idx[:, None]) % w]


def _williamson(w: int) -> Tensor:
    a, b, c, d = (_symmetric_circulant(s) for s in _WILLIAMSON_HALVES[w])
    rows = ((a, b, c, d), (-b, a, -d, c), (-c, d, a, -b), (-d, -c, b, a))
    return torch.cat([torch.cat(row, 1) for row in rows], 0)


@functools.cache
def _base_matrix(k: int) -> Tensor:
    """H_K (float64, CPU) for a base order; cached, so callers must not modify it."""
    how = _construction(k)
    if how is None:
        raise AssertionError(f"{k} is not a constructible order")  # pragma: no cover
    name, param = how
    if name == "sylvester":
        return _sylvester(param)
    if name == "paley1":
        return _paley1(param)
    if name == "paley2":
        return _paley2(param)
    return _williamson(param)


@functools.lru_cache(maxsize=64)
def _base_matrix_on(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """H_K converted for the fast transform (cached per dtype and device; read-only)."""
    return _base_matrix(k).to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------- public API


def _check_order(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise FormatError(f"Hadamard order {n!r} is invalid; pass a positive int such as 768")
    if n <= 0:
        raise FormatError(f"Hadamard order {n} is invalid; pass a positive int such as 768")
    return n


def _unsupported_reason(n: int) -> str:
    odd, power = _split_power_of_two(n)
    base = _BASE_BY_ODD_PART.get(odd)
    if base is None:
        why = f"no base order ≤ {MAX_BASE_ORDER} has the odd part {odd}"
    else:
        why = f"the odd part {odd} needs H_{base}, so the size must be a multiple of {base}"
    return (
        f"no Hadamard matrix of order {n} = {odd}·{power} can be built: {why}. Supported sizes are K·2^m with "
        f"K = 1 or K in {list(BASE_ORDERS)}"
    )


def hadamard_size_supported(n: int) -> bool:
    """Whether :func:`hadamard_matrix` (and the fast transform) can handle order ``n``.

    True for ``n = K·2^m`` with ``K = 1`` or ``K`` in :data:`BASE_ORDERS`; False otherwise, including for
    non-positive or non-integer ``n``.

    Example:
        >>> [hadamard_size_supported(n) for n in (768, 11008, 14336, 90, 0)]
        [True, True, True, False, False]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return False
    odd, power = _split_power_of_two(n)
    if odd == 1:
        return True
    base = _BASE_BY_ODD_PART.get(odd)
    return base is not None and power % (base // odd) == 0


def hadamard_factorization(n: int) -> tuple[int, int]:
    """Split a supported order into ``(K, 2^m)`` with ``n = K·2^m`` and ``H_n = H_K ⊗ H_{2^m}``.

    ``K`` is 1 for powers of two, else the base order with the same odd part as ``n``.

    Raises:
        FormatError: ``n`` is not a positive int, or no Hadamard matrix of order ``n`` can be built (the
            message lists the base orders).

    Example:
        >>> hadamard_factorization(11008), hadamard_factorization(14336), hadamard_factorization(4096)
        ((172, 64), (28, 512), (1, 4096))
    """
    n = _check_order(n)
    if not hadamard_size_supported(n):
        raise FormatError(
            f"{_unsupported_reason(n)}; use a random orthogonal rotation for this size "
            "(polyquant.transforms.rotation(n, seed) falls back to one)"
        )
    odd, _ = _split_power_of_two(n)
    k = 1 if odd == 1 else _BASE_BY_ODD_PART[odd]
    return k, n // k


def hadamard_construction(n: int) -> str:
    """Explain how the Hadamard matrix of order ``n`` is built.

    Raises:
        FormatError: as :func:`hadamard_factorization`.

    Example:
        >>> hadamard_construction(11008)
        'H_11008 = H_172 ⊗ H_64; H_172: Williamson (w = 43); H_64: Sylvester'
        >>> hadamard_construction(12)
        'H_12: Paley I (q = 11)'
    """
    k, power = hadamard_factorization(n)
    names = {"paley1": "Paley I (q = {})", "paley2": "Paley II (q = {})", "williamson": "Williamson (w = {})"}
    parts = []
    how = _construction(k)
    if k > 1 and how is not None:
        parts.append(f"H_{k}: {names[how[0]].format(how[1])}")
    if power > 1 or k == 1:
        parts.append(f"H_{power}: Sylvester")
    head = f"H_{n} = H_{k} ⊗ H_{power}; " if k > 1 and power > 1 else ""
    return head + "; ".join(parts)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The unnormalized ±1 Hadamard matrix ``H_n = H_K ⊗ H_{2^m}`` (``H Hᵀ = n·I``).

    Base matrices are built once and cached; every call returns a new tensor. ``H_n / √n`` is orthogonal.
    It is symmetric when ``K`` is 1 (Sylvester) and in general not otherwise.

    Args:
        n: the order, ``K·2^m`` with ``K = 1`` or ``K`` in :data:`BASE_ORDERS`.
        dtype: any floating or signed integer dtype (``torch.int8`` stores it compactly).
        device: where to put the result (CPU by default).

    Raises:
        FormatError: ``n`` is invalid or unsupported, or ``dtype`` cannot hold −1.

    Example:
        >>> h = hadamard_matrix(20, dtype=torch.int8)
        >>> h.shape, bool((h.abs() == 1).all())
        (torch.Size([20, 20]), True)
    """
    k, power = hadamard_factorization(n)
    if not isinstance(dtype, torch.dtype) or not (dtype.is_signed or dtype.is_complex):
        raise FormatError(f"dtype {dtype!r} cannot hold −1; use a floating or signed integer dtype such as float32")
    if k == 1:
        h = _sylvester(power)
    elif power == 1:
        h = _base_matrix(k).clone()
    else:
        h = torch.kron(_base_matrix(k), _sylvester(power))
    return h.to(dtype=dtype, device=device)

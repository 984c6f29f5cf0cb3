"""Lloyd–Max scalar codebooks: the MSE-optimal 1–4 bit quantizers of a known density.

A Lloyd–Max quantizer with ``2**b`` levels alternates two conditions until neither moves: every decision
threshold is the midpoint of its two neighbouring levels, and every level is the centroid (conditional
mean) of the density between its two thresholds. At the fixed point the expected squared error is
``E[X²] − Σ_i c_i² P_i`` (``P_i`` the probability of cell ``i``).

Two densities are supported, both solved numerically by the Lloyd iteration on the density itself (no
sampling, converged to 1e-12 in units of the standard deviation, far below the 1e-4 the levels are quoted to):

* the standard Gaussian :math:`N(0, 1)` (:func:`gaussian_codebook`), with the classic levels
  ``b=1: ±0.7979``, ``b=2: ±0.4528 ±1.5104``, ``b=3: ±0.2451 ±0.7560 ±1.3439 ±2.1519`` and MSE
  0.3634 / 0.1175 / 0.0345 / 0.0095 for ``b = 1..4``;
* the exact density of one coordinate of a uniformly random unit vector in dimension ``d``
  (:func:`sphere_codebook`): :math:`f_d(x) = Γ(d/2) / (√π Γ((d−1)/2)) · (1 − x²)^{(d−3)/2}` on
  :math:`[−1, 1]`, a Beta-shaped density close to :math:`N(0, 1/d)` (at ``d = 128`` its levels differ
  from the Gaussian ones divided by √d by less than 2%).

:func:`coordinate_codebook` picks one of the two for the coordinates of a randomly rotated unit vector,
which is what TurboQuant quantizes (:mod:`polyquant.kvcache.turboquant`). Codebooks are cached.

Example:
    >>> cb = gaussian_codebook(2)
    >>> [round(v, 4) for v in cb.levels]
    [-1.5104, -0.4528, 0.4528, 1.5104]
    >>> round(cb.mse, 4)
    0.1175
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from polyquant.errors import FormatError

__all__ = [
    "MAX_CODEBOOK_BITS",
    "CodebookDistribution",
    "LloydMaxCodebook",
    "coordinate_codebook",
    "gaussian_codebook",
    "sphere_codebook",
]

#: Widest codebook offered (16 levels); wider ones are not needed by any KV format here.
MAX_CODEBOOK_BITS = 4

CodebookDistribution = Literal["gaussian", "beta"]

_TOLERANCE = 1e-12  # largest level change at convergence, in units of the density's standard deviation
_MAX_ITERATIONS = 100_000
_GRID_POINTS = (1 << 18) + 1  # for the sphere-coordinate density, which has no closed-form CDF in torch


@dataclass(frozen=True)
class LloydMaxCodebook:
    """A scalar codebook: ``2**bits`` ascending levels and the ``2**bits − 1`` thresholds between them.

    Attributes:
        bits: bits per index (1..4).
        levels: reconstruction levels, ascending, in the units of the density.
        thresholds: decision thresholds (midpoints of neighbouring levels), ascending.
        mse: expected squared error per value under the density (not normalized).
        distribution: ``"gaussian"`` or ``"beta"`` (the sphere-coordinate density).
        dim: the dimension for sphere-coordinate codebooks and for Gaussian ones scaled to
            :math:`N(0, 1/d)`; ``None`` for the standard Gaussian.
        iterations: Lloyd iterations until convergence.

    Example:
        >>> import torch
        >>> cb = gaussian_codebook(1)
        >>> cb.dequantize(cb.quantize(torch.tensor([-0.3, 2.0])))
        tensor([-0.7979,  0.7979])
    """

    bits: int
    levels: tuple[float, ...]
    thresholds: tuple[float, ...]
    mse: float
    distribution: CodebookDistribution = "gaussian"
    dim: int | None = None
    iterations: int = 0

    def __post_init__(self) -> None:
        if len(self.levels) != 1 << self.bits or len(self.thresholds) != len(self.levels) - 1:
            raise FormatError(
                f"a {self.bits}-bit codebook needs {1 << self.bits} levels and {(1 << self.bits) - 1} thresholds, "
                f"got {len(self.levels)} and {len(self.thresholds)}"
            )

    def scaled(self, factor: float) -> LloydMaxCodebook:
        """The same codebook for the density of ``factor · X`` (levels and thresholds times ``factor``)."""
        return LloydMaxCodebook(
            self.bits,
            tuple(v * factor for v in self.levels),
            tuple(t * factor for t in self.thresholds),
            self.mse * factor * factor,
            self.distribution,
            self.dim,
            self.iterations,
        )

    def level_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The levels as a ``float32`` tensor on ``device``."""
        return torch.tensor(self.levels, dtype=torch.float32, device=device)

    def threshold_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The thresholds as a ``float32`` tensor on ``device``."""
        return torch.tensor(self.thresholds, dtype=torch.float32, device=device)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Index (``uint8``, ``0..2**bits − 1``) of the nearest level of every element of ``x``."""
        return torch.bucketize(x.float(), self.threshold_tensor(x.device)).to(torch.uint8)

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """The levels (``float32``) of ``indices`` produced by :meth:`quantize`."""
        return self.level_tensor(indices.device)[indices.long()]


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_CODEBOOK_BITS:
        raise FormatError(f"Lloyd–Max codebook bits must be an integer in 1..{MAX_CODEBOOK_BITS}, got {bits!r}")


def _lloyd(
    bits: int,
    cdf: Callable[[torch.Tensor], torch.Tensor],
    partial_mean: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor,
    lo: float,
    hi: float,
    sigma: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd iteration on a density given by its CDF and ``t ↦ ∫_{-∞}^t x f(x) dx``.

    Returns the levels, the cell probabilities and the number of iterations.
    """
    levels = init.clone()
    lo_t = torch.tensor([lo], dtype=torch.float64)
    hi_t = torch.tensor([hi], dtype=torch.float64)
    for iteration in range(1, _MAX_ITERATIONS + 1):
        edges = torch.cat([lo_t, (levels[1:] + levels[:-1]) / 2, hi_t])
        prob = cdf(edges[1:]) - cdf(edges[:-1])
        mass = partial_mean(edges[1:]) - partial_mean(edges[:-1])
        updated = torch.where(prob > 0, mass / prob.clamp_min(1e-300), levels)
        change = float((updated - levels).abs().max())
        levels = updated
        if change < _TOLERANCE * sigma:
            edges = torch.cat([lo_t, (levels[1:] + levels[:-1]) / 2, hi_t])
            return levels, cdf(edges[1:]) - cdf(edges[:-1]), iteration
    raise FormatError(  # pragma: no cover - the iteration converges for every supported density
        f"the Lloyd iteration for a {bits}-bit codebook did not converge in {_MAX_ITERATIONS} steps"
    )


def _make(
    bits: int,
    levels: torch.Tensor,
    prob: torch.Tensor,
    second_moment: float,
    distribution: CodebookDistribution,
    dim: int | None,
    iterations: int,
) -> LloydMaxCodebook:
    mse = second_moment - float((levels * levels * prob).sum())
    thresholds = (levels[1:] + levels[:-1]) / 2
    return LloydMaxCodebook(
        bits, tuple(levels.tolist()), tuple(thresholds.tolist()), mse, distribution, dim, iterations
    )


@functools.cache
def gaussian_codebook(bits: int) -> LloydMaxCodebook:
    """The Lloyd–Max codebook of the standard Gaussian :math:`N(0, 1)` (cached).

    Args:
        bits: 1..4.

    Raises:
        FormatError: for ``bits`` outside 1..4.

    Example:
        >>> [round(v, 4) for v in gaussian_codebook(3).levels[4:]]
        [0.2451, 0.756, 1.3439, 2.1519]
    """
    _check_bits(bits)
    n = 1 << bits
    sqrt2 = math.sqrt(2.0)
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def cdf(t: torch.Tensor) -> torch.Tensor:
        erf: torch.Tensor = torch.special.erf(t / sqrt2)
        return 0.5 * (1.0 + erf)

    def partial_mean(t: torch.Tensor) -> torch.Tensor:  # ∫_{-∞}^t x φ(x) dx = −φ(t)
        return -torch.exp(-0.5 * t * t) * inv_sqrt_2pi

    init = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    levels, prob, iterations = _lloyd(bits, cdf, partial_mean, init, -math.inf, math.inf, 1.0)
    return _make(bits, levels, prob, 1.0, "gaussian", None, iterations)


@functools.cache
def sphere_codebook(bits: int, dim: int) -> LloydMaxCodebook:
    """The Lloyd–Max codebook of one coordinate of a uniformly random unit vector in ``R^dim`` (cached).

    The density :math:`f_d(x) ∝ (1 − x²)^{(d−3)/2}` is integrated on a fine grid (its CDF is an
    incomplete Beta function), restricted to ``|x| ≤ min(1, 12/√d)`` where all but a negligible part
    of its mass lies.

    Args:
        bits: 1..4.
        dim: the vector dimension, at least 3 (the density is unbounded for ``dim = 2``).

    Raises:
        FormatError: for ``bits`` outside 1..4 or ``dim < 3``.

    Example:
        >>> cb = sphere_codebook(1, 128)
        >>> round(cb.levels[1] * 128**0.5, 3)  # close to the Gaussian ±0.7979
        0.799
    """
    _check_bits(bits)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 3:
        raise FormatError(f"sphere-coordinate codebooks need an integer dimension >= 3, got {dim!r}")
    n = 1 << bits
    sigma = 1.0 / math.sqrt(dim)
    half_width = min(1.0, 12.0 * sigma)
    x = torch.linspace(-half_width, half_width, _GRID_POINTS, dtype=torch.float64)
    log_norm = math.lgamma(dim / 2) - 0.5 * math.log(math.pi) - math.lgamma((dim - 1) / 2)
    density = math.exp(log_norm) * (1.0 - x * x).clamp_min(0.0) ** (0.5 * (dim - 3))
    step = x[1] - x[0]

    def cumulative(values: torch.Tensor) -> torch.Tensor:
        trapezoids = (values[1:] + values[:-1]) * (step / 2)
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(trapezoids, 0)])

    cdf_grid = cumulative(density)
    total = cdf_grid[-1]
    cdf_grid = cdf_grid / total
    mean_grid = cumulative(x * density) / total

    def interpolate(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        position = ((t.clamp(-half_width, half_width) + half_width) / step).clamp(0, _GRID_POINTS - 1)
        left = position.floor().long().clamp(max=_GRID_POINTS - 2)
        frac = position - left
        return table[left] * (1 - frac) + table[left + 1] * frac

    init_probs = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    init = x[torch.searchsorted(cdf_grid, init_probs).clamp(max=_GRID_POINTS - 1)]
    levels, prob, iterations = _lloyd(
        bits,
        lambda t: interpolate(cdf_grid, t),
        lambda t: interpolate(mean_grid, t),
        init,
        -half_width,
        half_width,
        sigma,
    )
    return _make(bits, levels, prob, 1.0 / dim, "beta", dim, iterations)


def coordinate_codebook(bits: int, dim: int, distribution: CodebookDistribution = "gaussian") -> LloydMaxCodebook:
    """The codebook for the coordinates of a randomly rotated unit vector in ``R^dim``.

    Args:
        bits: 1..4.
        dim: the vector dimension.
        distribution: ``"gaussian"`` — the standard Gaussian codebook scaled by ``1/√dim`` (the
            :math:`N(0, 1/d)` approximation TurboQuant uses); ``"beta"`` — the exact sphere-coordinate
            codebook (:func:`sphere_codebook`).

    Raises:
        FormatError: for an unknown distribution, ``bits`` outside 1..4 or a too small ``dim``.

    Example:
        >>> round(coordinate_codebook(1, 128).levels[1], 5)  # 0.7979 / √128
        0.07052
    """
    if distribution == "gaussian":
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise FormatError(f"dim must be a positive integer, got {dim!r}")
        base = gaussian_codebook(bits).scaled(1.0 / math.sqrt(dim))
        return LloydMaxCodebook(base.bits, base.levels, base.thresholds, base.mse, "gaussian", dim, base.iterations)
    if distribution == "beta":
        return sphere_codebook(bits, dim)
    raise FormatError(f"unknown codebook distribution {distribution!r}; allowed: gaussian, beta")

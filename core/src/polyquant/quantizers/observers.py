"""Activation observers: static activation scales from calibration data.

An observer sees every calibration input of one module (:meth:`~ActivationObserver.observe`, streaming:
memory does not grow with the number of batches) and then produces the static per-tensor scale used by
quantized modules (:meth:`~ActivationObserver.scale`). Scales follow the kernels' convention
``x_q = clamp(round(x / scale))`` (integers) or ``fp8(x / scale)`` (floats), so a clipping value ``c``
maps to ``scale = c / qmax`` where ``qmax`` is the format's largest magnitude (127 for int8, 448 for
``fp8_e4m3``).

* :class:`MinMaxObserver`: ``c = max |x|``.
* :class:`PercentileObserver`: ``c`` = the given percentile of ``|x|`` (e.g. 99.99), from a streaming
  histogram whose range doubles when a batch exceeds it (bins merge pairwise, counts are kept exactly).
* :class:`MSEObserver`: ``c`` minimizing the expected squared quantization error of ``x`` (including
  clipping error) over the same histogram.

Non-finite values raise :class:`~polyquant.errors.CalibrationError` naming the module.

Example:
    >>> import torch
    >>> obs = MinMaxObserver(name="fc1")
    >>> obs.observe(torch.tensor([[-2.0, 1.0]]))
    >>> round(float(obs.scale("int8")) * 127, 5)
    2.0
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, RecipeError

__all__ = [
    "ActivationObserver",
    "HistogramObserver",
    "MSEObserver",
    "MinMaxObserver",
    "PercentileObserver",
    "activation_qmax",
    "make_observer",
]

_QMAX = {"int8": 127.0, "int4": 7.0, "fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}


def activation_qmax(fmt: str) -> float:
    """Largest representable magnitude of activation format ``fmt`` (symmetric scaling).

    Example:
        >>> activation_qmax("fp8_e4m3")
        448.0
    """
    if fmt not in _QMAX:
        raise RecipeError(f"activations.format: {fmt!r} has no observer support; allowed: {', '.join(_QMAX)}")
    return _QMAX[fmt]


def _fake_quantize(values: Tensor, fmt: str, scale: float) -> Tensor:
    """Quantize-dequantize ``values`` with a static per-tensor ``scale``, exactly as the kernels do."""
    from polyquant.kernels.ops import fake_quantize_activation

    spec = ActivationSpec(format=fmt, granularity="tensor", dynamic=False)
    return fake_quantize_activation(values, spec, torch.tensor(scale)).to(values.dtype)


@runtime_checkable
class ActivationObserver(Protocol):
    """Collects activation statistics of one module and turns them into a static scale."""

    name: str

    def observe(self, x: Tensor) -> None:
        """Add one batch of activations (any shape)."""
        ...

    def scale(self, fmt: str) -> Tensor:
        """The static per-tensor scale (0-d float32) for activation format ``fmt``."""
        ...


def _checked(x: Tensor, name: str) -> Tensor:
    x = x.detach()
    if x.numel() == 0:
        raise CalibrationError(f"module {name!r} received an empty activation tensor; check the calibration inputs")
    x = x.float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise CalibrationError(
            f"module {name!r} received {bad} non-finite activation value(s) (NaN/Inf) during calibration; "
            "check the calibration data and run the model in a dtype that does not overflow (e.g. float32)"
        )
    return x


def _scale_from_clip(clip: float, fmt: str, name: str) -> Tensor:
    if clip <= 0.0:
        raise CalibrationError(
            f"module {name!r}: every calibration activation was zero, so no activation scale can be derived; "
            "use dynamic activations for it or calibrate with representative inputs"
        )
    return torch.tensor(clip / activation_qmax(fmt), dtype=torch.float32)


class MinMaxObserver:
    """Static scale from the largest absolute activation seen.

    Args:
        name: the module name (used in error messages).

    Example:
        >>> obs = MinMaxObserver("fc")
        >>> obs.observe(torch.tensor([3.0, -4.0]))
        >>> obs.amax
        4.0
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.amax = 0.0
        self.count = 0

    def observe(self, x: Tensor) -> None:
        """Record the batch's largest magnitude."""
        x = _checked(x, self.name)
        self.amax = max(self.amax, float(x.abs().max()))
        self.count += x.numel()

    def scale(self, fmt: str) -> Tensor:
        """``amax / qmax``."""
        if self.count == 0:
            raise CalibrationError(
                f"module {self.name!r} was never called during calibration; check that inputs reach it"
            )
        return _scale_from_clip(self.amax, fmt, self.name)


class HistogramObserver:
    """A streaming histogram of ``|x|`` over ``[0, range)`` with a range that doubles on demand.

    When a batch exceeds the current range, the range doubles (adjacent bin pairs merge) until it
    fits, so counts stay exact and memory stays ``bins`` integers. Quantiles are read with linear
    interpolation inside a bin; resolution is ``range / bins``.

    Args:
        name: the module name (used in error messages).
        bins: number of bins (even).
    """

    def __init__(self, name: str = "", bins: int = 4096) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"bins must be an even number ≥ 2, got {bins}")
        self.name = name
        self.bins = bins
        self.hist = torch.zeros(bins, dtype=torch.float64)
        self.upper = 0.0
        self.amax = 0.0

    @property
    def count(self) -> int:
        """Number of values observed."""
        return int(self.hist.sum())

    def observe(self, x: Tensor) -> None:
        """Add one batch to the histogram."""
        a = _checked(x, self.name).abs().flatten()
        batch_max = float(a.max())
        self.amax = max(self.amax, batch_max)
        if self.upper == 0.0:
            self.upper = batch_max if batch_max > 0 else 1.0
        while batch_max > self.upper:
            merged = self.hist.view(-1, 2).sum(1)
            self.hist = torch.cat([merged, torch.zeros_like(merged)])
            self.upper *= 2.0
        idx = (a.double() * (self.bins / self.upper)).long().clamp_(max=self.bins - 1)
        self.hist += torch.bincount(idx, minlength=self.bins).double()

    def _require_data(self) -> None:
        if self.count == 0:
            raise CalibrationError(
                f"module {self.name!r} was never called during calibration; check that inputs reach it"
            )

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (``0 < q ≤ 1``) of ``|x|``; ``q = 1`` returns the exact maximum."""
        self._require_data()
        if q >= 1.0:
            return self.amax
        cdf = torch.cumsum(self.hist, 0)
        target = q * float(cdf[-1])
        b = int(torch.searchsorted(cdf, torch.tensor([target], dtype=cdf.dtype)).item())
        below = float(cdf[b - 1]) if b > 0 else 0.0
        inside = float(self.hist[b])
        frac = (target - below) / inside if inside > 0 else 1.0
        width = self.upper / self.bins
        return min((b + frac) * width, self.amax)

    def centers(self) -> tuple[Tensor, Tensor]:
        """Bin centers and counts of the non-empty bins (float64)."""
        self._require_data()
        width = self.upper / self.bins
        keep = self.hist > 0
        centers = (torch.arange(self.bins, dtype=torch.float64) + 0.5) * width
        return centers[keep], self.hist[keep]


class PercentileObserver(HistogramObserver):
    """Static scale from a percentile of ``|x|`` (robust to rare outliers).

    Args:
        name: the module name.
        percentile: in ``(50, 100]``; ``100`` equals :class:`MinMaxObserver`.
        bins: histogram resolution.

    Example:
        >>> obs = PercentileObserver("fc", percentile=99.0)
        >>> obs.observe(torch.arange(1, 1001, dtype=torch.float32))
        >>> abs(obs.clip() - 990.0) < 1.0
        True
    """

    def __init__(self, name: str = "", percentile: float = 99.99, bins: int = 4096) -> None:
        if not 50.0 < percentile <= 100.0:
            raise RecipeError(f"activations.percentile: {percentile} must lie in (50, 100]")
        super().__init__(name, bins)
        self.percentile = percentile

    def clip(self) -> float:
        """The clipping value: the configured percentile of ``|x|``."""
        return self.quantile(self.percentile / 100.0)

    def scale(self, fmt: str) -> Tensor:
        """``percentile(|x|) / qmax``."""
        return _scale_from_clip(self.clip(), fmt, self.name)


class MSEObserver(HistogramObserver):
    """Static scale whose clipping value minimizes the expected squared quantization error.

    Candidates are ``grid`` clipping values spaced geometrically from ``amax`` down to
    ``amax · min_ratio`` (activations are often heavy-tailed, so the best clip can be a small fraction of
    the maximum); each is scored on the histogram (bin centers weighted by counts) with the kernels'
    own rounding, clipping error included.

    Args:
        name: the module name.
        grid: number of candidate clipping values.
        min_ratio: the smallest candidate, as a fraction of ``amax``.
        bins: histogram resolution.

    Example:
        >>> obs = MSEObserver("fc")
        >>> obs.observe(torch.cat([torch.randn(10000), torch.tensor([80.0])]))
        >>> obs.clip("int8") < 80.0
        True
    """

    def __init__(self, name: str = "", grid: int = 100, min_ratio: float = 1e-3, bins: int = 4096) -> None:
        if grid < 1 or not 0.0 < min_ratio <= 1.0:
            raise ValueError(f"grid must be ≥ 1 and min_ratio in (0, 1], got grid={grid}, min_ratio={min_ratio}")
        super().__init__(name, bins)
        self.grid = grid
        self.min_ratio = min_ratio

    def candidates(self) -> list[float]:
        """The clipping values tried, ``amax`` first."""
        if self.grid == 1:
            return [self.amax]
        return [self.amax * self.min_ratio ** (i / (self.grid - 1)) for i in range(self.grid)]

    def clip(self, fmt: str) -> float:
        """The clipping value with the smallest expected error for format ``fmt``."""
        values, counts = self.centers()
        best, best_err = self.amax, math.inf
        for c in self.candidates():
            if c <= 0.0:
                break
            scale = c / activation_qmax(fmt)
            err = float((counts * (_fake_quantize(values, fmt, scale) - values).square()).sum())
            if err < best_err:
                best, best_err = c, err
        return best

    def scale(self, fmt: str) -> Tensor:
        """``clip / qmax`` for the error-minimizing clip."""
        return _scale_from_clip(self.clip(fmt), fmt, self.name)


def make_observer(act: ActivationSpec, name: str = "") -> ActivationObserver:
    """The observer an :class:`~polyquant.activations.ActivationSpec` asks for.

    Example:
        >>> from polyquant.activations import ActivationSpec
        >>> spec = ActivationSpec(format="int8", granularity="tensor", dynamic=False, observer="percentile")
        >>> type(make_observer(spec, "fc")).__name__
        'PercentileObserver'
    """
    if not act.symmetric:
        raise RecipeError(
            "activations.symmetric: static activation scales are symmetric only (the kernels take one scale); "
            "use symmetric: true or dynamic: true"
        )
    if act.observer == "percentile":
        return PercentileObserver(name, act.percentile)
    if act.observer == "mse":
        return MSEObserver(name)
    return MinMaxObserver(name)

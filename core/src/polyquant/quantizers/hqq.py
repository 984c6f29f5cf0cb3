"""HQQ: calibration-free half-quadratic optimization of the zero points (Badri & Shaji, 2023).

Starting from min-max scales ``s = qmax / (max − min)`` (inverted scale, capped at 2·10⁴) and zeros
``z = −min · s``, HQQ minimizes the sparsity-promoting error ``‖W − W_r‖_p^p`` (``p = 0.7``) over the zero
points with half-quadratic splitting, where ``W_r = (clamp(round(W·s + z)) − z) / s``:

* ``W_e ← shrink_p(W − W_r; β)`` with ``shrink_p(x) = sign(x) · relu(|x| − |x|^(p−1) / β)``;
* ``z ← mean_group(W_q − (W − W_e) · s)``;
* ``β ← κ β`` (``β = 10``, ``κ = 1.01``), 20 iterations, stopping early when the mean absolute error stops
  improving; the best zeros seen are kept.

Only the zero points move (the scales stay min-max), so HQQ applies to asymmetric integer formats (``uint*``
with ``symmetric: false``). The zeros are fractional and stored in the format's scale dtype, as HQQ does.

Example:
    >>> import torch, polyquant.formats as formats
    >>> w = 0.02 * torch.randn(64, 128)
    >>> spec = formats.get("uint4").with_options(group_size=64)
    >>> hqq = HQQQuantizer().quantize_weight(w, spec).dequantize()
    >>> rtn = spec.quantize(w).dequantize()
    >>> bool((w - hqq).abs().mean() < (w - rtn).abs().mean())
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polyquant.errors import RecipeError
from polyquant.formats.elements import IntElement
from polyquant.formats.qparams import QParams
from polyquant.quantizers.rtn import check_weight

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["HQQQuantizer", "hqq_zeros"]

#: Upper bound of the inverted scale ``s`` (constant groups would otherwise give an infinite one).
MAX_INV_SCALE = 2e4


def _positive(name: str, value: object, hint: str, *, integer: bool = False) -> float:
    valid = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not valid or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        raise RecipeError(f"{name}: {value!r} is invalid; {hint}")
    return float(value)  # type: ignore[arg-type]


class HQQQuantizer:
    """Half-quadratic zero-point optimization (no calibration data).

    Args:
        iters: maximum number of iterations (20).
        p: the error norm's exponent, ``0 < p < 1`` promotes sparse errors (0.7).
        beta: initial penalty weight ``β`` (10).
        kappa: growth of ``β`` per iteration (1.01).
        early_stop: stop as soon as the mean absolute error stops improving.

    Example:
        >>> HQQQuantizer(iters=10).needs_calibration
        False
    """

    name = "hqq"
    needs_calibration = False

    def __init__(
        self, iters: int = 20, p: float = 0.7, beta: float = 10.0, kappa: float = 1.01, early_stop: bool = True
    ) -> None:
        self.iters = int(_positive("iters", iters, "use a positive integer such as 20", integer=True))
        self.p = _positive("p", p, "use an exponent in (0, 1], such as 0.7")
        if self.p > 1:
            raise RecipeError(f"p: {p!r} is invalid; use an exponent in (0, 1], such as 0.7")
        self.beta = _positive("beta", beta, "use a positive number such as 10")
        self.kappa = _positive("kappa", kappa, "use a number ≥ 1 such as 1.01")
        if self.kappa < 1:
            raise RecipeError(f"kappa: {kappa!r} is invalid; use a number ≥ 1 such as 1.01")
        if not isinstance(early_stop, bool):
            raise RecipeError(f"early_stop: {early_stop!r} is invalid; use true or false")
        self.early_stop = early_stop

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """Quantize ``weight`` with min-max scales and HQQ-optimized zeros (``stats`` is ignored).

        Raises:
            RecipeError: the format is not an asymmetric integer format with row-wise groups.
        """
        check_weight(weight, spec)
        if not isinstance(spec.element, IntElement) or spec.symmetric:
            raise RecipeError(
                f"hqq optimizes zero points, so it needs an asymmetric integer format; {spec.name!r} has none. "
                "Use e.g. weights: {format: uint4, group_size: 64} (uint formats are asymmetric)"
            )
        w = weight.detach().float()
        qparams = spec.compute_qparams(w)  # min-max scales: HQQ's starting point
        qparams = spec.cast_qparams(qparams, tuple(w.shape))
        groups, restore = _grouped(spec, w)
        scale = qparams.scale.reshape(-1, 1)
        inv = (1.0 / scale).clamp(max=MAX_INV_SCALE)
        scale = spec.load_scale(spec.store_scale(1.0 / inv))  # the scale as stored
        lo = groups.amin(dim=1, keepdim=True).clamp(max=0)
        zero0 = -lo / scale
        zero = hqq_zeros(
            groups,
            scale,
            zero0,
            qmax=float(spec.element.qmax),
            iters=self.iters,
            p=self.p,
            beta=self.beta,
            kappa=self.kappa,
            early_stop=self.early_stop,
        )
        result = QParams(restore(scale), zero=restore(zero))
        return spec.quantize(weight.detach(), qparams=result)

    def __repr__(self) -> str:
        return f"HQQQuantizer(iters={self.iters}, p={self.p}, beta={self.beta}, kappa={self.kappa})"


def _grouped(spec: FormatSpec, w: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``w`` as ``(num_groups, group_size)`` rows, and a function reshaping per-group values to the scale shape."""
    g = spec.granularity
    rows, k = w.shape
    scale_shape = g.scale_shape(tuple(w.shape))
    if g.kind == "group":
        gs = g.group_size
    elif g.kind == "channel" and g.axis in (0, -2):
        gs = k
    elif g.kind == "tensor":
        gs = rows * k
    else:
        raise RecipeError(
            f"hqq needs per-tensor, per-output-channel or per-group scales; format {spec.name!r} uses {g}"
        )

    def restore(values: Tensor) -> Tensor:
        return values.reshape(scale_shape)

    return w.reshape(-1, gs), restore


def _shrink(x: Tensor, beta: float, p: float) -> Tensor:
    """The generalized soft-thresholding operator of the ``ℓ_p`` proximal step."""
    magnitude = x.abs()
    return torch.sign(x) * torch.relu(magnitude - magnitude.clamp_min(1e-12).pow(p - 1) / beta)


def hqq_zeros(
    groups: Tensor,
    scale: Tensor,
    zero: Tensor,
    *,
    qmax: float,
    iters: int = 20,
    p: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    early_stop: bool = True,
) -> Tensor:
    """Optimize the zero points of ``groups`` (``(G, n)``) with fixed ``scale`` (``(G, 1)``); returns ``(G, 1)``.

    Example:
        >>> w = torch.tensor([[0.0, 0.1, 0.2, 1.0]])
        >>> tuple(hqq_zeros(w, torch.tensor([[1 / 15]]), torch.zeros(1, 1), qmax=15.0).shape)
        (1, 1)
    """
    inv = 1.0 / scale
    best_zero, best_error = zero.clone(), math.inf
    for _ in range(iters):
        codes = torch.round(groups * inv + zero).clamp(0, qmax)
        recon = (codes - zero) * scale
        error = float((groups - recon).abs().mean())
        if error < best_error:
            best_zero, best_error = zero.clone(), error
        elif early_stop:
            break
        sparse_err = _shrink(groups - recon, beta, p)
        zero = torch.mean(codes - (groups - sparse_err) * inv, dim=1, keepdim=True)
        beta *= kappa
    return best_zero

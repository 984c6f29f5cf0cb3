"""GPTQ: column-by-column rounding with second-order error feedback (Frantar et al., 2022).

Each column of the weight is rounded in turn and the rounding error is spread over the columns not yet
rounded, weighted by the inverse of the layer's input Hessian ``H = 2/N · Σ x xᵀ``. The algorithm, with
the reference implementation's defaults:

1. Dead inputs (``H[d, d] == 0``: a feature that was always zero) get ``H[d, d] = 1`` and ``W[:, d] = 0``.
2. Damping: ``H += damp · mean(diag H) · I`` (``damp = 0.01``).
3. Act-order (optional): columns are visited by decreasing ``diag H``.
4. ``U = chol(H⁻¹)ᵀ`` (upper, ``H⁻¹ = Uᵀ U``). Columns are processed in blocks of ``block_size`` (128); for
   column ``i``, ``q = Q(w_i)``, ``e = (w_i − q) / U_ii`` and ``W[:, i:] −= e ⊗ U[i, i:]`` inside the block,
   then one matrix product carries the block's errors to the remaining columns.

Scales come from the format (``spec.compute_qparams``), so GPTQ works with every format whose scales run
along rows: integers (symmetric or with zero points), FP8/FP6/FP4, MX and NVFP4 blocks, NF4 and codebooks,
per tensor, per channel or per group. Per group, a group's scales are computed from the *current*
(already error-corrected) weights when its first column is reached, as in the reference. Two variants keep
scales fixed from the original weight instead: ``static_groups=True``, and formats with a tensor-level
scale (NVFP4), whose block scales depend on the whole tensor.

**Act-order and groups.** With act-order the reference groups columns in *visit* order, which needs a
``g_idx`` permutation at inference. polyquant keeps groups contiguous in the original column order (every
kernel reads them) and, under act-order, computes a group's scales when the first of its columns is
visited: the quality benefit of act-order without the desc-act kernel.

**No calibration tokens.** A layer whose Hessian is all zero (an MoE expert no token was routed to) would
be zeroed by plain GPTQ. It falls back to round-to-nearest and emits a :class:`QuantizationWarning`, which
:func:`polyquant.quantize` records in the report's notes.

Example:
    >>> import torch, polyquant.formats as formats
    >>> from polyquant.quantizers.stats import InputStats
    >>> x = torch.randn(256, 64)
    >>> stats = InputStats()
    >>> stats.add(x)
    >>> w = torch.randn(32, 64)
    >>> spec = formats.get("int4").with_options(group_size=32)
    >>> qt = GPTQQuantizer().quantize_weight(w, spec, stats=stats.as_dict())
    >>> tuple(qt.shape)
    (32, 64)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polyquant.errors import CalibrationError, RecipeError
from polyquant.formats.granularity import Granularity
from polyquant.formats.qparams import QParams
from polyquant.quantizers.rtn import check_weight

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["GPTQQuantizer", "QuantizationFallbackWarning", "gptq_solve"]


class QuantizationFallbackWarning(UserWarning):
    """A calibrated quantizer fell back to a simpler method for one weight (e.g. no calibration tokens)."""


def _check_number(name: str, value: object, *, low: float, high: float | None = None, hint: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or float(value) < low or (high is not None and float(value) > high):  # type: ignore[arg-type]
        raise RecipeError(f"{name}: {value!r} is invalid; {hint}")
    return float(value)  # type: ignore[arg-type]


class GPTQQuantizer:
    """GPTQ with damping, blocks, act-order, static groups and the no-token guard.

    Args:
        block_size: columns per lazy-update block (128 in the reference; any positive integer).
        damp: damping as a fraction of the mean Hessian diagonal (``percdamp``, 0.01).
        act_order: visit columns by decreasing Hessian diagonal (``desc_act``).
        static_groups: compute every group's scales from the original weight before any update.

    Example:
        >>> GPTQQuantizer(act_order=True).needs_calibration
        True
    """

    name = "gptq"
    needs_calibration = True

    def __init__(
        self, block_size: int = 128, damp: float = 0.01, act_order: bool = False, static_groups: bool = False
    ) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise RecipeError(f"block_size: {block_size!r} is invalid; use a positive integer such as 128")
        self.block_size = block_size
        self.damp = _check_number("damp", damp, low=0.0, high=1.0, hint="use a fraction in [0, 1] such as 0.01")
        for flag, value in (("act_order", act_order), ("static_groups", static_groups)):
            if not isinstance(value, bool):
                raise RecipeError(f"{flag}: {value!r} is invalid; use true or false")
        self.act_order = act_order
        self.static_groups = static_groups

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """Quantize ``weight`` to ``spec`` using the Hessian in ``stats``.

        Raises:
            CalibrationError: ``stats`` has no ``hessian`` or its shape does not match the weight.
        """
        check_weight(weight, spec)
        if stats is None:
            raise CalibrationError(
                "gptq needs the layer's input Hessian; pass calibration data to polyquant.quantize "
                "(calibration=<inputs>) so the module's inputs are observed"
            )
        hessian = stats.get("hessian")
        samples = stats.get("num_samples")
        if hessian is None or (samples is not None and int(samples) == 0) or not bool(hessian.diagonal().any()):
            warnings.warn(
                "gptq: this layer saw no calibration tokens (no or an all-zero Hessian); it was quantized with "
                "round-to-nearest instead, since plain GPTQ would zero it",
                QuantizationFallbackWarning,
                stacklevel=2,
            )
            return spec.quantize(weight.detach())
        k = int(weight.shape[1])
        if tuple(hessian.shape) != (k, k):
            raise CalibrationError(
                f"gptq: the Hessian has shape {tuple(hessian.shape)} but the weight has {k} input columns; "
                "the statistics were collected for another module"
            )
        if not bool(torch.isfinite(hessian).all()):
            raise CalibrationError("gptq: the Hessian contains NaN or Inf; check the calibration data")
        q, qparams = gptq_solve(
            weight.detach(),
            hessian,
            spec,
            block_size=self.block_size,
            damp=self.damp,
            act_order=self.act_order,
            static_groups=self.static_groups,
        )
        return spec.quantize(q.to(weight.dtype), qparams=qparams)

    def __repr__(self) -> str:
        return (
            f"GPTQQuantizer(block_size={self.block_size}, damp={self.damp}, act_order={self.act_order}, "
            f"static_groups={self.static_groups})"
        )


def _group_size(spec: FormatSpec, k: int) -> int:
    """Columns that share one scale in each row (``k`` for per-channel and per-tensor scales)."""
    g = spec.granularity
    if g.kind == "group":
        g.validate((1, k))
        return g.group_size
    if g.kind == "tensor" or (g.kind == "channel" and g.axis in (0, -2)):
        return k
    raise RecipeError(
        f"gptq needs scales that run along rows (per tensor, per output channel or per group); format "
        f"{spec.name!r} uses {g}; choose a per-group or per-channel variant of the format"
    )


def _column_quantizer(spec: FormatSpec, qparams: QParams, group: int) -> Callable[[Tensor], Tensor]:
    """A function rounding one ``(rows, 1)`` column with the scales of column group ``group``."""
    if spec.granularity.kind == "tensor":
        return lambda col: spec.fake_quantize(col, qparams=qparams)
    col_spec = spec.with_options(granularity=Granularity.per_channel(0))

    def take(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[:, group : group + 1]

    col_qp = QParams(take(qparams.scale), take(qparams.zero), qparams.tensor_scale, take(qparams.levels))  # type: ignore[arg-type]
    return lambda col: col_spec.fake_quantize(col, qparams=col_qp)


def _assemble(parts: list[QParams]) -> QParams:
    """Concatenate per-group qparams ``(rows, 1, ...)`` along the group axis."""

    def cat(ts: list[Tensor | None]) -> Tensor | None:
        return None if ts[0] is None else torch.cat([t for t in ts if t is not None], dim=1)

    scale = cat([p.scale for p in parts])
    assert scale is not None
    return QParams(scale, cat([p.zero for p in parts]), parts[0].tensor_scale, cat([p.levels for p in parts]))


def gptq_solve(
    weight: Tensor,
    hessian: Tensor,
    spec: FormatSpec,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
) -> tuple[Tensor, QParams]:
    """Run GPTQ on a 2-D weight; returns the quantized (dequantized float32) weight and its qparams.

    ``spec.quantize(q, qparams=qparams)`` packs the result exactly. See the module docstring for the
    algorithm.

    Example:
        >>> import torch, polyquant.formats as formats
        >>> x = torch.randn(128, 16)
        >>> q, qp = gptq_solve(torch.randn(8, 16), 2 * x.T @ x / 128, formats.get("int8"))
        >>> tuple(q.shape)
        (8, 16)
    """
    w = weight.float().clone()
    k = int(w.shape[1])
    gs = _group_size(spec, k)
    num_groups = k // gs
    h = hessian.to(device=w.device, dtype=torch.float64).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    static = static_groups or spec.tensor_scale or spec.granularity.kind in ("tensor", "channel")
    fixed = spec.compute_qparams(w) if static else None
    col_qparams: list[QParams | None] = [None] * num_groups
    quantizers: list[Callable[[Tensor], Tensor] | None] = [None] * num_groups

    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(k, device=w.device)
    inv_perm = torch.argsort(perm)
    w = w[:, perm]
    h = h[perm][:, perm]
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    u = _upper_inverse_cholesky(h).float()

    q = torch.zeros_like(w)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        err = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = col // gs
            if quantizers[g] is None:
                if fixed is not None:
                    qp = fixed
                else:
                    # The group's columns as they stand now (error-corrected so far), in original order.
                    members = inv_perm[g * gs : (g + 1) * gs]
                    # They all sit at or after column i1 + i: a group's scales are fixed the first time any
                    # of its columns is visited, so none of them is rounded yet.
                    current = torch.cat([w1, w[:, i2:]], dim=1) if i2 < k else w1
                    cols = current[:, members - i1]
                    qp = spec.with_options(granularity=Granularity.per_channel(0)).compute_qparams(cols)
                col_qparams[g] = qp
                quantizers[g] = _column_quantizer(spec, qp, g if fixed is not None else 0)
            quantize = quantizers[g]
            assert quantize is not None
            wcol = w1[:, i : i + 1]
            qcol = quantize(wcol)
            q[:, i1 + i] = qcol[:, 0]
            e = (wcol[:, 0] - qcol[:, 0]) / u[i1 + i, i1 + i]
            w1[:, i:] -= e.unsqueeze(1) * u[i1 + i, i1 + i : i2].unsqueeze(0)
            err[:, i] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    q = q[:, inv_perm]
    if fixed is not None:
        return q, spec.cast_qparams(fixed, tuple(q.shape))
    parts = [p for p in col_qparams if p is not None]
    return q, spec.cast_qparams(_assemble(parts), tuple(q.shape))


def _upper_inverse_cholesky(h: Tensor) -> Tensor:
    """``U`` upper-triangular with ``H⁻¹ = Uᵀ U``, retrying with more damping when ``H`` is not positive definite."""
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    extra = 0.0
    for _ in range(6):
        lower, info = torch.linalg.cholesky_ex(h + extra * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                result: Tensor = upper
                return result
        extra = max(extra * 10, 1e-6 * float(h.diagonal().abs().mean()) or 1e-6)
    raise CalibrationError(
        "gptq: the layer's Hessian is not positive definite even after extra damping; raise 'damp' "
        "(e.g. 0.1) or use more calibration samples"
    )

"""Round-to-nearest (RTN): the format's own min-max / absmax scales, no search, no calibration.

Symmetric formats scale each group by its absolute maximum; asymmetric integer formats map each group's
``[min, max]`` onto the code range with a zero point. The rule lives in
:meth:`~polyquant.formats.spec.FormatSpec.compute_qparams`; RTN applies it unchanged.

Example:
    >>> import torch, polyquant.formats as formats
    >>> qt = RTNQuantizer().quantize_weight(torch.randn(8, 32), formats.get("int8"))
    >>> tuple(qt.shape)
    (8, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor

from polyquant.errors import FormatError

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["RTNQuantizer", "check_weight"]


def check_weight(weight: Tensor, spec: FormatSpec) -> None:
    """Common input checks of the built-in quantizers (2-D, floating point, finite, materialized)."""
    if weight.dim() != 2:
        raise FormatError(
            f"quantizers take 2-D (out, reduction) weights, got shape {tuple(weight.shape)}; "
            "flatten conv weights to (out_channels, -1) first (polyquant.nn does this)"
        )
    if weight.device.type == "meta":
        raise FormatError("cannot quantize a weight on the 'meta' device; load the model's weights first")
    if not weight.is_floating_point():
        raise FormatError(f"cannot quantize a {weight.dtype} weight to {spec.name}; expected a floating-point tensor")


class RTNQuantizer:
    """Round-to-nearest with min-max (asymmetric) or absmax (symmetric) scales.

    Example:
        >>> RTNQuantizer().needs_calibration
        False
    """

    name = "rtn"
    needs_calibration = False

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """Quantize ``weight`` to ``spec`` (``stats`` is ignored)."""
        check_weight(weight, spec)
        return spec.quantize(weight.detach())

    def __repr__(self) -> str:
        return "RTNQuantizer()"

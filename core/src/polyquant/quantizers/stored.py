"""A quantizer that hands back a weight quantized elsewhere (a checkpoint, another process).

Modules are then rebuilt by the same converters that built them (``QLinear.from_linear``, ...), and
nothing is quantized a second time. Used by :func:`polyquant.load` and by distributed runs
(:mod:`polyquant.distributed`).

Example:
    >>> import torch, polyquant.formats as formats
    >>> qt = formats.get("int8").quantize(torch.randn(4, 8))
    >>> StoredWeight(qt, "module fc").quantize_weight(torch.zeros(4, 8), qt.spec) is qt
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from polyquant.errors import PolyquantError

if TYPE_CHECKING:
    from torch import Tensor

    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["StoredWeight"]


class StoredWeight:
    """Returns ``weight`` for a module whose unquantized weight has the same number of elements.

    Args:
        weight: the already-quantized weight.
        where: names the module in errors (``"module model.layers.0.fc"``).
        error: the error class raised on a size mismatch.
        hint: appended to that error's message (what usually causes it).
    """

    name = "stored"
    needs_calibration = False

    def __init__(
        self, weight: QTensor, where: str, *, error: type[PolyquantError] = PolyquantError, hint: str = ""
    ) -> None:
        self.weight, self.where, self.error, self.hint = weight, where, error, hint

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """``self.weight``, after checking it fits ``weight``."""
        if weight.numel() != self.weight.shape.numel():
            raise self.error(
                f"{self.where}: the model's weight has {weight.numel()} elements, the stored one "
                f"{self.weight.shape.numel()}{self.hint}"
            )
        return self.weight

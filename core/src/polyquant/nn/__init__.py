"""Quantized modules: :class:`QLinear`, :class:`QConv1d`, :class:`QConv2d`, :class:`QEmbedding`.

Each holds its weight as a :class:`~polyquant.qtensor.QTensor` stored in ``weight_*`` buffers (naming in
:mod:`polyquant.nn.base`) and runs through :mod:`polyquant.kernels` dispatch.

Example:
    >>> import torch
    >>> from polyquant.nn import quantize_module
    >>> quantize_module(torch.nn.Linear(32, 8), "int8").out_features
    8
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor, nn

from polyquant.nn.base import WEIGHT_PREFIX, QuantizedModule
from polyquant.nn.qconv import ConvWeightView, QConv1d, QConv2d, QConvNd
from polyquant.nn.qembedding import QEmbedding
from polyquant.nn.qlinear import QLinear

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.formats.spec import FormatSpec
    from polyquant.quantizers.protocol import Quantizer

__all__ = [
    "QUANTIZED_TYPES",
    "WEIGHT_PREFIX",
    "ConvWeightView",
    "QConv1d",
    "QConv2d",
    "QConvNd",
    "QEmbedding",
    "QLinear",
    "QuantizedModule",
    "quantize_module",
]

#: Float module class → recipe module type name (``Recipe.modules``).
QUANTIZED_TYPES: dict[type[nn.Module], str] = {
    nn.Linear: "Linear",
    nn.Conv1d: "Conv1d",
    nn.Conv2d: "Conv2d",
    nn.Embedding: "Embedding",
}


def quantize_module(
    module: nn.Module,
    spec: FormatSpec | str,
    *,
    quantizer: Quantizer | None = None,
    act: ActivationSpec | None = None,
    act_scale: Tensor | float | None = None,
    stats: Mapping[str, Tensor] | None = None,
) -> QuantizedModule:
    """The quantized counterpart of ``module`` (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Embedding``).

    Raises:
        TypeError: for other module types.

    Example:
        >>> import torch
        >>> type(quantize_module(torch.nn.Conv1d(4, 4, 3), "int8")).__name__
        'QConv1d'
    """
    if isinstance(module, nn.Linear):
        return QLinear.from_linear(module, spec, quantizer=quantizer, act=act, act_scale=act_scale, stats=stats)
    if isinstance(module, nn.Conv1d):
        return QConv1d.from_conv(module, spec, quantizer=quantizer, act=act, act_scale=act_scale, stats=stats)  # type: ignore[no-any-return]
    if isinstance(module, nn.Conv2d):
        return QConv2d.from_conv(module, spec, quantizer=quantizer, act=act, act_scale=act_scale, stats=stats)  # type: ignore[no-any-return]
    if isinstance(module, nn.Embedding):
        return QEmbedding.from_embedding(module, spec, quantizer=quantizer, act=act, act_scale=act_scale, stats=stats)
    supported = ", ".join(f"nn.{cls.__name__}" for cls in QUANTIZED_TYPES)
    raise TypeError(f"cannot quantize a {type(module).__name__}; supported: {supported}")

"""``QLinear``: a linear layer with a quantized weight (and optionally quantized input activations).

Example:
    >>> import torch, polyquant.formats as formats
    >>> layer = QLinear.from_linear(torch.nn.Linear(64, 32), formats.get("int8"))
    >>> layer(torch.randn(2, 64)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor, nn

from polyquant import kernels
from polyquant.errors import FormatError
from polyquant.nn.base import QuantizedModule

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor
    from polyquant.quantizers.protocol import Quantizer

__all__ = ["QLinear", "resolve_spec"]


def resolve_spec(spec: FormatSpec | str) -> FormatSpec:
    """A :class:`FormatSpec`, or the registered format named ``spec``."""
    if isinstance(spec, str):
        from polyquant.plugins import get_plugin_manager

        return get_plugin_manager().get_format(spec)
    return spec


class QLinear(QuantizedModule):
    """``y = x Wᵀ + b`` with ``W`` a :class:`~polyquant.qtensor.QTensor` of shape ``(out, in)``.

    Weight-only (``act=None``) or weight + activation quantization: dynamic scales (per token or per
    tensor, computed from each input) or a static per-tensor ``act_scale`` from calibration. The
    forward pass is :func:`polyquant.kernels.linear`, which dispatches to the fastest capable kernel.
    Buffer naming is documented in :mod:`polyquant.nn.base`.

    Args:
        weight: the quantized ``(out_features, in_features)`` weight.
        bias: optional ``(out_features,)`` bias, kept in its dtype.
        act: activation quantization settings (``None``: weight-only).
        act_scale: the calibrated scale, required when ``act`` is static.

    Example:
        >>> import torch, polyquant.formats as formats
        >>> qt = formats.get("int4").with_options(group_size=32).quantize(torch.randn(16, 64))
        >>> QLinear(qt).in_features
        64
    """

    _kernel_op = "linear"

    def __init__(
        self,
        weight: QTensor,
        bias: Tensor | None = None,
        *,
        act: ActivationSpec | None = None,
        act_scale: Tensor | float | None = None,
    ) -> None:
        super().__init__()
        if len(weight.shape) != 2:
            raise FormatError(
                f"QLinear needs a 2-D (out_features, in_features) weight, got shape {tuple(weight.shape)}"
            )
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise FormatError(f"QLinear bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self._init_quantized(weight, bias, act, act_scale)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        spec: FormatSpec | str,
        *,
        quantizer: Quantizer | None = None,
        act: ActivationSpec | None = None,
        act_scale: Tensor | float | None = None,
        stats: Mapping[str, Tensor] | None = None,
    ) -> QLinear:
        """Quantize an ``nn.Linear``.

        Args:
            linear: the layer (left unchanged; the bias ``Parameter`` is shared).
            spec: the weight format (a :class:`FormatSpec` or a registered format name).
            quantizer: the algorithm (default: round to nearest).
            act: activation quantization settings.
            act_scale: the calibrated scale for static ``act``.
            stats: calibration statistics for quantizers that need them.

        Example:
            >>> import torch
            >>> QLinear.from_linear(torch.nn.Linear(32, 8), "int8").out_features
            8
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QLinear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        from polyquant.quantizers.rtn import RTNQuantizer

        quantizer = quantizer or RTNQuantizer()
        qweight = quantizer.quantize_weight(linear.weight.detach(), resolve_spec(spec), stats=stats)
        return cls(qweight, linear.bias, act=act, act_scale=act_scale)

    def forward(self, x: Tensor) -> Tensor:
        """``polyquant.kernels.linear(x, weight, bias, act=..., act_scale=...)``."""
        return kernels.linear(
            x, self.weight, self.bias, act=self.act, act_scale=self.act_scale, cache=self._kernel_cache
        )

    def extra_repr(self) -> str:
        """Shape, bias, format, bits/weight, activations and the kernel dispatch picks."""
        shape = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return f"{shape}, {self._describe()}"

"""``QConv1d`` / ``QConv2d``: convolutions with quantized weights.

Quantization rule: a conv weight ``(out_channels, in_channels / groups, *kernel)`` is quantized on its
GEMM view ``(out_channels, in_channels / groups · prod(kernel))`` — the matrix that multiplies unfolded
input patches — so "per channel" means per output channel and a group of ``g`` covers ``g`` consecutive
elements of one output channel's flattened filter (input-channel-major, kernel positions fastest, as
``weight.flatten(1)``). The group size must divide ``in_channels / groups · prod(kernel)``; otherwise a
:class:`~polyquant.errors.FormatError` names the module's reduction size and group sizes that work
(per-channel always does). Mamba's depthwise conv (``groups = channels``, kernel 4) therefore has a
reduction size of 4: use per-channel scales or a group size of 2 or 4.

The quantized weight is held in that 2-D form (``module.weight``); the kernels receive the same codes
viewed with the conv's shape (:meth:`QConvNd.conv_weight`). Only ``padding_mode="zeros"`` is supported.

Example:
    >>> import torch
    >>> conv = QConv2d.from_conv(torch.nn.Conv2d(8, 16, 3, padding=1), "int8")
    >>> conv(torch.randn(1, 8, 10, 10)).shape
    torch.Size([1, 16, 10, 10])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from polyquant import kernels
from polyquant.errors import FormatError
from polyquant.nn.base import QuantizedModule
from polyquant.nn.qlinear import resolve_spec

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.formats.spec import FormatSpec
    from polyquant.plugins.records import KernelContext
    from polyquant.qtensor import QTensor
    from polyquant.quantizers.protocol import Quantizer

__all__ = ["ConvWeightView", "QConv1d", "QConv2d", "QConvNd", "conv_gemm_view"]


def conv_gemm_view(weight: Tensor) -> Tensor:
    """The 2-D ``(out_channels, in_channels / groups · prod(kernel))`` view a conv weight is quantized on.

    Example:
        >>> import torch
        >>> conv_gemm_view(torch.zeros(16, 4, 3, 3)).shape
        torch.Size([16, 36])
    """
    return weight.reshape(weight.shape[0], -1)


class ConvWeightView:
    """A 2-D (GEMM-view) :class:`~polyquant.qtensor.QTensor` presented with its conv weight's shape.

    It exposes the read API the conv kernels use (``spec``, ``shape``, ``dtype``, ``device``,
    ``dequantize``, ``codes``, ``qparams``, ``tensors``, accounting) and forwards to :attr:`base`;
    ``dequantize``/``codes`` reshape the base's result. Storage stays the base's (no copy).

    Example:
        >>> import torch, polyquant.formats as formats
        >>> base = formats.get("int8").quantize(torch.randn(4, 27))
        >>> ConvWeightView(base, (4, 3, 3, 3)).dequantize().shape
        torch.Size([4, 3, 3, 3])
    """

    def __init__(self, base: QTensor, shape: tuple[int, ...]) -> None:
        if math.prod(shape) != base.numel or int(base.shape[0]) != shape[0]:
            raise FormatError(f"cannot view a quantized weight of shape {tuple(base.shape)} as {shape}")
        self.base = base
        self.shape = torch.Size(shape)

    spec = property(lambda self: self.base.spec, doc="The weight's format.")
    dtype = property(lambda self: self.base.dtype, doc="The original weight dtype.")
    device = property(lambda self: self.base.device, doc="Device of the stored tensors.")
    numel = property(lambda self: self.base.numel, doc="Number of logical elements.")
    nbytes = property(lambda self: self.base.nbytes, doc="Exact stored bytes.")
    bits_per_weight = property(lambda self: self.base.bits_per_weight, doc="Exact stored bits per element.")

    def dequantize(self, dtype: torch.dtype | None = None) -> Tensor:
        """The dense weight in the conv's shape."""
        return self.base.dequantize(dtype).reshape(self.shape)

    def codes(self) -> Tensor:
        """Unpacked codes in the conv's shape."""
        return self.base.codes().reshape(self.shape)

    def qparams(self) -> Any:
        """The base's quantization parameters (shaped for the GEMM view)."""
        return self.base.qparams()

    def tensors(self) -> dict[str, Tensor]:
        """The base's stored tensors."""
        return self.base.tensors()

    def to(self, device: torch.device | str) -> ConvWeightView:
        """The view over a copy of the base on ``device``."""
        return ConvWeightView(self.base.to(device), tuple(self.shape))

    def __repr__(self) -> str:
        return f"ConvWeightView({self.base!r}, shape={tuple(self.shape)})"


class QConvNd(QuantizedModule):
    """Common code of :class:`QConv1d` and :class:`QConv2d` (not used directly)."""

    _kernel_op = "conv"
    _dims = 0
    _float_cls: type[nn.Module] = nn.Module

    def __init__(
        self,
        weight: QTensor,
        conv_shape: tuple[int, ...],
        bias: Tensor | None = None,
        *,
        stride: tuple[int, ...] | int = 1,
        padding: tuple[int, ...] | int | str = 0,
        dilation: tuple[int, ...] | int = 1,
        groups: int = 1,
        act: ActivationSpec | None = None,
        act_scale: Tensor | float | None = None,
    ) -> None:
        super().__init__()
        conv_shape = tuple(int(s) for s in conv_shape)
        if len(conv_shape) != self._dims + 2:
            raise FormatError(f"{type(self).__name__} needs a {self._dims + 2}-D conv weight shape, got {conv_shape}")
        expected = (conv_shape[0], math.prod(conv_shape[1:]))
        if tuple(int(s) for s in weight.shape) != expected:
            raise FormatError(
                f"{type(self).__name__}: the quantized weight must be the conv's GEMM view {expected}, "
                f"got {tuple(weight.shape)}"
            )
        self.out_channels = conv_shape[0]
        self.in_channels = conv_shape[1] * groups
        self.kernel_size = conv_shape[2:]
        self.conv_shape = conv_shape
        self.stride = _tuple(stride, self._dims)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, self._dims)
        self.dilation = _tuple(dilation, self._dims)
        self.groups = int(groups)
        self._conv_view: ConvWeightView | None = None
        if bias is not None and tuple(bias.shape) != (self.out_channels,):
            raise FormatError(
                f"{type(self).__name__} bias must have shape ({self.out_channels},), got {tuple(bias.shape)}"
            )
        self._init_quantized(weight, bias, act, act_scale)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        spec: FormatSpec | str,
        *,
        quantizer: Quantizer | None = None,
        act: ActivationSpec | None = None,
        act_scale: Tensor | float | None = None,
        stats: Mapping[str, Tensor] | None = None,
    ) -> Any:
        """Quantize a ``nn.Conv1d`` / ``nn.Conv2d`` on its GEMM view (see the module docstring).

        Raises:
            FormatError: unsupported padding mode, or a group size that does not divide the reduction size.
        """
        if not isinstance(conv, cls._float_cls):
            raise TypeError(
                f"{cls.__name__}.from_conv expects an nn.{cls._float_cls.__name__}, got {type(conv).__name__}"
            )
        assert isinstance(conv, (nn.Conv1d, nn.Conv2d))
        if conv.padding_mode != "zeros":
            raise FormatError(f"padding_mode={conv.padding_mode!r} is not supported by quantized convs; only 'zeros'")
        spec = resolve_spec(spec)
        weight = conv.weight.detach()
        view = conv_gemm_view(weight)
        if spec.granularity.kind == "group" and view.shape[1] % spec.granularity.group_size:
            k = int(view.shape[1])
            works = [g for g in (128, 64, 32, 16, 8, 4, 2) if k % g == 0]
            raise FormatError(
                f"conv weight {tuple(weight.shape)} has a reduction size of in_channels/groups·kernel = {k}, "
                f"not divisible by group size {spec.granularity.group_size}; use per-channel scales (group_size: 0)"
                + (f" or a group size of {', '.join(map(str, works))}" if works else "")
                + ", or exclude this module"
            )
        from polyquant.quantizers.rtn import RTNQuantizer

        quantizer = quantizer or RTNQuantizer()
        qweight = quantizer.quantize_weight(view, spec, stats=stats)
        return cls(
            qweight,
            tuple(weight.shape),
            conv.bias,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            act=act,
            act_scale=act_scale,
        )

    def conv_weight(self) -> ConvWeightView:
        """The quantized weight viewed with the conv's shape (what the conv kernels receive).

        The same view object is returned while the weight is unchanged, so the kernels' per-weight
        memo (selection, repacking) stays valid between calls.
        """
        weight = self.weight
        view = self._conv_view
        if view is None or view.base is not weight:
            view = self._conv_view = ConvWeightView(weight, self.conv_shape)
        return view

    def kernel_context(self, batch: int | None = 1, dtype: torch.dtype | None = None) -> KernelContext:
        """The conv :class:`~polyquant.plugins.KernelContext` (``batch`` = number of input samples)."""
        view = self.conv_weight()  # duck-typed QTensor, see ConvWeightView
        return dataclasses.replace(super().kernel_context(batch, dtype), weight=view)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        """``polyquant.kernels.conv(x, weight, bias, stride=..., padding=..., ...)``."""
        return kernels.conv(
            x,
            self.conv_weight(),  # type: ignore[arg-type]  # duck-typed QTensor (see ConvWeightView)
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            act=self.act,
            act_scale=self.act_scale,
            cache=self._kernel_cache,
        )

    def dequantized_weight(self) -> Tensor:
        """The dense conv weight ``(out, in / groups, *kernel)``."""
        return self.conv_weight().dequantize()

    def extra_repr(self) -> str:
        """Conv geometry, format, bits/weight, activations and the kernel dispatch picks."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"{self._describe()}"
        )


def _tuple(value: tuple[int, ...] | int, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


class QConv1d(QConvNd):
    """``nn.Conv1d`` with a quantized weight (Mamba's depthwise conv, audio/protein convs).

    Example:
        >>> import torch
        >>> depthwise = torch.nn.Conv1d(64, 64, 4, groups=64, padding=3)
        >>> QConv1d.from_conv(depthwise, "int8")(torch.randn(1, 64, 10)).shape
        torch.Size([1, 64, 13])
    """

    _dims = 1
    _float_cls = nn.Conv1d


class QConv2d(QConvNd):
    """``nn.Conv2d`` with a quantized weight (UNets, CNN backbones, patch embeddings).

    Example:
        >>> import torch
        >>> QConv2d.from_conv(torch.nn.Conv2d(3, 8, 3), "int8")(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 8, 6, 6])
    """

    _dims = 2
    _float_cls = nn.Conv2d

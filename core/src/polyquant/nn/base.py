"""Shared machinery of quantized modules: the weight as buffers, activation settings, the kernel cache.

Buffer naming (checkpoints rely on it): the tensors of the weight's
:meth:`~polyquant.qtensor.QTensor.tensors` are registered as buffers named ``weight_<key>`` — for example
``weight_packed``, ``weight_scale``, ``weight_zero`` — and the JSON-able
:meth:`~polyquant.qtensor.QTensor.metadata` is kept on the module (:attr:`QuantizedModule.weight_metadata`).
Because the weight lives in buffers, ``module.to(...)``, ``state_dict()``/``load_state_dict()`` and
accelerate's offloading hooks (which swap buffers in and out) work unchanged; ``module.weight`` rebuilds
the :class:`~polyquant.qtensor.QTensor` view from the current buffers whenever they were replaced.

A static activation scale is the buffer ``act_scale`` (a 0-d float32 tensor), absent (``None``) for
weight-only and dynamic modules. The bias stays a ``Parameter`` in its original dtype.

The private ``_kernel_cache`` dict is handed to the kernels (``cache=``) so a kernel can keep repacked
weights; it is emptied whenever the weight's buffers are replaced, moved or loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, PolyquantError
from polyquant.plugins.records import KernelContext

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec
    from polyquant.plugins.records import KernelSpec
    from polyquant.qtensor import QTensor

__all__ = ["WEIGHT_PREFIX", "QuantizedModule"]

#: Prefix of the buffers holding the quantized weight's tensors.
WEIGHT_PREFIX = "weight_"


class QuantizedModule(nn.Module):
    """Base class of :class:`~polyquant.nn.QLinear`, :class:`~polyquant.nn.QConv1d`, ... (not used directly).

    Subclasses call :meth:`_init_quantized` from ``__init__``, implement ``forward``, and set
    ``_kernel_op`` to the kernel op their forward runs (for :meth:`kernel_context`).
    """

    _kernel_op = "linear"
    bias: nn.Parameter | None
    act: ActivationSpec | None
    act_scale: Tensor | None

    def _init_quantized(
        self, weight: QTensor, bias: Tensor | None, act: ActivationSpec | None, act_scale: Tensor | float | None
    ) -> None:
        self._weight_keys: tuple[str, ...] = ()
        self._view: QTensor | None = None
        self._view_ids: tuple[int, ...] = ()
        self._kernel_cache: dict[str, Any] = {}
        self.weight_metadata: dict[str, Any] = {}
        self.weight = weight
        if bias is not None and not isinstance(bias, nn.Parameter):
            bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.register_parameter("bias", bias)
        self.set_activations(act, act_scale)

    # ---------------------------------------------------------------------------------------- weight
    @property
    def weight(self) -> QTensor:
        """The quantized weight, a view over the module's ``weight_*`` buffers."""
        tensors = {key: self._buffers[WEIGHT_PREFIX + key] for key in self._weight_keys}
        ids = tuple(id(t) for t in tensors.values())
        if self._view is None or ids != self._view_ids:
            from polyquant.qtensor import QTensor

            self._view = QTensor.from_tensors({k: v for k, v in tensors.items() if v is not None}, self.weight_metadata)
            self._view_ids = ids
            self._kernel_cache.clear()
        return self._view

    @weight.setter
    def weight(self, value: QTensor) -> None:
        from polyquant.qtensor import QTensor

        if not isinstance(value, QTensor):
            raise TypeError(f"{type(self).__name__}.weight must be a QTensor, got {type(value).__name__}")
        for key in self._weight_keys:
            del self._buffers[WEIGHT_PREFIX + key]
        tensors = value.tensors()
        for key, tensor in tensors.items():
            self.register_buffer(WEIGHT_PREFIX + key, tensor)
        self._weight_keys = tuple(tensors)
        self.weight_metadata = dict(value.metadata())
        self._view, self._view_ids = value, tuple(id(t) for t in tensors.values())
        self._kernel_cache.clear()

    @property
    def spec(self) -> FormatSpec:
        """The weight's format."""
        return self.weight.spec

    def dequantized_weight(self) -> Tensor:
        """The dense weight in the original module's shape (for error reports and tests)."""
        return self.weight.dequantize()

    # ---------------------------------------------------------------------------------------- activations
    def set_activations(self, act: ActivationSpec | None, act_scale: Tensor | float | None = None) -> None:
        """Set (or clear, with ``None``) activation quantization and the static scale it needs.

        Raises:
            CalibrationError: a static spec without a positive finite ``act_scale``.
        """
        if act is not None and not isinstance(act, ActivationSpec):
            raise TypeError(f"act must be an ActivationSpec or None, got {type(act).__name__}")
        scale: Tensor | None = None
        if act is not None and not act.dynamic:
            if act_scale is None:
                raise CalibrationError(
                    f"{type(self).__name__}: static activations ({act.name}) need act_scale; calibrate with "
                    "polyquant.quantize(model, recipe, calibration=...) or use dynamic activations"
                )
            scale = torch.as_tensor(act_scale, dtype=torch.float32).detach().clone()
            if scale.numel() != 1:
                raise CalibrationError(
                    f"{type(self).__name__}: static activation scales are per tensor (one value), "
                    f"got shape {tuple(scale.shape)}"
                )
            scale = scale.reshape(())
            if not bool(torch.isfinite(scale)) or float(scale) <= 0:
                raise CalibrationError(
                    f"{type(self).__name__}: act_scale must be positive and finite, got {float(scale)}"
                )
            scale = scale.to(self.weight.device)
        self.act = act
        self.register_buffer("act_scale", scale)

    # ---------------------------------------------------------------------------------------- kernels
    def kernel_context(self, batch: int | None = 1, dtype: torch.dtype | None = None) -> KernelContext:
        """The :class:`~polyquant.plugins.KernelContext` of a call with ``batch`` input rows."""
        weight = self.weight
        return KernelContext(
            op=self._kernel_op,
            format=weight.spec.name,
            device=weight.device.type,
            dtype=dtype or weight.dtype,
            weight=weight,
            act_format=None if self.act is None else self.act.format,
            batch=batch,
        )

    def selected_kernel(self, batch: int | None = 1, dtype: torch.dtype | None = None) -> KernelSpec:
        """The kernel dispatch picks for a call with ``batch`` rows (see ``polyquant.kernels.explain``)."""
        from polyquant.kernels import select_kernel

        return select_kernel(self.kernel_context(batch, dtype))

    def _describe(self) -> str:
        weight = self.weight
        try:
            kernel = self.selected_kernel().name
        except PolyquantError:
            kernel = "none"
        act = "none" if self.act is None else self.act.name
        return (
            f"format={weight.spec.name}, granularity={weight.spec.granularity}, "
            f"bits/weight={weight.bits_per_weight:.3f}, act={act}, kernel={kernel}"
        )

    # ---------------------------------------------------------------------------------------- torch hooks
    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> QuantizedModule:
        """Move every tensor, but never cast the stored weight tensors or ``act_scale``.

        Device moves apply to every tensor. Dtype casts (``.half()``, ``.to(torch.bfloat16)``) leave the
        stored codes, scales and ``act_scale`` as they are (their dtypes are part of the format) and
        become the weight's logical dtype instead: what it dequantizes to.
        """
        keys = [WEIGHT_PREFIX + k for k in self._weight_keys] + ["act_scale"]
        stored = {k: self._buffers.get(k) for k in keys}
        logical = self.weight_metadata.get("dtype")
        module = super()._apply(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        for key, old in stored.items():
            new = self._buffers.get(key)
            if old is not None and new is not None and new.dtype != old.dtype:
                self._buffers[key] = old.to(device=new.device)
        if isinstance(logical, str):
            probe = fn(torch.empty(0, dtype=getattr(torch, logical)))
            if isinstance(probe, Tensor) and probe.is_floating_point():
                self.weight_metadata = {**self.weight_metadata, "dtype": str(probe.dtype).removeprefix("torch.")}
                self._view = None
        self._kernel_cache.clear()
        return module  # type: ignore[no-any-return]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._kernel_cache.clear()

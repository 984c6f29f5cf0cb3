"""The kernel ops, defined once, with their pure-PyTorch reference implementations.

Every op that a kernel can implement has a reference here. The references define the op's semantics:
a fast kernel is correct when it matches its op's reference within the tolerance of its arithmetic
(see ``kernels/tests`` for the conformance suite). References are registered by the core's own plugin
as kernels named ``"reference"`` (backend ``"reference"``, every format, every device, priority ``-100``),
so dispatch always has a fallback.

Semantics shared by all ops:

* The quantized weight is a :class:`~polyquant.qtensor.QTensor`; ``dequant = (code_value − zero) · scale
  [· tensor_scale]`` as defined by its format.
* Math runs in float32 for float16/bfloat16 inputs (float32 and float64 inputs keep their dtype); the
  output has the input's dtype.
* With an :class:`~polyquant.activations.ActivationSpec`, the input is fake-quantized first: scales are
  computed from the input (``dynamic=True``) or taken from ``act_scale`` (static, per tensor).
  ``"token"`` granularity means one scale per row of the flattened input for ``linear`` and one scale per
  spatial position (across channels) for ``conv``.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("int8").quantize(torch.randn(16, 32))
    >>> linear_reference(torch.randn(4, 32), qt).shape
    torch.Size([4, 16])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from polyquant.activations import ActivationSpec
from polyquant.errors import CalibrationError, KernelError, RecipeError
from polyquant.plugins.records import KernelSpec

if TYPE_CHECKING:
    from polyquant.qtensor import QTensor

__all__ = [
    "REFERENCE_PRIORITY",
    "activation_qparams",
    "compute_dtype",
    "conv_reference",
    "dequantize_reference",
    "fake_quantize_activation",
    "linear_reference",
    "quantize_activation_reference",
    "reference_kernel",
    "reference_kernels",
]

#: Priority of the reference kernels: any other capable kernel wins over them.
REFERENCE_PRIORITY = -100

_FP8_DTYPES: dict[str, torch.dtype] = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
_INT_RANGES: dict[str, tuple[int, int]] = {"int8": (-128, 127), "int4": (-8, 7)}
_HALF_DTYPES = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------- helpers
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype reference math runs in for inputs of ``dtype``: float32 for float16/bfloat16, else ``dtype``.

    Example:
        >>> compute_dtype(torch.bfloat16)
        torch.float32
    """
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _check_input(x: torch.Tensor, op: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise KernelError(f"{op}: the input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise KernelError(
            f"{op}: the input must be a floating-point tensor, got dtype {x.dtype}; convert it with x.float()"
        )


def _check_weight(x: torch.Tensor, weight: QTensor, op: str, ranks: tuple[int, ...]) -> None:
    shape = tuple(weight.shape)
    if len(shape) not in ranks:
        allowed = " or ".join(f"{r}-D" for r in ranks)
        raise KernelError(
            f"{op}: the quantized weight must be {allowed}, got shape {shape}; quantize the module's weight"
        )
    if weight.device.type != x.device.type:
        raise KernelError(
            f"{op}: input is on {x.device} but the quantized weight is on {weight.device}; "
            f"move the module with module.to({str(x.device)!r})"
        )


# ------------------------------------------------------------------------------------- activations
def activation_qparams(
    x: torch.Tensor, act: ActivationSpec, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point for asymmetric integer formats) that quantize ``x`` under ``act``.

    Scales broadcast against ``x``: shape ``(*x.shape[:-1], 1)`` for ``"token"`` granularity, ``()`` for
    ``"tensor"``. Rows that are all zero get scale 1 (their codes are 0). The zero point is integer-valued
    float32 in ``[qmin, qmax]``; it is ``None`` for symmetric specs and for fp8 formats.

    Args:
        x: activations; the last axis is the one a token's scale spans.
        act: the activation settings.
        scale: the calibrated scale of a static spec (``act.dynamic`` false); ignored when dynamic.

    Returns:
        ``(scale, zero)`` as float32 tensors (``zero`` may be ``None``).

    Raises:
        CalibrationError: a static spec without a (positive, finite, scalar) scale.
        RecipeError: a static asymmetric spec (static scales carry no zero point).

    Example:
        >>> s, z = activation_qparams(torch.tensor([[1.0, -2.0]]), ActivationSpec("int8"))
        >>> round(s.item() * 127, 4), z
        (2.0, None)
    """
    xf = x.detach().float()
    if not act.dynamic:
        if not act.symmetric:
            raise RecipeError("activations.symmetric: static activation scales are symmetric only; set symmetric: true")
        return _static_scale(scale, act).to(xf.device), None
    keep = act.granularity == "token"
    if xf.numel() == 0:  # nothing to measure: unit scales of the right shape
        shape = (*xf.shape[:-1], 1) if keep and xf.dim() else ()
        ones = torch.ones(shape, device=xf.device)
        return ones, None if act.symmetric or act.format in _FP8_DTYPES else torch.zeros_like(ones)
    reduce_dims: tuple[int, ...] = (-1,) if keep else tuple(range(xf.dim()))
    if act.format in _FP8_DTYPES or act.symmetric:
        amax = xf.abs().amax(dim=reduce_dims, keepdim=keep)
        s = amax / _max_code(act.format)
        return torch.where(s > 0, s, torch.ones_like(s)), None
    qmin, qmax = _INT_RANGES[act.format]
    lo = xf.amin(dim=reduce_dims, keepdim=keep).clamp(max=0.0)
    hi = xf.amax(dim=reduce_dims, keepdim=keep).clamp(min=0.0)
    s = (hi - lo) / (qmax - qmin)
    s = torch.where(s > 0, s, torch.ones_like(s))
    zero = torch.round(qmin - lo / s).clamp(qmin, qmax)
    return s, zero


def _max_code(fmt: str) -> float:
    if fmt in _FP8_DTYPES:
        return float(torch.finfo(_FP8_DTYPES[fmt]).max)
    return float(_INT_RANGES[fmt][1])


def _static_scale(scale: torch.Tensor | None, act: ActivationSpec) -> torch.Tensor:
    if scale is None:
        raise CalibrationError(
            f"activation format {act.name} is static but no calibrated scale was given; calibrate the model "
            "(polyquant.quantize(model, recipe, calibration=...)) or use dynamic activations (dynamic: true)"
        )
    s = torch.as_tensor(scale).detach().float()
    if s.numel() != 1:
        raise CalibrationError(
            f"static activation scales are per tensor: expected one value, got shape {tuple(s.shape)}"
        )
    s = s.reshape(())
    if not bool(torch.isfinite(s)) or float(s) <= 0:
        raise CalibrationError(
            f"static activation scale must be positive and finite, got {float(s)}; re-run calibration"
        )
    return s


def quantize_activation_reference(
    x: torch.Tensor, act: ActivationSpec, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize activations: returns ``(codes, scale)`` with ``codes · scale ≈ x``.

    ``codes`` is a float32 tensor of ``x``'s shape holding values on the format's grid: integers in
    ``[qmin, qmax]`` for symmetric integer formats, ``q − zero`` (still integers) for asymmetric ones, and
    values representable in the fp8 format (round to nearest even, saturating) for fp8. ``scale`` is the
    float32 scale from :func:`activation_qparams` (the given ``scale`` for static specs).

    Example:
        >>> codes, s = quantize_activation_reference(torch.tensor([[0.5, -1.0]]), ActivationSpec("int8"))
        >>> codes.tolist()
        [[64.0, -127.0]]
    """
    _check_input(x, "quantize_activation")
    s, zero = activation_qparams(x, act, scale)
    xf = x.detach().float()
    if act.format in _FP8_DTYPES:
        fmax = _max_code(act.format)
        codes = (xf / s).clamp(-fmax, fmax).to(_FP8_DTYPES[act.format]).float()
        return codes, s
    qmin, qmax = _INT_RANGES[act.format]
    if zero is None:
        return torch.round(xf / s).clamp(qmin, qmax), s
    return torch.round(xf / s + zero).clamp(qmin, qmax) - zero, s


def fake_quantize_activation(x: torch.Tensor, act: ActivationSpec, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``codes · scale`` of :func:`quantize_activation_reference`, in float32 (x's shape).

    Example:
        >>> fake_quantize_activation(torch.tensor([1.0, 0.3]), ActivationSpec("int8", granularity="tensor"))
        tensor([1.0000, 0.2992])
    """
    codes, s = quantize_activation_reference(x, act, scale)
    return codes * s


def _fake_quantize_channels_first(x: torch.Tensor, act: ActivationSpec, scale: torch.Tensor | None) -> torch.Tensor:
    """Fake-quantize a conv input ``(B, C, ...)``: a "token" is one position's vector of channels."""
    moved = x.movedim(1, -1)
    return fake_quantize_activation(moved, act, scale).movedim(-1, 1)


# -------------------------------------------------------------------------------------------- ops
def dequantize_reference(weight: QTensor, dtype: torch.dtype | None = None, *, prepared: Any = None) -> torch.Tensor:
    """Dense tensor of ``weight`` (``dtype`` defaults to the dtype the weight was quantized from).

    Args:
        weight: the quantized tensor.
        dtype: the output dtype.
        prepared: unused (the reference needs no repacking).

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(8, 8))
        >>> dequantize_reference(qt, torch.float16).dtype
        torch.float16
    """
    return weight.dequantize(dtype)


def linear_reference(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Any = None,
) -> torch.Tensor:
    """``F.linear`` with a quantized ``(out_features, in_features)`` weight (and optionally quantized input).

    Args:
        x: input ``(..., in_features)``, floating point.
        weight: quantized weight of shape ``(out_features, in_features)``.
        bias: optional ``(out_features,)`` bias.
        act: quantize the input with these settings first (``None``: weight-only).
        act_scale: calibrated per-tensor input scale for static ``act``.
        prepared: unused (the reference needs no repacking).

    Returns:
        ``(..., out_features)`` in ``x.dtype``.

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int4").with_options(group_size=32).quantize(torch.randn(16, 64))
        >>> linear_reference(torch.randn(2, 64), qt).shape
        torch.Size([2, 16])
    """
    _check_input(x, "linear")
    _check_weight(x, weight, "linear", (2,))
    in_features = int(weight.shape[-1])
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise KernelError(
            f"linear: input has shape {tuple(x.shape)} but the weight expects {in_features} input features in the last "
            "axis; check the layer the input is fed to"
        )
    dtype = compute_dtype(x.dtype)
    w = weight.dequantize(dtype)
    inp = x.to(dtype) if act is None else fake_quantize_activation(x, act, act_scale).to(dtype)
    y = F.linear(inp, w, None if bias is None else bias.to(dtype))
    return y.to(x.dtype)


def conv_reference(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: int | str | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    prepared: Any = None,
) -> torch.Tensor:
    """1-D or 2-D convolution with a quantized weight (the weight's rank picks ``conv1d`` or ``conv2d``).

    Args:
        x: input ``(B, C_in, L)`` or ``(B, C_in, H, W)`` (unbatched inputs are accepted as by torch).
        weight: quantized weight ``(C_out, C_in / groups, k)`` or ``(C_out, C_in / groups, kh, kw)``.
        bias: optional ``(C_out,)`` bias.
        stride: as in :func:`torch.nn.functional.conv2d`.
        padding: as in :func:`torch.nn.functional.conv2d`.
        dilation: as in :func:`torch.nn.functional.conv2d`.
        groups: as in :func:`torch.nn.functional.conv2d`.
        act: quantize the input first; ``"token"`` scales span the channels of one position.
        act_scale: calibrated per-tensor input scale for static ``act``.
        prepared: unused (the reference needs no repacking).

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(4, 3, 3, 3))
        >>> conv_reference(torch.randn(1, 3, 8, 8), qt, padding=1).shape
        torch.Size([1, 4, 8, 8])
    """
    _check_input(x, "conv")
    _check_weight(x, weight, "conv", (3, 4))
    conv = F.conv1d if len(weight.shape) == 3 else F.conv2d
    dtype = compute_dtype(x.dtype)
    w = weight.dequantize(dtype)
    if act is None:
        inp = x.to(dtype)
    else:
        batched = x if x.dim() == len(weight.shape) else x.unsqueeze(0)
        inp = _fake_quantize_channels_first(batched, act, act_scale).to(dtype)
        inp = inp if x.dim() == len(weight.shape) else inp.squeeze(0)
    b = None if bias is None else bias.to(dtype)
    try:
        y = conv(inp, w, b, stride, padding, dilation, groups)
    except RuntimeError as exc:
        raise KernelError(
            f"conv: {exc}; check the input shape {tuple(x.shape)} against the weight {tuple(weight.shape)}"
        ) from exc
    return y.to(x.dtype)


# ------------------------------------------------------------------------------------------ records
_REFERENCE_FNS: dict[str, tuple[Any, str]] = {
    "linear": (linear_reference, "dequantize + F.linear in float32 (any format, any device)"),
    "conv": (conv_reference, "dequantize + F.conv1d/F.conv2d in float32 (any format, any device)"),
    "dequantize": (dequantize_reference, "QTensor.dequantize (any format, any device)"),
    "quantize_activation": (quantize_activation_reference, "round-to-nearest activation quantization in float32"),
}


def reference_kernel(op: str) -> KernelSpec:
    """The reference :class:`~polyquant.plugins.KernelSpec` of ``op``.

    Raises:
        KernelError: ``op`` has no reference implementation.

    Example:
        >>> reference_kernel("linear").priority
        -100
    """
    if op not in _REFERENCE_FNS:
        raise KernelError(f"op {op!r} has no reference implementation; ops with one: {', '.join(_REFERENCE_FNS)}")
    fn, description = _REFERENCE_FNS[op]
    return KernelSpec(
        op=op,
        name="reference",
        formats=("*",),
        device="*",
        backend="reference",
        fn=fn,
        priority=REFERENCE_PRIORITY,
        description=description,
    )


def reference_kernels() -> list[KernelSpec]:
    """One ``"reference"`` kernel per op (registered by the core's own plugin).

    Example:
        >>> sorted(k.op for k in reference_kernels())
        ['conv', 'dequantize', 'linear', 'quantize_activation']
    """
    return [reference_kernel(op) for op in _REFERENCE_FNS]

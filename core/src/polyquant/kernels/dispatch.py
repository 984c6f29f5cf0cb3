"""Kernel dispatch: pick the kernel that runs an op for a given call, explain the choice, override it.

Kernels are :class:`~polyquant.plugins.KernelSpec` records contributed through the
``polyquant_register_kernels`` hook (the core registers the references; ``polyquant-kernels`` adds fast
CPU and Triton kernels). For a call site described by a :class:`~polyquant.plugins.KernelContext`, the
selected kernel is the highest-priority one that

1. handles the weight format (``formats`` contains it or ``"*"``),
2. runs on the device (``device`` equals the input's device type, or ``"*"``),
3. is available on this machine (``available()`` returns ``None``; checked once per kernel), and
4. supports this call (``supports(ctx)`` returns ``None``).

The op's reference kernel accepts every call, so selection never fails unless a kernel is forced.
Overrides force a kernel by name, per op: ``with polyquant.kernels.use(linear="reference"): ...`` (local to
the thread / asyncio task) or the environment variable ``POLYQUANT_KERNELS="linear=reference,conv=reference"``
(read at call time; ``use`` wins over it). A forced kernel that cannot run raises
:class:`~polyquant.errors.KernelError` naming why and which kernels could run instead.

The op entry points (:func:`linear`, :func:`conv`, :func:`dequantize`, :func:`quantize_activation`) take a
``cache`` dict owned by the calling module: the selection is memoized per (device, dtype, batch bucket,
activation format, overrides) and each kernel's ``prepare(weight)`` (repacking) runs once per weight. The
memo is dropped when the weight object or the plugin registries change.

Example:
    >>> import torch, polyquant
    >>> qt = polyquant.formats.get("int4").with_options(group_size=32).quantize(torch.randn(32, 64))
    >>> cache: dict = {}
    >>> y = linear(torch.randn(3, 64), qt, cache=cache)
    >>> with use(linear="reference"):
    ...     y_ref = linear(torch.randn(3, 64), qt)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

from polyquant.errors import KernelError
from polyquant.kernels import ops
from polyquant.plugins.manager import get_plugin_manager
from polyquant.plugins.records import KERNEL_OPS, KernelContext, KernelSpec

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.qtensor import QTensor

__all__ = [
    "OVERRIDE_ENV",
    "KernelChoice",
    "active_overrides",
    "candidate_kernels",
    "conv",
    "dequantize",
    "explain",
    "kernel_availability",
    "linear",
    "quantize_activation",
    "select_kernel",
    "use",
]

#: Environment variable with per-op kernel overrides: ``"linear=reference,conv=reference"``.
OVERRIDE_ENV = "POLYQUANT_KERNELS"
#: Override value that restores automatic selection (useful inside an outer override).
AUTO = "auto"

_CONTEXT_OVERRIDES: ContextVar[Mapping[str, str]] = ContextVar(
    "polyquant_kernel_overrides", default=MappingProxyType({})
)
_ENV_CACHE: dict[str, dict[str, str]] = {}
_AVAILABILITY: dict[int, tuple[KernelSpec, str | None]] = {}
_CACHE_KEY = "polyquant.kernels.dispatch"


@dataclass(frozen=True)
class KernelChoice:
    """One line of :func:`explain`: a kernel and why it was or was not selected.

    Attributes:
        kernel: the kernel considered.
        selected: whether dispatch runs this kernel for the call.
        reason: ``"selected"``, ``"lower priority than <name>"``, ``"format not handled (...)"``,
            ``"device cuda != cpu"``, ``"unavailable: <why>"``, ``"unsupported: <why>"`` or
            ``"disabled by override (...)"``.

    Example:
        >>> ctx = KernelContext(op="linear", format="int4", device="cpu", dtype=torch.float32)
        >>> [c.reason for c in explain("linear", ctx) if c.selected]
        ['selected']
    """

    kernel: KernelSpec
    selected: bool
    reason: str

    @property
    def name(self) -> str:
        """The kernel's name."""
        return self.kernel.name


# ---------------------------------------------------------------------------------------- overrides
def _parse_env(value: str) -> dict[str, str]:
    """``op -> kernel`` pairs of ``POLYQUANT_KERNELS`` (the last parsed value is remembered)."""
    if value in _ENV_CACHE:
        return _ENV_CACHE[value]
    parsed: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        op, sep, name = (part.strip() for part in item.partition("="))
        if not sep or not op or not name:
            raise KernelError(
                f"{OVERRIDE_ENV}={value!r}: cannot parse {item.strip()!r}; write op=kernel pairs separated by commas, "
                f"e.g. {OVERRIDE_ENV}=linear=reference,conv=reference"
            )
        _check_op(op, f"{OVERRIDE_ENV}={value!r}")
        parsed[op] = name
    _ENV_CACHE.clear()
    _ENV_CACHE[value] = parsed
    return parsed


def _check_op(op: str, where: str) -> None:
    if op not in KERNEL_OPS:
        raise KernelError(f"{where}: unknown op {op!r}; known ops: {', '.join(KERNEL_OPS)}")


def active_overrides() -> dict[str, str]:
    """The kernel overrides in effect here: ``POLYQUANT_KERNELS`` overlaid with enclosing :func:`use` blocks.

    Ops mapped to ``"auto"`` are left out (automatic selection).

    Example:
        >>> with use(linear="reference"):
        ...     active_overrides()
        {'linear': 'reference'}
    """
    merged = dict(_parse_env(os.environ.get(OVERRIDE_ENV, "")))
    merged.update(_CONTEXT_OVERRIDES.get())
    return {op: name for op, name in merged.items() if name != AUTO}


@contextmanager
def use(**op_to_kernel: str) -> Iterator[None]:
    """Force kernels by name, per op, inside a ``with`` block (local to the thread / asyncio task).

    Nested blocks override outer ones op by op; ``"auto"`` restores automatic selection for an op.
    Forcing a kernel that cannot run a call raises :class:`~polyquant.errors.KernelError` at that call.

    Args:
        **op_to_kernel: ``op=kernel_name`` pairs, e.g. ``linear="reference"``.

    Raises:
        KernelError: an unknown op or a non-string kernel name.

    Example:
        >>> with use(linear="reference", conv="reference"):
        ...     pass
    """
    for op, name in op_to_kernel.items():
        _check_op(op, "polyquant.kernels.use()")
        if not isinstance(name, str) or not name.strip():
            raise KernelError(
                f"polyquant.kernels.use({op}=...): the kernel name must be a non-empty string, got {name!r}"
            )
    merged = {**_CONTEXT_OVERRIDES.get(), **{op: name.strip() for op, name in op_to_kernel.items()}}
    token = _CONTEXT_OVERRIDES.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT_OVERRIDES.reset(token)


def _override_source(op: str) -> str:
    if op in _CONTEXT_OVERRIDES.get():
        return "polyquant.kernels.use()"
    return f"the environment variable {OVERRIDE_ENV}"


# ---------------------------------------------------------------------------------------- selection
def kernel_availability(kernel: KernelSpec) -> str | None:
    """Whether ``kernel`` can run on this machine: ``None`` when it can, else why not (checked once).

    A check that raises is reported as the reason instead of propagating.

    Example:
        >>> kernel_availability(ops.reference_kernel("linear")) is None
        True
    """
    cached = _AVAILABILITY.get(id(kernel))
    if cached is not None and cached[0] is kernel:
        return cached[1]
    reason: str | None = None
    if kernel.available is not None:
        try:
            reason = kernel.available()
        except Exception as exc:  # noqa: BLE001 - a broken check must not break dispatch
            reason = f"availability check raised {type(exc).__name__}: {exc}"
    _AVAILABILITY[id(kernel)] = (kernel, reason)
    return reason


def _unsupported(kernel: KernelSpec, ctx: KernelContext) -> str | None:
    if kernel.supports is None:
        return None
    try:
        return kernel.supports(ctx)
    except Exception as exc:  # noqa: BLE001 - a broken predicate rules its kernel out, nothing more
        return f"supports() raised {type(exc).__name__}: {exc}"


def _rejection(kernel: KernelSpec, ctx: KernelContext) -> str | None:
    """Why ``kernel`` cannot run ``ctx`` (``None`` when it can)."""
    if not kernel.handles(ctx.format):
        return f"format not handled ({ctx.format or 'no weight'!r} not in {', '.join(kernel.formats)})"
    if kernel.device not in ("*", ctx.device):
        return f"device {kernel.device} != {ctx.device}"
    unavailable = kernel_availability(kernel)
    if unavailable is not None:
        return f"unavailable: {unavailable}"
    unsupported = _unsupported(kernel, ctx)
    if unsupported is not None:
        return f"unsupported: {unsupported}"
    return None


def candidate_kernels(op: str) -> list[KernelSpec]:
    """Every kernel registered for ``op``, highest priority first, with the op's reference always present.

    Example:
        >>> candidate_kernels("linear")[-1].name
        'reference'
    """
    _check_op(op, "polyquant.kernels")
    kernels = list(get_plugin_manager().get_kernels(op))
    if not any(k.name == "reference" for k in kernels):
        with suppress(KernelError):  # an op without a reference (e.g. kv_attention) has only registered kernels
            kernels.append(ops.reference_kernel(op))
    return kernels


def explain(op: str, ctx: KernelContext) -> list[KernelChoice]:
    """Every kernel of ``op``, highest priority first, with whether it is selected for ``ctx`` and why.

    Unlike :func:`select_kernel`, this never raises for a forced kernel that cannot run: the forced
    kernel is listed unselected with its reason.

    Args:
        op: the op (``ctx.op`` is replaced by it).
        ctx: the call site.

    Example:
        >>> ctx = KernelContext(op="linear", format="nf4", device="cpu", dtype=torch.float32)
        >>> [(c.name, c.reason) for c in explain("linear", ctx)][-1]
        ('reference', 'selected')
    """
    ctx = ctx if ctx.op == op else replace(ctx, op=op)
    forced = active_overrides().get(op)
    choices: list[KernelChoice] = []
    winner: KernelSpec | None = None
    for kernel in candidate_kernels(op):
        if forced is not None and kernel.name != forced:
            choices.append(KernelChoice(kernel, False, f"disabled by override ({op}={forced})"))
            continue
        reason = _rejection(kernel, ctx)
        if reason is not None:
            choices.append(KernelChoice(kernel, False, reason))
        elif winner is not None:
            choices.append(KernelChoice(kernel, False, f"lower priority than {winner.name}"))
        else:
            winner = kernel
            choices.append(
                KernelChoice(kernel, True, "selected" if forced is None else f"selected (forced: {op}={forced})")
            )
    return choices


def select_kernel(ctx: KernelContext) -> KernelSpec:
    """The kernel that runs ``ctx``: the highest-priority capable one, or the forced one.

    Raises:
        KernelError: a forced kernel is unknown or cannot run this call (the message names the reason and
            the kernels that could), or no kernel of ``ctx.op`` can run it.

    Example:
        >>> ctx = KernelContext(op="linear", format="int8", device="cpu", dtype=torch.float32)
        >>> select_kernel(ctx).op
        'linear'
    """
    choices = explain(ctx.op, ctx)
    for choice in choices:
        if choice.selected:
            return choice.kernel
    forced = active_overrides().get(ctx.op)
    where = f"{ctx.op} ({ctx.format or 'no weight'} on {ctx.device}, {ctx.dtype})"
    if forced is None:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in choices) or "no kernels registered"
        raise KernelError(f"no kernel can run {where}: {reasons}. Install a plugin that provides one")
    capable = [k.name for k in candidate_kernels(ctx.op) if _rejection(k, ctx) is None]
    alternatives = ", ".join(capable) if capable else "none"
    source = _override_source(ctx.op)
    named = [c for c in choices if c.name == forced]
    if not named:
        known = ", ".join(c.name for c in choices)
        raise KernelError(
            f"{source} forces {ctx.op}={forced!r}, but no {ctx.op} kernel has that name; registered: {known}. "
            f"Fix the name or remove the override"
        )
    raise KernelError(
        f"{source} forces {ctx.op}={forced!r}, which cannot run {where}: {named[0].reason}. "
        f"Kernels that can: {alternatives}. Remove the override or force one of those"
    )


# ------------------------------------------------------------------------------------- memoization
def _batch_bucket(batch: int | None) -> int:
    """Power-of-two ceiling of the batch (``supports`` must agree within a bucket)."""
    if batch is None or batch <= 1:
        return -1 if batch is None else batch
    return 1 << (batch - 1).bit_length()


@dataclass
class _Memo:
    """Per-module dispatch state kept in the module's ``cache`` dict."""

    weight: Any
    registry: tuple[int, int]
    selections: dict[tuple[Any, ...], KernelSpec] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)


def _memo(cache: dict[str, Any], weight: Any) -> _Memo:
    pm = get_plugin_manager()
    registry = (id(pm), pm.generation)
    memo = cache.get(_CACHE_KEY)
    if not isinstance(memo, _Memo) or memo.weight is not weight or memo.registry != registry:
        memo = _Memo(weight=weight, registry=registry)
        cache[_CACHE_KEY] = memo
    return memo


def _resolve(ctx: KernelContext, weight: Any, cache: dict[str, Any] | None) -> tuple[KernelSpec, Any]:
    """The kernel for ``ctx`` and its prepared weight (memoized in ``cache`` when given)."""
    if cache is None:
        kernel = select_kernel(ctx)
        return kernel, _prepare(kernel, weight)
    memo = _memo(cache, weight)
    key = (
        ctx.op,
        ctx.format,
        ctx.device,
        ctx.dtype,
        ctx.act_format,
        _batch_bucket(ctx.batch),
        tuple(sorted(active_overrides().items())),
    )
    if key not in memo.selections:
        memo.selections[key] = select_kernel(ctx)
    kernel = memo.selections[key]
    if kernel.prepare is None or weight is None:
        return kernel, None
    if kernel.key not in memo.prepared:
        memo.prepared[kernel.key] = _prepare(kernel, weight)
    return kernel, memo.prepared[kernel.key]


def _prepare(kernel: KernelSpec, weight: Any) -> Any:
    if kernel.prepare is None or weight is None:
        return None
    with torch.no_grad():
        return kernel.prepare(weight)


def _rows(x: torch.Tensor) -> int:
    return int(x.numel() // x.shape[-1]) if x.dim() and x.shape[-1] else int(x.numel())


def _weight_format(weight: QTensor, op: str) -> str:
    spec = getattr(weight, "spec", None)
    name = getattr(spec, "name", None)
    if not isinstance(name, str):
        raise KernelError(
            f"{op}: the weight must be a polyquant QTensor, got {type(weight).__name__}; quantize the module first"
        )
    return name


# ------------------------------------------------------------------------------------------ the ops
def linear(
    x: torch.Tensor,
    weight: QTensor,
    bias: torch.Tensor | None = None,
    *,
    act: ActivationSpec | None = None,
    act_scale: torch.Tensor | None = None,
    cache: dict[str, Any] | None = None,
) -> torch.Tensor:
    """``y = x · dequant(weight)ᵀ + bias`` through the selected kernel (see :func:`ops.linear_reference`).

    Args:
        x: input ``(..., in_features)``.
        weight: quantized ``(out_features, in_features)`` weight.
        bias: optional bias.
        act: activation quantization (``None``: weight-only).
        act_scale: calibrated input scale for static ``act``.
        cache: the calling module's dict; memoizes the selection and the kernel's repacked weight.

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(16, 32))
        >>> linear(torch.randn(2, 32), qt).shape
        torch.Size([2, 16])
    """
    ctx = KernelContext(
        op="linear",
        format=_weight_format(weight, "linear"),
        device=x.device.type,
        dtype=x.dtype,
        weight=weight,
        act_format=None if act is None else act.format,
        batch=_rows(x),
    )
    kernel, prepared = _resolve(ctx, weight, cache)
    return kernel.fn(x, weight, bias, act=act, act_scale=act_scale, prepared=prepared)  # type: ignore[no-any-return]


def conv(
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
    cache: dict[str, Any] | None = None,
) -> torch.Tensor:
    """1-D/2-D convolution with a quantized weight through the selected kernel (see :func:`ops.conv_reference`).

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(4, 3, 3))
        >>> conv(torch.randn(1, 3, 10), qt).shape
        torch.Size([1, 4, 8])
    """
    ctx = KernelContext(
        op="conv",
        format=_weight_format(weight, "conv"),
        device=x.device.type,
        dtype=x.dtype,
        weight=weight,
        act_format=None if act is None else act.format,
        batch=int(x.shape[0]) if x.dim() == len(weight.shape) else 1,
    )
    kernel, prepared = _resolve(ctx, weight, cache)
    return kernel.fn(  # type: ignore[no-any-return]
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        act=act,
        act_scale=act_scale,
        prepared=prepared,
    )


def dequantize(
    weight: QTensor, dtype: torch.dtype | None = None, *, cache: dict[str, Any] | None = None
) -> torch.Tensor:
    """Dense tensor of ``weight`` through the selected kernel (see :func:`ops.dequantize_reference`).

    Example:
        >>> import polyquant
        >>> qt = polyquant.formats.get("int8").quantize(torch.randn(8, 8))
        >>> dequantize(qt).shape
        torch.Size([8, 8])
    """
    ctx = KernelContext(
        op="dequantize",
        format=_weight_format(weight, "dequantize"),
        device=weight.device.type,
        dtype=dtype if dtype is not None else weight.dtype,
        weight=weight,
    )
    kernel, prepared = _resolve(ctx, weight, cache)
    return kernel.fn(weight, dtype, prepared=prepared)  # type: ignore[no-any-return]


def quantize_activation(
    x: torch.Tensor, act: ActivationSpec, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scale)`` of ``x`` under ``act`` through the selected kernel.

    See :func:`ops.quantize_activation_reference` for the semantics.

    There is no weight: the kernel context's ``format`` and ``act_format`` are both ``act.format``, so a
    kernel declares the activation formats it quantizes in ``formats``.

    Example:
        >>> from polyquant.activations import ActivationSpec
        >>> codes, s = quantize_activation(torch.randn(4, 8), ActivationSpec("int8"))
        >>> s.shape
        torch.Size([4, 1])
    """
    ctx = KernelContext(
        op="quantize_activation",
        format=act.format,
        device=x.device.type,
        dtype=x.dtype,
        act_format=act.format,
        batch=_rows(x),
    )
    kernel = select_kernel(ctx)
    return kernel.fn(x, act, scale)  # type: ignore[no-any-return]

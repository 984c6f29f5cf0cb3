"""Typed records that plugins contribute through the registration hooks.

Every registration hook returns an iterable of one of these frozen dataclasses (tensor formats are
:class:`polyquant.formats.FormatSpec` records themselves). Records are plain data: a name, a
description and the callables or classes that implement the contribution. The plugin manager validates
each record (type, non-empty name, callable fields) before it enters a registry; a malformed record
marks the whole plugin as failed and nothing it contributed is used.

Example:
    >>> from polyquant.plugins import RecipePreset
    >>> RecipePreset(name="my-w4", recipe={"weights": {"format": "int4"}}, description="4-bit")
    RecipePreset(name='my-w4', ...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import click
    import torch

    from polyquant.qtensor import QTensor

__all__ = [
    "RECORD_KINDS",
    "AdapterInfo",
    "CalibrationSourceInfo",
    "CommandGroup",
    "EvaluatorInfo",
    "KVCacheFormatInfo",
    "KernelContext",
    "KernelSpec",
    "ModelAdapter",
    "QuantizerInfo",
    "RecipePreset",
    "TransformInfo",
]

#: The ops kernels can implement. Each has a pure-PyTorch reference in :mod:`polyquant.kernels.ops`.
KERNEL_OPS: tuple[str, ...] = ("linear", "conv", "dequantize", "quantize_activation", "kv_attention")


def _check_name(obj: Any) -> None:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name or name != name.strip():
        raise TypeError(
            f"{type(obj).__name__}.name must be a non-empty string without spaces at the ends, got {name!r}"
        )


@dataclass(frozen=True)
class QuantizerInfo:
    """A weight quantization algorithm (RTN, MSE clipping, GPTQ, ...).

    Attributes:
        name: registry key used in recipes (``method: <name>``).
        factory: called with the recipe's ``method_args`` as keyword arguments; returns an object
            implementing :class:`polyquant.quantizers.Quantizer`.
        description: one line for ``polyquant quantizers``.
        needs_calibration: whether the algorithm needs calibration data.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    needs_calibration: bool = False

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.factory):
            raise TypeError(f"QuantizerInfo {self.name!r}: factory must be callable")


@dataclass(frozen=True)
class KernelContext:
    """What a kernel's ``supports`` predicate sees for one call site.

    Attributes:
        op: the op name (one of :data:`KERNEL_OPS`).
        format: the weight format name (``""`` for ops without a quantized weight).
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: activation dtype.
        weight: the quantized weight, when the op has one.
        act_format: activation format name when activations are quantized, else ``None``.
        batch: number of rows of the flattened input (``None`` when unknown).
    """

    op: str
    format: str
    device: str
    dtype: torch.dtype
    weight: QTensor | None = None
    act_format: str | None = None
    batch: int | None = None


@dataclass(frozen=True)
class KernelSpec:
    """One implementation of an op for some formats on one device/backend.

    Attributes:
        op: the op implemented (one of :data:`KERNEL_OPS`).
        name: unique name within the op (``"cpu_int4pack"``).
        formats: weight format names handled; ``("*",)`` handles every format.
        device: device type (``"cpu"``, ``"cuda"``) or ``"*"``.
        backend: implementation family (``"reference"``, ``"aten"``, ``"triton"``, ...).
        fn: the implementation, with the same signature as the op's reference implementation.
        priority: higher wins among capable kernels; references use ``-100``.
        available: machine-level check, called once; returns ``None`` when usable or the reason it
            is not (e.g. ``"triton is not installed"``).
        supports: call-level check on a :class:`KernelContext`; ``None`` when supported, else why not.
        prepare: optional one-time weight repacking (e.g. to torch's int4 CPU layout); its result is
            cached by the calling module and passed to ``fn`` as ``prepared=``.
        description: one line for ``polyquant kernels``.
    """

    op: str
    name: str
    formats: tuple[str, ...]
    device: str
    backend: str
    fn: Callable[..., Any]
    priority: int = 0
    available: Callable[[], str | None] | None = None
    supports: Callable[[KernelContext], str | None] | None = None
    prepare: Callable[..., Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if self.op not in KERNEL_OPS:
            raise TypeError(f"KernelSpec {self.name!r}: unknown op {self.op!r}; known ops: {', '.join(KERNEL_OPS)}")
        if not isinstance(self.formats, tuple) or not self.formats or not all(isinstance(f, str) for f in self.formats):
            raise TypeError(f"KernelSpec {self.name!r}: formats must be a non-empty tuple of format names")
        for attr in ("fn",):
            if not callable(getattr(self, attr)):
                raise TypeError(f"KernelSpec {self.name!r}: {attr} must be callable")
        for attr in ("available", "supports", "prepare"):
            value = getattr(self, attr)
            if value is not None and not callable(value):
                raise TypeError(f"KernelSpec {self.name!r}: {attr} must be callable or None")

    @property
    def key(self) -> str:
        """Registry key: ``"<op>/<name>"``."""
        return f"{self.op}/{self.name}"

    def handles(self, fmt: str) -> bool:
        """Whether this kernel declares support for weight format ``fmt``."""
        return "*" in self.formats or fmt in self.formats


@runtime_checkable
class ModelAdapter(Protocol):
    """How polyquant understands one family of models.

    The generic adapter (:mod:`polyquant.adapters`) handles any ``nn.Module``; domain plugins refine it
    (decoder blocks, norm→linear groups for AWQ/SmoothQuant/rotations, what to keep in high precision).
    """

    name: str

    def matches(self, model: torch.nn.Module) -> bool:
        """Whether this adapter understands ``model``."""
        ...

    def blocks(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The sequential blocks calibration walks through, as ``(qualified name, module)``."""
        ...

    def default_exclude(self, model: torch.nn.Module) -> list[str]:
        """Glob patterns of module names kept in high precision by default (embeddings, heads, ...)."""
        ...


@dataclass(frozen=True)
class AdapterInfo:
    """A model adapter: architecture → structure the algorithms need.

    Attributes:
        name: registry key (``"generic"``, ``"llama"``, ...).
        factory: returns a :class:`ModelAdapter`.
        priority: among adapters whose ``matches`` is true, the highest priority wins.
        description: one line.
    """

    name: str
    factory: Callable[[], ModelAdapter]
    priority: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.factory):
            raise TypeError(f"AdapterInfo {self.name!r}: factory must be callable")


@dataclass(frozen=True)
class CalibrationSourceInfo:
    """A named source of calibration data.

    Attributes:
        name: registry key used in recipes and on the CLI (``--calib <name>:<arg>``).
        load: ``load(spec: str, **options) -> Iterable`` of model inputs.
        description: one line.
    """

    name: str
    load: Callable[..., Iterable[Any]]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.load):
            raise TypeError(f"CalibrationSourceInfo {self.name!r}: load must be callable")


@dataclass(frozen=True)
class EvaluatorInfo:
    """A named evaluation (perplexity, output error, ...).

    Attributes:
        name: registry key.
        evaluate: ``evaluate(model, data, **options) -> Mapping[str, float]``.
        description: one line.
    """

    name: str
    evaluate: Callable[..., Mapping[str, float]]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.evaluate):
            raise TypeError(f"EvaluatorInfo {self.name!r}: evaluate must be callable")


@dataclass(frozen=True)
class RecipePreset:
    """A named recipe (preset) such as ``w4a16-g128``.

    Attributes:
        name: preset name accepted wherever a recipe is.
        recipe: the recipe as a mapping (validated by :func:`polyquant.recipes.Recipe.from_dict`).
        description: one line for ``polyquant recipes``.
    """

    name: str
    recipe: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if not isinstance(self.recipe, Mapping):
            raise TypeError(f"RecipePreset {self.name!r}: recipe must be a mapping")


@dataclass(frozen=True)
class KVCacheFormatInfo:
    """A named KV-cache format (``turbo3-prod``, ``kivi2``, ``fp8_e4m3``, ...).

    Attributes:
        name: registry key used by :func:`polyquant.kvcache.get` and by recipes' ``kv_cache.format``.
        factory: called with the format's options as keyword arguments (``residual_length=64``, ...);
            returns a :class:`polyquant.kvcache.KVFormat`.
        description: one line.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.factory):
            raise TypeError(f"KVCacheFormatInfo {self.name!r}: factory must be callable")


@dataclass(frozen=True)
class TransformInfo:
    """A function-preserving model transform applied before quantization (``smoothquant``, ``hadamard``).

    Attributes:
        name: registry key used in recipes' ``transforms``.
        factory: called with the recipe's arguments for this transform as keyword arguments; returns an
            object with ``prepare_model(model, calibration, plan) -> notes``
            (:class:`polyquant.quantizers.protocol.ModelPreparer`).
        description: one line.
        needs_calibration: whether the transform needs calibration data.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    needs_calibration: bool = False

    def __post_init__(self) -> None:
        _check_name(self)
        if not callable(self.factory):
            raise TypeError(f"TransformInfo {self.name!r}: factory must be callable")


@dataclass(frozen=True)
class CommandGroup:
    """A CLI command (usually a ``click.Group``) mounted as ``polyquant <name>``.

    Attributes:
        name: the subcommand name (a plugin's domain, e.g. ``"llm"``).
        command: a ``click.Command`` or ``click.Group``.
        description: one line.
    """

    name: str
    command: click.Command
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self)
        import click

        if not isinstance(self.command, click.Command):
            raise TypeError(f"CommandGroup {self.name!r}: command must be a click.Command")


#: record kind → (hook name, record type name) — the single table the manager validates against.
RECORD_KINDS: dict[str, str] = {
    "format": "polyquant_register_formats",
    "quantizer": "polyquant_register_quantizers",
    "kernel": "polyquant_register_kernels",
    "adapter": "polyquant_register_adapters",
    "calibration_source": "polyquant_register_calibration_sources",
    "evaluator": "polyquant_register_evaluators",
    "recipe": "polyquant_register_recipes",
    "command": "polyquant_register_commands",
    "kv_format": "polyquant_register_kv_formats",
    "transform": "polyquant_register_transforms",
}

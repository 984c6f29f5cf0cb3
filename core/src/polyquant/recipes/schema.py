"""The recipe schema: what to quantize, to which format, with which algorithm.

A :class:`Recipe` is a frozen dataclass that can be written as a mapping, YAML, TOML or JSON::

    name: my-w4
    weights: {format: int4, group_size: 128, symmetric: false}
    activations: null                # or {format: int8, granularity: token, dynamic: true}
    method: mse                      # a registered quantizer: rtn, mse, ...
    method_args: {grid: 100}
    modules: [Linear, Conv1d]        # module types quantized (Linear, Conv1d, Conv2d, Embedding)
    include: ["*"]                   # glob patterns on qualified module names ("re:<regex>" for regexes)
    exclude: ["*.mlp.gate"]
    overrides:
      - {pattern: "*.down_proj", weights: {format: int8}}
      - {pattern: "*.o_proj", activations: null}   # weight-only for these
      - {pattern: "model.layers.0.*", skip: true}

Every field is validated on construction. A bad value raises :class:`~polyquant.errors.RecipeError` whose
message starts with the field path (``weights.format``, ``overrides[1].weights.group_size``) and lists the
allowed values (format names come from the format registry, methods from the quantizer registry).

Two fields are validated and stored but not applied by :func:`polyquant.quantize` in this version:
``kv_cache`` (KV-cache quantization happens at inference time, in runtime integrations and KV-cache
plugins that read it from the recipe; ``quantize`` notes it in its report) and ``transforms``
(rotations/smoothing; ``quantize`` raises a :class:`~polyquant.errors.RecipeError` for a recipe that
asks for any, rather than silently quantizing without them).

Example:
    >>> recipe = Recipe.from_dict({"weights": {"format": "int4", "group_size": 128}})
    >>> recipe.weights.group_size
    128
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

from polyquant.activations import ActivationSpec
from polyquant.errors import FormatError, RecipeError

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec

__all__ = [
    "KV_CACHE_FORMATS",
    "MODULE_TYPES",
    "KVCacheConfig",
    "Override",
    "Recipe",
    "WeightConfig",
    "resolve",
]

#: Module types a recipe can quantize (``Recipe.modules``).
MODULE_TYPES: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d", "Embedding")

#: The core's built-in KV-cache formats (:mod:`polyquant.kvcache`). ``kv_cache.format`` is validated against
#: the KV-format registry, so formats that plugins register through ``polyquant_register_kv_formats`` are
#: accepted too; this tuple only names the built-ins.
KV_CACHE_FORMATS: tuple[str, ...] = (
    "fp8_e4m3",
    "fp8_e4m3-tensor",
    "fp8_e5m2",
    "int2",
    "int4",
    "int8",
    "kivi2",
    "kivi4",
    "turbo1",
    "turbo2",
    "turbo2-prod",
    "turbo2.5",
    "turbo3",
    "turbo3-prod",
    "turbo3.5",
    "turbo4",
    "turbo4-prod",
)

_RECIPE_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


# ---------------------------------------------------------------------------------------------- helpers
def _prefixed(prefix: str, exc: RecipeError) -> RecipeError:
    """Re-raise helper: put ``prefix`` in front of a nested error's field path."""
    message = str(exc)
    return RecipeError(f"{prefix}: {message}" if message.startswith("unknown field") else f"{prefix}.{message}")


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    """Unknown keys → ``<path>: unknown field(s) ...`` (``path`` empty: the recipe itself)."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        where = (
            "unknown field(s)" if path == "." else f"{path}: unknown field(s)" if path else "unknown recipe field(s)"
        )
        raise RecipeError(f"{where} {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")


def _expect_mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {type(value).__name__} ({value!r:.60})")
    return value


def _str_tuple(value: Any, path: str) -> tuple[str, ...]:
    """Accept one string or a sequence of strings (YAML lists arrive as lists)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise RecipeError(f"{path}: expected a list of non-empty strings, got {value!r:.80}")
    return tuple(value)


def _is_off(value: Any) -> bool:
    """``activations: null`` / ``false`` / ``"none"`` all mean weight-only."""
    return value is None or value is False or (isinstance(value, str) and value.lower() == "none")


def _known_formats() -> list[str]:
    from polyquant.plugins import get_plugin_manager

    return sorted(get_plugin_manager().get_formats())


def _parse_transforms(raw: Any) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """``["hadamard", {"smoothquant": {"alpha": 0.8}}]`` → names and per-name arguments."""
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise RecipeError(f"transforms: expected a list of names, got {raw!r:.60}")
    names: list[str] = []
    args: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, Mapping) and len(entry) == 1:
            ((name, options),) = entry.items()
            if not isinstance(name, str) or not isinstance(options, Mapping):
                raise RecipeError(f"transforms[{i}]: expected {{name: {{arg: value}}}}, got {entry!r:.60}")
            names.append(name)
            args[name] = dict(options)
        else:
            raise RecipeError(f"transforms[{i}]: expected a name or {{name: {{arg: value}}}}, got {entry!r:.60}")
    return tuple(names), args


def _known_kv_formats() -> list[str]:
    from polyquant.plugins import get_plugin_manager

    return sorted(get_plugin_manager().get_kv_formats())


# ---------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightConfig:
    """The weight format of quantized modules.

    Attributes:
        format: a registered format name (``int4``, ``nf4``, ``mxfp4``, ...; see ``polyquant formats``).
        group_size: ``None`` keeps the format's default granularity; ``0`` or ``-1`` means one scale per
            output channel; a positive value means groups of that many input elements.
        symmetric: ``None`` keeps the format's default; ``False`` adds a zero point (integer formats).
        scale_dtype: ``None`` keeps the format's default; else one of ``fp32``, ``fp16``, ``bf16``, ``e8m0``,
            ``e4m3`` (the format decides which it supports).

    Example:
        >>> WeightConfig("int4", group_size=128).to_spec().name
        'int4'
    """

    format: str
    group_size: int | None = None
    symmetric: bool | None = None
    scale_dtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.format, str) or not self.format:
            raise RecipeError(
                f"weights.format: expected a format name, got {self.format!r}; allowed: {', '.join(_known_formats())}"
            )
        known = _known_formats()
        if self.format not in known:
            raise RecipeError(
                f"weights.format: {self.format!r} is not a registered format; allowed: {', '.join(known)}"
            )
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < -1):
            raise RecipeError(
                f"weights.group_size: {gs!r} is invalid; allowed: null (format default), 0 or -1 (per channel), "
                "or a positive integer such as 32, 64, 128"
            )
        if self.symmetric is not None and not isinstance(self.symmetric, bool):
            raise RecipeError(f"weights.symmetric: {self.symmetric!r} is invalid; allowed: true, false or null")
        from polyquant.formats.spec import SCALE_DTYPES

        if self.scale_dtype is not None and self.scale_dtype not in SCALE_DTYPES:
            raise RecipeError(
                f"weights.scale_dtype: {self.scale_dtype!r} is invalid; allowed: null, {', '.join(SCALE_DTYPES)}"
            )
        self.to_spec()  # the format itself checks option compatibility

    def to_spec(self) -> FormatSpec:
        """The :class:`~polyquant.formats.spec.FormatSpec` these settings describe.

        Raises:
            RecipeError: when the format refuses an option (e.g. a group size it does not support).
        """
        from polyquant.plugins import get_plugin_manager

        spec = get_plugin_manager().get_format(self.format)
        if self.group_size is None and self.symmetric is None and self.scale_dtype is None:
            return spec
        try:
            return spec.with_options(group_size=self.group_size, symmetric=self.symmetric, scale_dtype=self.scale_dtype)
        except FormatError as exc:
            raise RecipeError(
                f"weights: format {self.format!r} does not accept group_size={self.group_size!r}, "
                f"symmetric={self.symmetric!r}, scale_dtype={self.scale_dtype!r}: {exc}"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str, *, base: WeightConfig | None = None) -> WeightConfig:
        """Parse ``weights``; a bare string is shorthand for ``{format: <string>}``.

        Args:
            data: the mapping (or format name).
            base: for overrides, the recipe's weights; fields absent from ``data`` are inherited.
        """
        if isinstance(data, str):
            data = {"format": data}
        data = _expect_mapping(data, "weights")
        _check_keys(data, [f.name for f in fields(cls)], "weights")
        if base is not None:
            if "format" in data and data["format"] != base.format and "group_size" not in data:
                # A different format starts from its own default granularity rather than the base's.
                data = {**data, "group_size": None}
            return replace(base, **data)
        if "format" not in data:
            raise RecipeError(f"weights.format: missing; allowed: {', '.join(_known_formats())}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- kv cache
@dataclass(frozen=True)
class KVCacheConfig:
    """KV-cache quantization settings, recorded in the recipe for runtime integrations.

    :func:`polyquant.quantize` notes this in its report but does not change attention; runtime
    integrations and KV-cache plugins read it from the recipe.

    Attributes:
        format: a registered KV-cache format (:func:`polyquant.kvcache.available`; the built-ins are
            :data:`KV_CACHE_FORMATS`).
        options: format-specific scalar options (``group_size``, ``residual_length``, ``seed``, ...), the
            keyword arguments of :func:`polyquant.kvcache.get`.

    Example:
        >>> KVCacheConfig("fp8_e4m3").format
        'fp8_e4m3'
    """

    format: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = _known_kv_formats()
        if not isinstance(self.format, str) or self.format not in known:
            raise RecipeError(f"kv_cache.format: {self.format!r} is not supported; allowed: {', '.join(known)}")
        options = _expect_mapping(self.options, "kv_cache.options")
        for key, value in options.items():
            if not isinstance(key, str) or not isinstance(value, (bool, int, float, str)):
                raise RecipeError(
                    f"kv_cache.options.{key}: expected a scalar (bool, number or string), got {value!r:.60}"
                )
        object.__setattr__(self, "options", MappingProxyType(dict(options)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"format": self.format, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> KVCacheConfig:
        """Parse ``kv_cache``; a bare string is shorthand for ``{format: <string>}``."""
        if isinstance(data, str):
            data = {"format": data}
        data = _expect_mapping(data, "kv_cache")
        _check_keys(data, ["format", "options"], "kv_cache")
        if "format" not in data:
            raise RecipeError(f"kv_cache.format: missing; allowed: {', '.join(_known_kv_formats())}")
        return cls(format=data["format"], options=data.get("options") or {})


# ---------------------------------------------------------------------------------------------- overrides
@dataclass(frozen=True)
class Override:
    """Per-module exceptions to the recipe, selected by a name pattern.

    Every override whose pattern matches a module applies, in order, later ones winning.

    Attributes:
        pattern: glob on the qualified module name (``"*.down_proj"``), or ``"re:<regex>"`` (full match).
        weights: replacement weight settings (fields not given are inherited from the recipe).
        activations: replacement activation settings (``None`` inherits).
        weight_only: drop activation quantization for matching modules (``activations: null`` in YAML).
        skip: keep matching modules in high precision.

    Example:
        >>> Override("*.down_proj", skip=True).matches("model.layers.0.mlp.down_proj")
        True
    """

    pattern: str
    weights: WeightConfig | None = None
    activations: ActivationSpec | None = None
    weight_only: bool = False
    skip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise RecipeError(f"pattern: expected a glob or 're:<regex>' string, got {self.pattern!r}")
        from polyquant.recipes.matching import compile_pattern

        compile_pattern(self.pattern)
        if self.weight_only and self.activations is not None:
            raise RecipeError("activations: give either activation settings or null (weight-only), not both")

    def matches(self, name: str) -> bool:
        """Whether this override applies to the module called ``name``."""
        from polyquant.recipes.matching import match_pattern

        return match_pattern(self.pattern, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (only the fields that are set)."""
        out: dict[str, Any] = {"pattern": self.pattern}
        if self.weights is not None:
            out["weights"] = self.weights.to_dict()
        if self.activations is not None:
            out["activations"] = self.activations.to_dict()
        elif self.weight_only:
            out["activations"] = None
        if self.skip:
            out["skip"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: WeightConfig) -> Override:
        """Parse one entry of ``overrides``; ``base`` supplies inherited weight fields."""
        data = _expect_mapping(data, "override")
        _check_keys(data, ["pattern", "weights", "activations", "skip"], ".")
        if "pattern" not in data:
            raise RecipeError("pattern: missing; every override needs a module-name pattern such as '*.down_proj'")
        weights = WeightConfig.from_dict(data["weights"], base=base) if data.get("weights") is not None else None
        weight_only = "activations" in data and _is_off(data["activations"])
        activations = None
        if "activations" in data and not weight_only:
            activations = ActivationSpec.from_dict(dict(_expect_mapping(data["activations"], "activations")))
        skip = data.get("skip", False)
        if not isinstance(skip, bool):
            raise RecipeError(f"skip: {skip!r} is invalid; allowed: true, false")
        return cls(
            pattern=data["pattern"], weights=weights, activations=activations, weight_only=weight_only, skip=skip
        )


# ---------------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class Recipe:
    """A complete quantization recipe (see the module docstring for the YAML form).

    Attributes:
        weights: the default weight format.
        activations: activation quantization (``None``: weight-only).
        kv_cache: KV-cache settings, recorded for runtimes (not applied by :func:`polyquant.quantize`).
        method: a registered quantizer (``rtn``, ``mse``, plugins add more).
        method_args: keyword arguments for the quantizer's factory.
        transforms: names of model transforms (rotations, smoothing), applied in order before quantization;
            in a mapping a list entry may also be ``{name: {arg: value}}`` to pass arguments.
        transform_args: the arguments of each transform by name (filled from such entries).
        include: module-name patterns considered for quantization.
        exclude: module-name patterns kept in high precision.
        overrides: per-module exceptions, applied in order.
        modules: module types quantized (subset of :data:`MODULE_TYPES`).
        adapter_excludes: also keep what the model adapter marks as sensitive (embeddings, output
            heads). A non-skip override naming such a module quantizes it anyway.
        name: recipe name (presets use their preset name).
        description: one line.

    Example:
        >>> Recipe(weights=WeightConfig("int8")).method
        'rtn'
    """

    weights: WeightConfig
    activations: ActivationSpec | None = None
    kv_cache: KVCacheConfig | None = None
    method: str = "rtn"
    method_args: Mapping[str, Any] = field(default_factory=dict)
    transforms: tuple[str, ...] = ()
    transform_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    modules: tuple[str, ...] = ("Linear",)
    adapter_excludes: bool = True
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        from polyquant.quantizers import make_quantizer
        from polyquant.recipes.matching import compile_pattern

        if not isinstance(self.weights, WeightConfig):
            raise RecipeError(f"weights: expected a WeightConfig, got {type(self.weights).__name__}")
        if self.activations is not None and not isinstance(self.activations, ActivationSpec):
            raise RecipeError(f"activations: expected an ActivationSpec or null, got {type(self.activations).__name__}")
        if self.kv_cache is not None and not isinstance(self.kv_cache, KVCacheConfig):
            raise RecipeError(f"kv_cache: expected a KVCacheConfig or null, got {type(self.kv_cache).__name__}")
        for attr in ("transforms", "include", "exclude", "modules"):
            object.__setattr__(self, attr, _str_tuple(getattr(self, attr), attr))
        from polyquant.plugins import get_plugin_manager

        known = get_plugin_manager().get_transforms()
        for name in self.transforms:
            if name not in known:
                raise RecipeError(
                    f"transforms: {name!r} is not a registered transform; allowed: {', '.join(sorted(known)) or 'none'}"
                )
        stray = sorted(set(self.transform_args) - set(self.transforms))
        if stray:
            raise RecipeError(f"transforms: arguments given for {', '.join(stray)}, which is not in the list")
        for attr in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, attr)):
                try:
                    compile_pattern(pattern)
                except RecipeError as exc:
                    raise RecipeError(f"{attr}[{i}]: {exc}") from None
        bad = [m for m in self.modules if m not in MODULE_TYPES]
        if bad or not self.modules:
            raise RecipeError(f"modules: {bad or 'empty list'!r} not supported; allowed: {', '.join(MODULE_TYPES)}")
        if not isinstance(self.overrides, tuple) or not all(isinstance(o, Override) for o in self.overrides):
            raise RecipeError("overrides: expected a tuple of Override")
        if not isinstance(self.adapter_excludes, bool):
            raise RecipeError(f"adapter_excludes: {self.adapter_excludes!r} is invalid; allowed: true, false")
        if not isinstance(self.name, str) or not isinstance(self.description, str):
            raise RecipeError("name/description: expected strings")
        args = _expect_mapping(self.method_args, "method_args")
        object.__setattr__(self, "method_args", MappingProxyType(dict(args)))
        make_quantizer(self.method, self.method_args)  # validates method and method_args

    # -------------------------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``Recipe.from_dict(r.to_dict()) == r``."""
        return {
            "name": self.name,
            "description": self.description,
            "weights": self.weights.to_dict(),
            "activations": None if self.activations is None else self.activations.to_dict(),
            "kv_cache": None if self.kv_cache is None else self.kv_cache.to_dict(),
            "method": self.method,
            "method_args": dict(self.method_args),
            "transforms": [
                {name: dict(self.transform_args[name])} if self.transform_args.get(name) else name
                for name in self.transforms
            ],
            "include": list(self.include),
            "exclude": list(self.exclude),
            "overrides": [o.to_dict() for o in self.overrides],
            "modules": list(self.modules),
            "adapter_excludes": self.adapter_excludes,
        }

    def to_yaml(self) -> str:
        """The recipe as YAML text (loadable by :meth:`from_yaml`)."""
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None, description: str | None = None) -> Recipe:
        """Build and validate a recipe from a mapping.

        Args:
            data: the recipe mapping (see the module docstring).
            name: used when ``data`` has no ``name``.
            description: used when ``data`` has no ``description``.

        Raises:
            RecipeError: naming the first bad field and its allowed values.
        """
        data = _expect_mapping(data, "recipe")
        _check_keys(data, [f.name for f in fields(cls)], "")
        if data.get("weights") is None:
            raise RecipeError(
                "weights: missing; a recipe needs at least weights: {format: ...} "
                f"(formats: {', '.join(_known_formats())})"
            )
        weights = WeightConfig.from_dict(data["weights"])
        acts = data.get("activations")
        activations = None if _is_off(acts) else ActivationSpec.from_dict(dict(_expect_mapping(acts, "activations")))
        kv = data.get("kv_cache")
        overrides_raw = data.get("overrides") or []
        if not isinstance(overrides_raw, Sequence) or isinstance(overrides_raw, str):
            raise RecipeError(f"overrides: expected a list of mappings, got {overrides_raw!r:.60}")
        overrides = []
        for i, entry in enumerate(overrides_raw):
            try:
                overrides.append(Override.from_dict(entry, base=weights))
            except RecipeError as exc:
                raise _prefixed(f"overrides[{i}]", exc) from None
        kwargs: dict[str, Any] = {
            "weights": weights,
            "activations": activations,
            "kv_cache": KVCacheConfig.from_dict(kv) if kv is not None else None,
            "overrides": tuple(overrides),
            "name": data.get("name") or name or "",
            "description": data.get("description") or description or "",
        }
        for key in ("method", "method_args", "include", "exclude", "modules", "adapter_excludes"):
            if data.get(key) is not None:
                kwargs[key] = data[key]
        if data.get("transforms") is not None:
            kwargs["transforms"], kwargs["transform_args"] = _parse_transforms(data["transforms"])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, source: str | Path) -> Recipe:
        """Load from a ``.yaml``/``.yml`` file path or from YAML text.

        Example:
            >>> Recipe.from_yaml("weights: {format: int8}").weights.format
            'int8'
        """
        text, origin, stem = _read_source(source, (".yaml", ".yml"))
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{origin}: invalid YAML ({exc}); fix the syntax") from None
        return cls.from_dict(_expect_mapping(data, f"{origin}: top level"), name=stem)

    @classmethod
    def from_toml(cls, source: str | Path) -> Recipe:
        r"""Load from a ``.toml`` file path or from TOML text.

        Example:
            >>> Recipe.from_toml('[weights]\nformat = "int8"').weights.format
            'int8'
        """
        text, origin, stem = _read_source(source, (".toml",))
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"{origin}: invalid TOML ({exc}); fix the syntax") from None
        return cls.from_dict(data, name=stem)

    @classmethod
    def from_json(cls, source: str | Path) -> Recipe:
        """Load from a ``.json`` file path or from JSON text."""
        text, origin, stem = _read_source(source, (".json",))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{origin}: invalid JSON ({exc}); fix the syntax") from None
        return cls.from_dict(_expect_mapping(data, f"{origin}: top level"), name=stem)

    # -------------------------------------------------------------------------------- per-module settings
    def weights_for(self, name: str) -> WeightConfig:
        """The weight settings of module ``name`` after overrides."""
        weights = self.weights
        for override in self.overrides:
            if override.weights is not None and override.matches(name):
                weights = override.weights
        return weights

    def activations_for(self, name: str) -> ActivationSpec | None:
        """The activation settings of module ``name`` after overrides (``None``: weight-only)."""
        acts = self.activations
        for override in self.overrides:
            if override.matches(name):
                if override.weight_only:
                    acts = None
                elif override.activations is not None:
                    acts = override.activations
        return acts


def _read_source(source: str | Path, suffixes: tuple[str, ...]) -> tuple[str, str, str | None]:
    """Return (text, origin for messages, file stem or None) for a path or inline text."""
    is_path = isinstance(source, Path) or ("\n" not in source and source.strip().lower().endswith(suffixes))
    if not is_path:
        return str(source), "recipe text", None
    path = Path(source)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist; check the path")
    return path.read_text(encoding="utf-8"), str(path), path.stem


def resolve(recipe: str | Path | Mapping[str, Any] | Recipe) -> Recipe:
    """Turn anything accepted as a recipe into a validated :class:`Recipe`.

    Args:
        recipe: a :class:`Recipe`; a mapping; a preset name (``"w4a16-g128"``, from the recipe registry,
            so plugins can add presets); or a path to a ``.yaml``/``.yml``/``.toml``/``.json`` file.

    Raises:
        RecipeError: for unknown names/paths (listing the presets) and invalid recipes.

    Example:
        >>> resolve("w8a16").weights.format
        'int8'
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe)
    if isinstance(recipe, str):
        from polyquant.plugins import get_plugin_manager

        presets = get_plugin_manager().get_recipes()
        if recipe in presets:
            preset = presets[recipe]
            try:
                return Recipe.from_dict(preset.recipe, name=preset.name, description=preset.description)
            except RecipeError as exc:
                raise RecipeError(f"preset {recipe!r} is invalid: {exc}") from None
        if Path(recipe).suffix.lower() not in _RECIPE_SUFFIXES:
            raise RecipeError(
                f"unknown recipe {recipe!r}: not a preset and not a .yaml/.yml/.toml/.json file; "
                f"presets: {', '.join(sorted(presets))}"
            )
        recipe = Path(recipe)
    if isinstance(recipe, Path):
        kind = _RECIPE_SUFFIXES.get(recipe.suffix.lower())
        if kind is None:
            raise RecipeError(f"recipe file {str(recipe)!r}: unsupported extension; use .yaml, .yml, .toml or .json")
        loader = {"yaml": Recipe.from_yaml, "toml": Recipe.from_toml, "json": Recipe.from_json}[kind]
        return loader(recipe)
    raise RecipeError(
        f"recipe: expected a preset name, a file path, a mapping or a Recipe, got {type(recipe).__name__}"
    )

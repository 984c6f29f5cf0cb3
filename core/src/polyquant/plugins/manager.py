"""The plugin manager: loads plugins in isolation and exposes typed registries.

Core code never calls ``pm.hook.*`` itself; it asks this facade (``get_formats()``,
``get_kernels(op)``, ``get_kv_formats()``, ...). Loading rules:

* Built-ins (:mod:`polyquant.builtins`, plugin name ``core``) load first, then entry points of group
  ``polyquant`` sorted by name, then plugins registered at run time, in registration order.
* Each plugin is loaded and called inside ``try``/``except``. A plugin that fails to import, raises inside
  a hook, defines an unknown ``polyquant_*`` hook, or returns malformed records gets status ``failed``
  with its error, and **none** of its records are used (a plugin is in or out as a whole). The core and
  every other plugin keep working.
* Names are unique per record kind. The first provider in load order keeps a name; a later plugin
  that provides the same name gets status ``conflict`` with a :class:`~polyquant.errors.PluginConflictError`
  naming both distributions, and is skipped as a whole. ``PluginManager.check()`` raises the first
  such error for callers that want to fail hard (``polyquant plugins --strict``).
* ``POLYQUANT_DISABLE_PLUGINS=a,b`` skips entry points ``a`` and ``b`` (status ``disabled``);
  ``POLYQUANT_LOAD_PLUGINS=a,b`` loads only those entry points, and an empty value loads only built-ins.

Registries are computed lazily and rebuilt whenever a plugin is registered or unregistered.

Example:
    >>> from polyquant.plugins import get_plugin_manager
    >>> pm = get_plugin_manager()
    >>> "int4" in pm.get_formats()
    True
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from polyquant.errors import FormatError, PluginConflictError, PluginError
from polyquant.plugins import hookspecs
from polyquant.plugins.records import (
    RECORD_KINDS,
    AdapterInfo,
    CalibrationSourceInfo,
    CommandGroup,
    EvaluatorInfo,
    KernelSpec,
    KVCacheFormatInfo,
    QuantizerInfo,
    RecipePreset,
    TransformInfo,
)

if TYPE_CHECKING:
    from polyquant.formats.spec import FormatSpec

__all__ = ["PluginInfo", "PluginManager", "get_plugin_manager", "set_plugin_manager"]

DISABLE_ENV = "POLYQUANT_DISABLE_PLUGINS"
LOAD_ENV = "POLYQUANT_LOAD_PLUGINS"
CORE_PLUGIN = "core"
CORE_DISTRIBUTION = "polyquant-core"

_HOOK_NAMES = frozenset(RECORD_KINDS.values())


def _record_types() -> dict[str, type]:
    from polyquant.formats.spec import FormatSpec

    return {
        "format": FormatSpec,
        "quantizer": QuantizerInfo,
        "kernel": KernelSpec,
        "adapter": AdapterInfo,
        "calibration_source": CalibrationSourceInfo,
        "evaluator": EvaluatorInfo,
        "recipe": RecipePreset,
        "command": CommandGroup,
        "kv_format": KVCacheFormatInfo,
        "transform": TransformInfo,
    }


def _record_key(kind: str, record: Any) -> str:
    if kind == "kernel":
        return str(record.key)
    return str(record.name)


@dataclass(frozen=True)
class PluginInfo:
    """What ``polyquant plugins`` shows for one plugin.

    Attributes:
        name: plugin (entry point) name, e.g. ``"llm"``; built-ins are ``"core"``.
        distribution: the installed distribution providing it (``"polyquant-llm"``).
        version: that distribution's version, or ``""`` when unknown.
        status: ``"loaded"``, ``"failed"``, ``"conflict"`` or ``"disabled"``.
        error: why it is not loaded (``None`` when loaded).
        contributions: record kind → names it contributes (empty unless loaded).
        builtin: whether it ships inside ``polyquant-core``.
    """

    name: str
    distribution: str
    version: str
    status: str
    error: str | None = None
    contributions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    builtin: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (used by ``polyquant plugins --json``)."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "builtin": self.builtin,
            "contributes": {k: list(v) for k, v in self.contributions.items() if v},
        }


@dataclass
class _Slot:
    """A plugin as the manager tracks it (mutable bookkeeping, never exposed)."""

    name: str
    obj: Any
    distribution: str
    version: str
    builtin: bool = False
    status: str = "pending"
    error: BaseException | str | None = None
    registered: bool = False  # registered with pluggy (its hooks can be called)


class PluginManager:
    """Loads polyquant plugins and answers typed registry queries.

    Args:
        entry_points: load third-party plugins from the ``polyquant`` entry point group.
        builtins: register the core's own formats, quantizers, kernels and commands.
        env: environment mapping consulted for ``POLYQUANT_DISABLE_PLUGINS`` / ``POLYQUANT_LOAD_PLUGINS``
            (defaults to ``os.environ``).
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        builtins: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._slots: list[_Slot] = []
        self._registries: dict[str, dict[str, Any]] | None = None
        self._generation = 0
        self._contributions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._providers: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()
        env = os.environ if env is None else env
        if builtins:
            from polyquant import builtins as core_builtins

            self._add_slot(CORE_PLUGIN, core_builtins, CORE_DISTRIBUTION, _version(CORE_DISTRIBUTION), builtin=True)
        if entry_points:
            self._load_entry_points(env)

    # ------------------------------------------------------------------ loading
    def _load_entry_points(self, env: Mapping[str, str]) -> None:
        disabled = {n.strip() for n in env.get(DISABLE_ENV, "").split(",") if n.strip()}
        only: set[str] | None = None
        if LOAD_ENV in env:
            only = {n.strip() for n in env[LOAD_ENV].split(",") if n.strip()}
        eps = sorted(importlib_metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            if ep.name in disabled or (only is not None and ep.name not in only):
                why = f"disabled by {DISABLE_ENV}" if ep.name in disabled else f"not listed in {LOAD_ENV}"
                self._slots.append(_Slot(ep.name, None, dist, version, status="disabled", error=why))
                continue
            try:
                obj = ep.load()
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self._slots.append(
                    _Slot(
                        ep.name,
                        None,
                        dist,
                        version,
                        status="failed",
                        error=_describe(exc, f"import of {ep.value} failed"),
                    )
                )
                continue
            self._add_slot(ep.name, obj, dist, version)

    def _add_slot(self, name: str, obj: Any, distribution: str, version: str, *, builtin: bool = False) -> _Slot:
        slot = _Slot(name, obj, distribution, version, builtin=builtin)
        unknown = sorted(
            attr
            for attr in dir(obj)
            if attr.startswith("polyquant_") and callable(getattr(obj, attr, None)) and attr not in _HOOK_NAMES
        )
        if unknown:
            slot.status, slot.error = (
                "failed",
                (f"unknown hook(s) {', '.join(unknown)}; known hooks: {', '.join(sorted(_HOOK_NAMES))}"),
            )
        else:
            try:
                self._pm.register(obj, name=name)
                slot.registered = True
            except Exception as exc:  # noqa: BLE001
                slot.status, slot.error = "failed", _describe(exc, "registration failed")
                if self._pm.get_plugin(name) is obj:  # pluggy keeps half-registered plugins
                    self._pm.unregister(name=name)
        self._slots.append(slot)
        return slot

    def register(
        self, plugin: Any, name: str | None = None, *, distribution: str | None = None, version: str = ""
    ) -> PluginInfo:
        """Register a plugin object at run time and rebuild the registries.

        Args:
            plugin: a module or object with ``@hookimpl`` functions.
            name: plugin name (defaults to the object's ``__name__`` or class name).
            distribution: shown in ``polyquant plugins`` (defaults to ``name``).
            version: shown in ``polyquant plugins``.

        Returns:
            The plugin's :class:`PluginInfo` after the rebuild (check ``status``).
        """
        with self._lock:
            plugin_name: str = name or str(getattr(plugin, "__name__", type(plugin).__name__))
            if any(s.name == plugin_name for s in self._slots):
                raise PluginError(
                    f"a plugin named {plugin_name!r} is already registered; unregister it first or pick another name"
                )
            self._add_slot(plugin_name, plugin, distribution or plugin_name, version)
            self._registries = None
            return self.plugin(plugin_name)

    def unregister(self, name: str) -> None:
        """Remove a plugin by name and rebuild the registries (no error if absent)."""
        with self._lock:
            for slot in list(self._slots):
                if slot.name == name:
                    if slot.registered:
                        self._pm.unregister(name=name)
                    self._slots.remove(slot)
            self._registries = None

    def reload(self) -> None:
        """Forget the computed registries; they are rebuilt on next use."""
        with self._lock:
            self._registries = None

    # ------------------------------------------------------------------ building
    def _collect(self, slot: _Slot) -> dict[str, list[Any]]:
        types = _record_types()
        out: dict[str, list[Any]] = {}
        for kind, hook_name in RECORD_KINDS.items():
            caller = getattr(self._pm.hook, hook_name)
            impls = [i for i in caller.get_hookimpls() if i.plugin is slot.obj]
            records: list[Any] = []
            for impl in impls:
                try:
                    result = impl.function()
                except Exception as exc:
                    raise PluginError(_describe(exc, f"hook {hook_name} raised")) from exc
                if result is None:
                    continue
                if not isinstance(result, Iterable) or isinstance(result, (str, bytes, Mapping)):
                    expected, got = types[kind].__name__, type(result).__name__
                    raise PluginError(f"hook {hook_name} must return an iterable of {expected}, got {got}")
                for rec in result:
                    if not isinstance(rec, types[kind]):
                        raise PluginError(
                            f"hook {hook_name} returned a malformed record: expected {types[kind].__name__}, "
                            f"got {type(rec).__name__} ({rec!r:.80})"
                        )
                    records.append(rec)
            keys = [_record_key(kind, r) for r in records]
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise PluginError(f"hook {hook_name} returned the {kind} name(s) {', '.join(dupes)} more than once")
            out[kind] = records
        return out

    def _build(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._registries is not None:
                return self._registries
            registries: dict[str, dict[str, Any]] = {kind: {} for kind in RECORD_KINDS}
            providers: dict[tuple[str, str], str] = {}
            self._contributions = {}
            for slot in self._slots:
                if not slot.registered:  # import/registration failure or disabled: status already says why
                    continue
                slot.status, slot.error = "pending", None
                try:
                    collected = self._collect(slot)
                    for kind, records in collected.items():
                        for rec in records:
                            key = _record_key(kind, rec)
                            if key in registries[kind]:
                                raise PluginConflictError(kind, key, providers[(kind, key)], slot.distribution)
                except PluginConflictError as exc:
                    slot.status, slot.error = "conflict", exc
                    warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
                    continue
                except PluginError as exc:
                    slot.status, slot.error = "failed", exc
                    continue
                for kind, records in collected.items():
                    for rec in records:
                        key = _record_key(kind, rec)
                        registries[kind][key] = rec
                        providers[(kind, key)] = slot.distribution
                self._contributions[slot.name] = {
                    kind: tuple(_record_key(kind, r) for r in recs) for kind, recs in collected.items() if recs
                }
                slot.status = "loaded"
            self._registries = registries
            self._providers = providers
            self._generation += 1
            return registries

    # ------------------------------------------------------------------ queries
    @property
    def generation(self) -> int:
        """Increases every time the registries are rebuilt; caches keyed on it stay valid until a change."""
        self._build()
        return self._generation

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, in load order, with status, error and contributions."""
        self._build()
        return [self._info(s) for s in self._slots]

    def plugin(self, name: str) -> PluginInfo:
        """The :class:`PluginInfo` of plugin ``name`` (``KeyError`` when unknown)."""
        self._build()
        for slot in self._slots:
            if slot.name == name:
                return self._info(slot)
        raise KeyError(name)

    def _info(self, slot: _Slot) -> PluginInfo:
        error = None if slot.error is None else str(slot.error)
        contributions = self._contributions.get(slot.name, {}) if slot.status == "loaded" else {}
        return PluginInfo(slot.name, slot.distribution, slot.version, slot.status, error, contributions, slot.builtin)

    def check(self) -> None:
        """Raise the first conflict or failure, for callers that want plugins to fail hard."""
        self._build()
        for slot in self._slots:
            if slot.status == "conflict" and isinstance(slot.error, PluginConflictError):
                raise slot.error
            if slot.status == "failed":
                raise PluginError(f"plugin {slot.name!r} ({slot.distribution}) failed: {slot.error}")

    def provider(self, kind: str, name: str) -> str:
        """The distribution that provides record ``name`` of ``kind`` (``KeyError`` when unknown)."""
        self._build()
        return self._providers[(kind, name)]

    def _registry(self, kind: str) -> dict[str, Any]:
        return self._build()[kind]

    def get_formats(self) -> Mapping[str, FormatSpec]:
        """All registered tensor formats by name."""
        return dict(self._registry("format"))

    def get_format(self, name: str) -> FormatSpec:
        """The format called ``name``; :class:`FormatError` listing the known names otherwise."""
        formats = self._registry("format")
        if name not in formats:
            raise FormatError(f"unknown format {name!r}; known formats: {', '.join(sorted(formats))}")
        return formats[name]  # type: ignore[no-any-return]

    def get_quantizers(self) -> Mapping[str, QuantizerInfo]:
        """All registered quantization algorithms by name."""
        return dict(self._registry("quantizer"))

    def get_kernels(self, op: str | None = None) -> list[KernelSpec]:
        """Registered kernels, for one op or all, highest priority first."""
        kernels = [k for k in self._registry("kernel").values() if op is None or k.op == op]
        return sorted(kernels, key=lambda k: (-k.priority, k.key))

    def get_adapters(self) -> list[AdapterInfo]:
        """Registered model adapters, highest priority first."""
        return sorted(self._registry("adapter").values(), key=lambda a: (-a.priority, a.name))

    def get_calibration_sources(self) -> Mapping[str, CalibrationSourceInfo]:
        """Registered calibration sources by name."""
        return dict(self._registry("calibration_source"))

    def get_evaluators(self) -> Mapping[str, EvaluatorInfo]:
        """Registered evaluators by name."""
        return dict(self._registry("evaluator"))

    def get_recipes(self) -> Mapping[str, RecipePreset]:
        """Registered named recipes (presets) by name."""
        return dict(self._registry("recipe"))

    def get_commands(self) -> Mapping[str, CommandGroup]:
        """Registered CLI command groups by name."""
        return dict(self._registry("command"))

    def get_kv_formats(self) -> Mapping[str, KVCacheFormatInfo]:
        """Registered KV-cache formats by name."""
        return dict(self._registry("kv_format"))

    def get_transforms(self) -> Mapping[str, TransformInfo]:
        """Registered model transforms by name."""
        return dict(self._registry("transform"))


def _describe(exc: BaseException, context: str) -> str:
    return f"{context}: {type(exc).__name__}: {exc}"


def _version(distribution: str) -> str:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return ""


_MANAGER: PluginManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = PluginManager()
        return _MANAGER


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (``None`` resets to lazy creation); returns the previous one."""
    global _MANAGER
    with _MANAGER_LOCK:
        previous, _MANAGER = _MANAGER, manager
        return previous


@contextmanager
def using_plugin_manager(manager: PluginManager) -> Iterator[PluginManager]:
    """Temporarily make ``manager`` the process-wide manager (tests, isolated runs)."""
    previous = set_plugin_manager(manager)
    try:
        yield manager
    finally:
        set_plugin_manager(previous)

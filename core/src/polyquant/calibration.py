"""Calibration data: normalizing user data into model inputs, named sources, and finiteness checks.

Calibration data reaches polyquant in many shapes: a tensor of samples, a tokenizer's dict of tensors, a list
of batches, a ``DataLoader`` of keyword dicts, or a named source such as ``tensors:calib.safetensors``. This
module turns all of them into one stream of *model inputs*:

* a :class:`torch.Tensor` is called as ``model(x)``,
* a ``tuple`` is called as ``model(*args)``,
* a ``dict`` is called as ``model(**kwargs)``.

:func:`run_model` performs that call. Normalization rules of :func:`iter_batches`:

* A **tensor** or a **mapping of tensors** (e.g. ``{"input_ids": (N, L), "attention_mask": (N, L)}``) holds
  ``N`` samples along its first axis; it is split into ``N`` inputs of leading size 1.
* Any other **iterable** (list, tuple, generator, ``DataLoader``) yields one model input per item; a tensor
  item is a positional input, a tuple/list item positional arguments, a mapping item keyword arguments.
* ``num_samples`` keeps at most that many inputs. When the source's length is known and larger, a subset is
  drawn with ``seed`` (same seed, same subset, original order kept); unsized iterables yield their first
  ``num_samples`` items.

Sources are registered as :class:`~polyquant.plugins.CalibrationSourceInfo` records; the core provides
``tensors`` (safetensors files — never pickles) and ``random`` (Gaussian noise for smoke tests only). Domain
plugins add text corpora, image folders, and so on. :func:`load_calibration` parses ``"name:arg"`` specs such
as the CLI's ``--calib tensors:calib.safetensors``.

Example:
    >>> import torch
    >>> inputs = list(iter_batches(torch.randn(8, 16), num_samples=4))
    >>> len(inputs), tuple(inputs[0].shape)
    (4, (1, 16))
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from polyquant.errors import CalibrationError
from polyquant.plugins.records import CalibrationSourceInfo

__all__ = [
    "CalibrationSet",
    "ModelInput",
    "builtin_calibration_sources",
    "check_finite",
    "iter_batches",
    "load_calibration",
    "load_tensors",
    "random_inputs",
    "run_model",
    "run_observing",
]

#: One call's worth of model input: a tensor (``model(x)``), positional args or keyword args.
ModelInput = torch.Tensor | tuple[Any, ...] | dict[str, Any]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class CalibrationSet(Iterable[ModelInput]):
    """A re-iterable stream of model inputs with a human-readable description.

    Calibration runs more than one pass over its data (observers, then the report's output error), so
    sources return a :class:`CalibrationSet` rather than a one-shot generator: every ``iter()`` starts over
    and yields the same inputs.

    Args:
        factory: returns a fresh iterator of model inputs on each call.
        description: what the data is (shown in reports), e.g. ``"random N(0,1) (1, 64) x 8 — smoke test"``.
        length: number of inputs when known.

    Example:
        >>> data = CalibrationSet(lambda: iter([torch.ones(1, 4)]), "one row of ones", length=1)
        >>> [tuple(x.shape) for x in data], len(data)
        ([(1, 4)], 1)
    """

    def __init__(
        self, factory: Callable[[], Iterator[ModelInput]], description: str, *, length: int | None = None
    ) -> None:
        self._factory = factory
        self.description = description
        self._length = length

    def __iter__(self) -> Iterator[ModelInput]:
        return self._factory()

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(f"the length of calibration set {self.description!r} is not known in advance")
        return self._length

    def __repr__(self) -> str:
        size = "?" if self._length is None else str(self._length)
        return f"CalibrationSet({self.description!r}, inputs={size})"


# --------------------------------------------------------------------------------------------- running
def run_model(model: Callable[..., Any], inputs: ModelInput) -> Any:
    """Call ``model`` with one normalized input (tensor → positional, tuple → ``*args``, dict → ``**kwargs``).

    Example:
        >>> run_model(torch.nn.Identity(), {"input": torch.zeros(1)})
        tensor([0.])
    """
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    raise CalibrationError(
        f"cannot call a model with a {type(inputs).__name__}; pass inputs through iter_batches() first, which "
        f"turns tensors, tuples and dicts into model inputs"
    )


def run_observing(
    model: torch.nn.Module, observers: Mapping[str, Callable[[torch.Tensor], None]], inputs: Iterable[ModelInput]
) -> None:
    """Run ``model`` on every input (no grad) while ``observers[name](x)`` sees the first input of each named module.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> seen = []
        >>> run_observing(model, {"0": lambda x: seen.append(tuple(x.shape))}, [torch.ones(3, 4)])
        >>> seen
        [(3, 4)]
    """
    modules = dict(model.named_modules())
    handles = []
    for name, observe in observers.items():

        def hook(module: torch.nn.Module, args: tuple[Any, ...], observe: Callable[..., None] = observe) -> None:
            if args and isinstance(args[0], torch.Tensor):
                observe(args[0].detach())

        handles.append(modules[name].register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for sample in inputs:
                run_model(model, sample)
    finally:
        for handle in handles:
            handle.remove()


def move_to(inputs: ModelInput, device: torch.device | str) -> ModelInput:
    """Move every tensor inside one model input to ``device`` (other values are left as they are)."""
    return _map_tensors(inputs, lambda t: t.to(device))  # type: ignore[no-any-return]


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, Mapping):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------- checks
def check_finite(tensor: torch.Tensor, where: str) -> None:
    """Raise :class:`CalibrationError` when a floating-point tensor holds NaN or Inf.

    Args:
        tensor: the tensor to check (integer and boolean tensors always pass).
        where: what the tensor is, used in the message, e.g. ``"input of model.layers.0.mlp (sample 3)"``.

    Raises:
        CalibrationError: naming ``where``, how many values are NaN/Inf, and what usually fixes it.

    Example:
        >>> check_finite(torch.ones(3), "sample 0")
        >>> check_finite(torch.tensor([1.0, float("nan")]), "sample 1")
        Traceback (most recent call last):
        polyquant.errors.CalibrationError: sample 1: 1 NaN and 0 Inf value(s) in a tensor of shape (2,); ...
    """
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(tensor).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise CalibrationError(
        f"{where}: {n_nan} NaN and {n_inf} Inf value(s) in a tensor of shape {tuple(tensor.shape)}; "
        f"clean the calibration data, or run this part of the model in float32 if float16 overflows"
    )


def _check_input(inputs: ModelInput, where: str) -> None:
    if isinstance(inputs, torch.Tensor):
        check_finite(inputs, where)
    elif isinstance(inputs, tuple):
        for i, value in enumerate(inputs):
            if isinstance(value, torch.Tensor):
                check_finite(value, f"{where}, argument {i}")
    else:
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                check_finite(value, f"{where}, {key!r}")


# --------------------------------------------------------------------------------------------- normalization
def iter_batches(
    data: Any, *, num_samples: int | None = None, seed: int = 0, check: bool = True
) -> Iterator[ModelInput]:
    """Normalize calibration data into a deterministic stream of model inputs.

    Args:
        data: a tensor or mapping of tensors (split into samples along the first axis), or an iterable of
            tensors / tuples / lists / mappings (one model input each). See the module docstring.
        num_samples: keep at most this many inputs (``None``: all). Sized sources draw a seeded subset.
        seed: seed of the subset drawn when ``num_samples`` is smaller than a sized source.
        check: raise :class:`CalibrationError` for NaN/Inf in floating-point inputs.

    Yields:
        Model inputs: tensors, tuples of positional arguments, or dicts of keyword arguments.

    Raises:
        CalibrationError: for empty data, a negative ``num_samples``, mismatched first axes in a mapping,
            items that are not tensors/tuples/mappings (e.g. raw strings), or NaN/Inf values.

    Example:
        >>> batch = {"input_ids": torch.zeros(4, 8, dtype=torch.long), "attention_mask": torch.ones(4, 8)}
        >>> first = next(iter_batches(batch))
        >>> sorted(first), tuple(first["input_ids"].shape)
        (['attention_mask', 'input_ids'], (1, 8))
    """
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise CalibrationError(f"num_samples must be a positive integer or None, got {num_samples!r}")
    if isinstance(data, CalibrationSet):
        source: Iterable[Any] = data
        length = data._length
    elif isinstance(data, (torch.Tensor, Mapping)):
        source = _split_rows(data)
        length = len(source)
    elif isinstance(data, (str, bytes)):
        raise CalibrationError(
            f"calibration data is a {type(data).__name__}; pass tensors, or name a source with "
            f"load_calibration('tensors:PATH') (domain plugins add text sources)"
        )
    elif isinstance(data, Iterable):
        source = data
        length = len(data) if isinstance(data, Sequence) else None
    else:
        raise CalibrationError(
            f"calibration data of type {type(data).__name__} is not supported; pass a tensor, a dict of tensors, "
            f"or an iterable of tensors / tuples / dicts"
        )

    keep: set[int] | None = None
    if num_samples is not None and length is not None and num_samples < length:
        generator = torch.Generator().manual_seed(seed)
        keep = {int(i) for i in torch.randperm(length, generator=generator)[:num_samples]}

    produced = 0
    items: Iterable[tuple[int, Any]] = enumerate(source)
    if keep is not None and isinstance(source, Sequence):
        items = ((i, source[i]) for i in sorted(keep))  # random access: skip the rows not drawn
    for index, item in items:
        if keep is not None and index not in keep:
            continue
        inputs = _normalize_item(item, index)
        if check:
            _check_input(inputs, f"calibration sample {index}")
        produced += 1
        yield inputs
        if produced == num_samples:
            break  # never pull more from a (possibly expensive) stream than was asked for
    if produced == 0:
        raise CalibrationError("calibration data is empty; provide at least one sample")


def _normalize_item(item: Any, index: int) -> ModelInput:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)):
        return tuple(item)
    if isinstance(item, Mapping):
        keys = [k for k in item if not isinstance(k, str)]
        if keys:
            raise CalibrationError(f"calibration sample {index}: keyword inputs need string keys, got {keys[0]!r}")
        return dict(item)
    raise CalibrationError(
        f"calibration sample {index} is a {type(item).__name__}; each item must be a tensor, a tuple of "
        f"positional arguments or a dict of keyword arguments (tokenize text before calibrating)"
    )


class _Rows(Sequence[ModelInput]):
    """Tensors viewed as a sequence of single-row samples (slices, no copies).

    ``data`` is one tensor (positional input), a tuple of tensors (positional arguments) or a mapping
    (keyword arguments; non-tensor values are passed to every sample unchanged).
    """

    def __init__(self, data: torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, Any], rows: int) -> None:
        self._data, self._rows = data, rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, index: int) -> ModelInput:  # type: ignore[override]
        if not -self._rows <= index < self._rows:
            raise IndexError(index)
        index %= self._rows
        if isinstance(self._data, torch.Tensor):
            return self._data[index : index + 1]
        if isinstance(self._data, tuple):
            return tuple(t[index : index + 1] for t in self._data)
        return {k: v[index : index + 1] if isinstance(v, torch.Tensor) else v for k, v in self._data.items()}


def _split_rows(data: torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, Any]) -> _Rows:
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise CalibrationError("calibration tensor is 0-dimensional; samples are taken along the first axis")
        return _Rows(data, data.shape[0])
    named = dict(enumerate(data)) if isinstance(data, tuple) else dict(data)
    rows = {k: v.shape[0] for k, v in named.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if not rows:
        raise CalibrationError("calibration dict holds no tensor with a first axis to split into samples")
    if len(set(rows.values())) > 1:
        sizes = ", ".join(f"{k}: {n}" for k, n in rows.items())
        raise CalibrationError(
            f"calibration tensors disagree on the number of samples (first axis: {sizes}); "
            f"give every tensor the same first dimension, or pass a list of per-batch dicts"
        )
    return _Rows(data, next(iter(rows.values())))


# --------------------------------------------------------------------------------------------- built-in sources
def load_tensors(path: str | Path, *, num_samples: int | None = None, seed: int = 0) -> CalibrationSet:
    """Calibration inputs from a ``.safetensors`` file, or a directory of them (read in sorted name order).

    Each file's tensors are split into samples along their first axis. A file with one tensor gives
    positional inputs; tensors named ``0``, ``1``, ... give positional arguments in that order; any other
    names give keyword arguments (e.g. ``input_ids`` and ``attention_mask``). Pickle files (``.pt``,
    ``.bin``, ...) are refused: loading them can run arbitrary code.

    Args:
        path: a ``.safetensors`` file or a directory containing some.
        num_samples: keep at most this many samples (a seeded subset when there are more).
        seed: subset seed.

    Example:
        >>> from safetensors.torch import save_file
        >>> save_file({"input": torch.randn(16, 32)}, "calib.safetensors")  # doctest: +SKIP
        >>> data = load_tensors("calib.safetensors", num_samples=8)  # doctest: +SKIP
    """
    from safetensors import safe_open

    root = Path(path).expanduser()
    files = _safetensors_files(root)
    counts: list[int] = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            shapes = [handle.get_slice(k).get_shape() for k in handle.keys()]  # noqa: SIM118 - safe_open API
        if not shapes or any(not s for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise CalibrationError(
                f"{file}: every tensor needs the same first dimension (the sample axis); got shapes {shapes}"
            )
        counts.append(int(shapes[0][0]))
    total = sum(counts)

    def read_all() -> Iterator[ModelInput]:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open API
            yield from _split_rows(_as_arguments(tensors))

    def factory() -> Iterator[ModelInput]:
        source = CalibrationSet(read_all, str(root), length=total)
        return iter_batches(source, num_samples=num_samples, seed=seed)

    where = f"{root} ({len(files)} file{'s' if len(files) != 1 else ''})" if root.is_dir() else str(root)
    return CalibrationSet(factory, f"tensors from {where}", length=min(total, num_samples or total))


def _safetensors_files(root: Path) -> list[Path]:
    hint = "save inputs with safetensors.torch.save_file({'input': tensor}, 'calib.safetensors')"
    if root.suffix.lower() in _PICKLE_SUFFIXES:
        raise CalibrationError(f"{root}: pickle files are never loaded (they can run arbitrary code); {hint}")
    if not root.exists():
        raise CalibrationError(f"calibration path {root} does not exist; {hint}")
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix == ".safetensors" and p.is_file())
        if not files:
            raise CalibrationError(f"directory {root} contains no .safetensors file; {hint}")
        return files
    if root.suffix != ".safetensors":
        raise CalibrationError(f"{root} is not a .safetensors file; {hint}")
    return [root]


def _as_arguments(tensors: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...] | dict[str, Any]:
    """One tensor → positional; names ``0..n-1`` → positional arguments in that order; otherwise keywords."""
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    if sorted(tensors) == sorted(str(i) for i in range(len(tensors))):
        return tuple(tensors[str(i)] for i in range(len(tensors)))
    return dict(tensors)


def random_inputs(
    shape: Sequence[int], *, num_samples: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32
) -> CalibrationSet:
    """Gaussian ``N(0, 1)`` inputs of ``shape``, for smoke tests only — not representative calibration data.

    Args:
        shape: shape of one input, e.g. ``(1, 128)``.
        num_samples: number of inputs.
        seed: generator seed (same seed, same inputs).
        dtype: floating-point dtype of the inputs.

    Example:
        >>> data = random_inputs((1, 4), num_samples=2)
        >>> [tuple(x.shape) for x in data]
        [(1, 4), (1, 4)]
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise CalibrationError(f"random calibration shape must be positive integers like 1x128, got {shape}")
    if num_samples < 1:
        raise CalibrationError(f"num_samples must be a positive integer, got {num_samples}")
    if not dtype.is_floating_point:
        raise CalibrationError(f"random calibration inputs are Gaussian floats; dtype {dtype} is not floating point")

    def factory() -> Iterator[ModelInput]:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(num_samples):
            yield torch.randn(shape, generator=generator).to(dtype)

    label = "x".join(str(s) for s in shape)
    return CalibrationSet(factory, f"random N(0,1) {label} x {num_samples} (smoke test only)", length=num_samples)


def _load_tensors_source(arg: str, **options: Any) -> CalibrationSet:
    if not arg:
        raise CalibrationError("the 'tensors' source needs a path: tensors:PATH (a .safetensors file or a directory)")
    return load_tensors(arg, **options)


def _load_random_source(arg: str, **options: Any) -> CalibrationSet:
    if not re.fullmatch(r"\d+(x\d+)*", arg.strip()):
        raise CalibrationError(f"the 'random' source needs the shape of one input like random:1x128, got {arg!r}")
    shape = [int(s) for s in arg.strip().split("x")]
    if math.prod(shape) > 1 << 28:
        raise CalibrationError(f"random input shape {arg} is too large for smoke-test data (> 2^28 elements)")
    return random_inputs(shape, **options)


def _load_text_source(arg: str, **options: Any) -> CalibrationSet:
    from polyquant.calibration_text import load_text

    if not arg:
        raise CalibrationError("the 'text' source needs a path: text:FILE (a .txt file or a directory of them)")
    return load_text(arg, **options)


def builtin_calibration_sources() -> list[CalibrationSourceInfo]:
    """The core's calibration sources: ``tensors``, ``text`` and ``random`` (registered by :mod:`polyquant.builtins`).

    Example:
        >>> sorted(s.name for s in builtin_calibration_sources())
        ['random', 'tensors', 'text']
    """
    return [
        CalibrationSourceInfo(
            "tensors",
            _load_tensors_source,
            "inputs stored in a .safetensors file or a directory of them (tensors:PATH); pickles are refused",
        ),
        CalibrationSourceInfo(
            "text",
            _load_text_source,
            "random token windows of a text file through a tokenizer (text:FILE, option tokenizer=DIR_OR_ID)",
        ),
        CalibrationSourceInfo(
            "random",
            _load_random_source,
            "Gaussian N(0,1) inputs of one shape (random:1x128) — smoke tests only, not real calibration data",
        ),
    ]


def load_calibration(spec: str, **options: Any) -> CalibrationSet:
    """Load calibration data from a registered source named by ``"name:arg"`` (or just ``"name"``).

    Args:
        spec: e.g. ``"tensors:calib.safetensors"`` or ``"random:1x128"``; the text after the first ``:``
            is passed to the source.
        **options: forwarded to the source's ``load`` (``num_samples``, ``seed``, ...).

    Raises:
        CalibrationError: unknown source (the message lists the registered ones), or the source's own errors.

    Example:
        >>> data = load_calibration("random:1x16", num_samples=4)
        >>> len(list(data))
        4
    """
    from polyquant.plugins import get_plugin_manager

    if not isinstance(spec, str) or not spec.strip():
        raise CalibrationError(f"calibration spec must be a string like 'tensors:PATH', got {spec!r}")
    name, _, arg = spec.strip().partition(":")
    sources = get_plugin_manager().get_calibration_sources()
    if name not in sources:
        known = ", ".join(sorted(sources)) or "(none)"
        raise CalibrationError(
            f"unknown calibration source {name!r} in {spec!r}; known sources: {known} "
            f"(install the domain plugin that provides it, e.g. polyquant[llm] for text)"
        )
    result = sources[name].load(arg, **options)
    if isinstance(result, CalibrationSet):
        return result
    if not isinstance(result, Iterable):
        raise CalibrationError(f"calibration source {name!r} returned a {type(result).__name__}, not an iterable")
    materialized = list(iter_batches(result))
    return CalibrationSet(lambda: iter(materialized), f"{name}:{arg}", length=len(materialized))

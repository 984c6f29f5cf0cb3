"""``polyquant quantize`` and ``polyquant inspect``: the generic model commands.

``MODEL`` is either ``module:callable`` (or ``path/to/file.py:callable``) naming a function that returns a
``torch.nn.Module``, or a polyquant checkpoint directory. Domain plugins add richer commands (``polyquant
llm quantize`` loads Hugging Face models, tokenizes calibration text, ...).

Example:
    $ polyquant quantize mypkg.models:build --recipe w4a16-g128 --out ./quantized --report report.md
    $ polyquant inspect ./quantized
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from polyquant.cli.output import echo, human_bytes, print_json, print_table, warn
from polyquant.errors import PolyquantError

if TYPE_CHECKING:
    from torch import nn

    from polyquant.report import QuantizationReport

__all__ = ["inspect_checkpoint", "load_factory", "load_model", "quantize", "report_table"]


@contextmanager
def _cwd_importable() -> Iterator[None]:
    """Let ``module:callable`` name modules of the current directory, as ``python -m`` would."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``"module:callable"`` or ``"path/to/file.py:callable"`` to the callable.

    Raises:
        PolyquantError: malformed spec, module not importable, or attribute missing / not callable.

    Example:
        >>> load_factory("collections:OrderedDict").__name__
        'OrderedDict'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise PolyquantError(
            f"MODEL {spec!r} must be 'module:callable' (e.g. mypkg.models:build), 'file.py:callable', "
            f"or a polyquant checkpoint directory"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise PolyquantError(f"MODEL {spec!r}: file {module_name} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            with _cwd_importable():
                module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolyquantError(
            f"MODEL {spec!r}: cannot import {module_name!r} ({exc}); check the name and that it is on PYTHONPATH"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise PolyquantError(f"MODEL {spec!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise PolyquantError(
            f"MODEL {spec!r}: {attr!r} is a {type(target).__name__}, not a callable that builds a model"
        )
    return target  # type: ignore[no-any-return]


def _build(factory: Callable[[], Any], spec: str) -> nn.Module:
    import torch

    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise PolyquantError(f"MODEL {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


FACTORY_KEY = "factory"


def _recorded_factory(checkpoint_dir: Path) -> str | None:
    from polyquant.checkpoint import read_manifest

    metadata = read_manifest(checkpoint_dir).get("metadata") or {}
    factory = metadata.get(FACTORY_KEY)
    return factory if isinstance(factory, str) and factory else None


def load_model(spec: str, factory: str | None = None) -> nn.Module:
    """Build the model named by ``MODEL``: ``module:callable`` or a polyquant checkpoint directory.

    Args:
        spec: the ``MODEL`` argument.
        factory: ``module:callable`` building the architecture of a checkpoint; defaults to the factory
            the checkpoint records (``polyquant quantize --out`` records it).

    Raises:
        PolyquantError: the spec cannot be resolved or does not build an ``nn.Module``.
        CheckpointError: the checkpoint is missing, damaged or incompatible.

    Example:
        >>> load_model("torch.nn:Identity")
        Identity()
    """
    path = Path(spec)
    if path.is_dir():
        from polyquant import checkpoint

        factory = factory or _recorded_factory(path)
        if factory is None:
            raise PolyquantError(
                f"checkpoint {spec} does not record how to build its model; pass --factory module:callable "
                f"returning the unquantized architecture"
            )
        return checkpoint.load(path, _build_with(load_factory(factory), factory))
    if factory:
        raise click.UsageError("--factory is only used when MODEL is a checkpoint directory")
    return _build_with(load_factory(spec), spec)()


def _build_with(factory: Callable[[], Any], spec: str) -> Callable[[], nn.Module]:
    return lambda: _build(factory, spec)


def _factory_reference(spec: str) -> str:
    """``spec`` in a form that still resolves from another working directory (file paths made absolute)."""
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        return f"{Path(module_name).resolve()}:{attr}"
    return spec


def report_table(report: QuantizationReport) -> None:
    """Print a quantization report as a rich table plus its summary line."""
    rows = [
        [
            r.name,
            r.type,
            r.format,
            r.granularity,
            r.activations,
            f"{r.bits_per_weight:.3f}",
            f"{100 * r.weight_rel_error:.2f}%",
            f"{100 * r.output_rel_error:.2f}%",
            r.kernel,
        ]
        for r in report.rows
    ]
    columns = ["module", "type", "format", "granularity", "act", "bits/w", "weight err", "output err", "kernel"]
    s = report.summary
    caption = (
        f"{s.modules_quantized} quantized, {s.modules_skipped} skipped · {human_bytes(s.original_bytes)} → "
        f"{human_bytes(s.quantized_bytes)} ({s.compression:.2f}x) · {s.avg_bits_per_weight:.3f} bits/weight · "
        f"errors on {s.output_error_source} inputs"
    )
    print_table(
        f"recipe {s.recipe} (method {s.method}, adapter {s.adapter})",
        columns,
        rows,
        caption=caption,
        right_align=columns[5:8],
    )
    if report.skipped:
        print_table(
            "Kept in high precision", ["module", "type", "reason"], [[m.name, m.type, m.reason] for m in report.skipped]
        )
    for note in s.notes:
        echo(f"note: {note}")


@click.command()
@click.argument("model_spec", metavar="MODEL")
@click.option(
    "--recipe", "-r", required=True, help="A preset name (`polyquant recipes`) or a recipe file (.yaml/.toml/.json)."
)
@click.option(
    "--calib",
    "calib",
    metavar="SOURCE:ARG",
    help="Calibration data from a registered source, e.g. tensors:calib.safetensors.",
)
@click.option("--num-samples", type=click.IntRange(1), help="Use at most this many calibration samples.")
@click.option(
    "--tokenizer",
    metavar="DIR_OR_ID",
    help="Tokenizer for text calibration (--calib text:FILE): a local model directory or a hub id.",
)
@click.option("--seq-len", type=click.IntRange(1), help="Tokens per window for text calibration (default 2048).")
@click.option("--adapter", help="Model adapter to use (default: the best match).")
@click.option(
    "--factory", metavar="MODULE:CALLABLE", help="Builds the architecture when MODEL is a checkpoint without one."
)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Save the quantized model here.")
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as Markdown."
)
@click.option(
    "--strict", is_flag=True, help="Fail instead of keeping modules that cannot be quantized in high precision."
)
def quantize(
    model_spec: str,
    recipe: str,
    calib: str | None,
    num_samples: int | None,
    tokenizer: str | None,
    seq_len: int | None,
    adapter: str | None,
    factory: str | None,
    out: Path | None,
    report_path: Path | None,
    strict: bool,
) -> None:
    """Quantize MODEL (module:callable returning an nn.Module, or a checkpoint directory) with a recipe."""
    import polyquant
    from polyquant.calibration import load_calibration
    from polyquant.recipes import resolve

    resolved = resolve(recipe)  # fail on a bad recipe before building the model
    model = load_model(model_spec, factory)
    calibration = None
    if calib is not None:
        options: dict[str, object] = {"num_samples": num_samples} if num_samples else {}
        if tokenizer is not None:
            options["tokenizer"] = tokenizer
        if seq_len is not None:
            options["seq_len"] = seq_len
        calibration = load_calibration(calib, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        progress = sys.stderr.isatty()  # the progress bars of polyquant.quantize, on terminals only
        model, report = polyquant.quantize(
            model, resolved, calibration, adapter=adapter, strict=strict, progress=progress
        )
    for warning in caught:
        warn(" ".join(str(warning.message).split()))
    report_table(report)
    if not report.rows:
        warn(
            f"nothing was quantized: MODEL has no {'/'.join(resolved.modules)} module that the recipe selects "
            f"(is it already quantized?)"
        )
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(report.to_markdown() + "\n", encoding="utf-8")
        echo(f"report written to {report_path}")
    if out is not None:
        from polyquant import checkpoint

        if Path(model_spec).is_dir():
            factory_ref = factory or _recorded_factory(Path(model_spec))
        else:
            factory_ref = _factory_reference(model_spec)
        metadata = {FACTORY_KEY: factory_ref} if factory_ref else {}
        checkpoint.save(model, out, recipe=resolved, report=report, metadata=metadata)
        echo(f"quantized model saved to {out}")


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--verify", is_flag=True, help="Also check the SHA-256 of the weights file (reads all of it).")
def inspect_checkpoint(path: Path, as_json: bool, verify: bool) -> None:
    """Show what a polyquant checkpoint holds: formats, bits/weight, size and every quantized layer."""
    from polyquant import checkpoint

    summary = checkpoint.inspect(path, verify=verify)
    if as_json:
        print_json(summary.to_dict())
        return
    formats = ", ".join(f"{name} ({count})" for name, count in summary.formats.items()) or "none (unquantized)"
    echo(
        Text.assemble(
            (str(summary.path), "bold"), f"  polyquant {summary.polyquant_version}, format {summary.format_version}"
        )
    )
    echo(f"recipe: {summary.recipe or 'not recorded'}")
    echo(f"formats: {formats}")
    echo(
        f"size on disk: {human_bytes(summary.size_on_disk)} · quantized weights {human_bytes(summary.quantized_bytes)} "
        f"at {summary.avg_bits_per_weight:.3f} bits/weight · other tensors {human_bytes(summary.other_bytes)} "
        f"({summary.other_tensors})"
    )
    rows = [
        [
            layer.name,
            layer.type,
            layer.format,
            "x".join(str(s) for s in layer.shape),
            f"{layer.bits_per_weight:.3f}",
            human_bytes(layer.nbytes),
        ]
        for layer in summary.layers
    ]
    print_table(
        "Quantized layers",
        ["layer", "type", "format", "shape", "bits/weight", "size"],
        rows,
        right_align=["bits/weight", "size"],
    )

"""``inspect(dir)``: what a checkpoint holds, from its manifest and safetensors header alone.

This backs ``polyquant inspect PATH``. No tensor data is read unless ``verify=True`` asks for the hash check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyquant.checkpoint.manifest import module_prefix, read_manifest, verify_files

__all__ = ["CheckpointSummary", "LayerSummary", "inspect"]


@dataclass(frozen=True)
class LayerSummary:
    """One quantized module of a checkpoint, as ``polyquant inspect`` lists it.

    Attributes:
        name: qualified module name.
        type: quantized module class (``QLinear``, ...).
        format: weight format name.
        shape: logical weight shape.
        bits_per_weight: stored bits per weight element, scales and zeros included.
        nbytes: bytes of the stored weight tensors.
    """

    name: str
    type: str
    format: str
    shape: tuple[int, ...]
    bits_per_weight: float
    nbytes: int


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint holds, computed from its manifest and safetensors header (no tensor data read).

    Attributes:
        path: the checkpoint directory.
        polyquant_version: the polyquant that wrote it.
        format_version: checkpoint format version.
        recipe: the recipe's name when recorded (``None`` otherwise).
        formats: format name → number of quantized modules using it.
        layers: per quantized module rows, in model order.
        size_on_disk: bytes of every file in the directory.
        quantized_bytes: bytes of all quantized weights.
        quantized_weights: number of quantized weight elements.
        other_bytes: bytes of every other tensor (norms, biases, embeddings kept in high precision, ...).
        other_tensors: number of those tensors.

    Example:
        >>> summary = inspect("out/mlp")  # doctest: +SKIP
        >>> print(summary.to_markdown())  # doctest: +SKIP
    """

    path: Path
    polyquant_version: str
    format_version: str
    recipe: str | None
    formats: Mapping[str, int]
    layers: tuple[LayerSummary, ...]
    size_on_disk: int
    quantized_bytes: int
    quantized_weights: int
    other_bytes: int
    other_tensors: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def avg_bits_per_weight(self) -> float:
        """Average stored bits per quantized weight element (``0.0`` when nothing is quantized)."""
        return 8.0 * self.quantized_bytes / self.quantized_weights if self.quantized_weights else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``polyquant inspect --json``)."""
        return {
            "path": str(self.path),
            "polyquant_version": self.polyquant_version,
            "format_version": self.format_version,
            "recipe": self.recipe,
            "formats": dict(self.formats),
            "layers": [{**vars(layer), "shape": list(layer.shape)} for layer in self.layers],
            "totals": {
                "size_on_disk": self.size_on_disk,
                "quantized_bytes": self.quantized_bytes,
                "quantized_weights": self.quantized_weights,
                "avg_bits_per_weight": self.avg_bits_per_weight,
                "other_bytes": self.other_bytes,
                "other_tensors": self.other_tensors,
            },
            "metadata": dict(self.metadata),
        }

    def to_markdown(self) -> str:
        """A human-readable summary: header lines, the per-layer table and totals."""
        formats = ", ".join(f"{name} ({count})" for name, count in self.formats.items()) or "none (unquantized)"
        lines = [
            f"# {self.path}",
            "",
            f"- written by polyquant {self.polyquant_version} (checkpoint format {self.format_version})",
            f"- recipe: {self.recipe or 'not recorded'}",
            f"- formats: {formats}",
            f"- size on disk: {_human(self.size_on_disk)}; quantized weights {_human(self.quantized_bytes)} at "
            f"{self.avg_bits_per_weight:.3f} bits/weight; other tensors {_human(self.other_bytes)} "
            f"({self.other_tensors})",
            "",
            "| layer | type | format | shape | bits/weight | bytes |",
            "|---|---|---|---|---:|---:|",
        ]
        for r in self.layers:
            shape = "x".join(str(s) for s in r.shape)
            lines.append(f"| {r.name} | {r.type} | {r.format} | {shape} | {r.bits_per_weight:.3f} | {r.nbytes} |")
        return "\n".join(lines) + "\n"


def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def inspect(directory: str | os.PathLike[str], *, verify: bool = False) -> CheckpointSummary:
    """Summarize a checkpoint cheaply: manifest and safetensors header only, unless ``verify`` hashes the file.

    Args:
        directory: a checkpoint written by :func:`save`.
        verify: also check the file's SHA-256 (reads all tensor data).

    Raises:
        CheckpointError: the same manifest, version, size and header checks as :func:`load`.

    Example:
        >>> inspect("out/mlp").avg_bits_per_weight  # doctest: +SKIP
        8.25
    """
    root = Path(directory).expanduser()
    manifest = read_manifest(root)
    header = verify_files(root, manifest, check_hash=verify)

    def nbytes(name: str) -> int:
        start, end = header[manifest["aliases"].get(name, name)]["data_offsets"]
        return int(end) - int(start)

    layers: list[LayerSummary] = []
    formats: dict[str, int] = {}
    counted: set[str] = set()
    quantized_bytes = quantized_weights = 0
    for name, entry in manifest["modules"].items():
        names = [f"{module_prefix(name)}weight.{part}" for part in entry["parts"]]
        size = sum(nbytes(n) for n in names)
        numel = 1
        for dim in entry["shape"]:
            numel *= dim
        layers.append(
            LayerSummary(name, entry["type"], entry["format"], tuple(entry["shape"]), 8.0 * size / max(numel, 1), size)
        )
        formats[entry["format"]] = formats.get(entry["format"], 0) + 1
        canonical = {manifest["aliases"].get(n, n) for n in names}
        if not canonical <= counted:  # a QTensor shared by two modules is stored, and counted, once
            quantized_bytes += size
            quantized_weights += numel
        counted |= canonical
    others = [n for n in manifest["tensors"] if n not in counted]
    recipe = manifest.get("recipe") or {}
    return CheckpointSummary(
        path=root,
        polyquant_version=str(manifest.get("polyquant_version", "?")),
        format_version=str(manifest["format_version"]),
        recipe=recipe.get("name") or None,
        formats=formats,
        layers=tuple(layers),
        size_on_disk=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        quantized_bytes=quantized_bytes,
        quantized_weights=quantized_weights,
        other_bytes=sum(nbytes(n) for n in others),
        other_tensors=len(others),
        metadata=manifest["metadata"],
    )

"""The report :func:`polyquant.quantize` returns: one row per quantized module, skipped modules, totals.

Numbers are exact: ``bits_per_weight`` and ``quantized_bytes`` come from the quantized weight's own
accounting (codes, scales, zero points and tensor scales included), so for every row
``quantized_bytes · 8 / params == bits_per_weight`` up to the byte rounding of packed codes.

Example:
    >>> import torch, polyquant
    >>> model, report = polyquant.quantize(torch.nn.Sequential(torch.nn.Linear(64, 64)), "w8a16", progress=False)
    >>> report.summary.modules_quantized
    1
    >>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ModuleReport", "QuantizationReport", "ReportSummary", "SkippedModule"]


@dataclass(frozen=True)
class ModuleReport:
    """What happened to one quantized module.

    Attributes:
        name: qualified module name.
        type: original module class (``Linear``, ``Conv1d``, ...).
        format: weight format name.
        granularity: e.g. ``per-group(128)``.
        activations: activation quantization label (``int8-token-dyn``) or ``"none"``.
        params: number of weights.
        original_bytes: bytes of the original weight.
        quantized_bytes: bytes of the quantized weight (codes + scales + zeros).
        bits_per_weight: exact, scales included.
        weight_rel_error: ``‖W − Ŵ‖ / ‖W‖`` (Frobenius).
        output_rel_error: ``‖y − ŷ‖ / ‖y‖`` of the module alone on ``output_error_source`` inputs.
        output_error_source: ``"calibration"`` or ``"random probe"``.
        kernel: the kernel dispatch chooses for a representative input, or ``"none: <why>"``.
    """

    name: str
    type: str
    format: str
    granularity: str
    activations: str
    params: int
    original_bytes: int
    quantized_bytes: int
    bits_per_weight: float
    weight_rel_error: float
    output_rel_error: float
    output_error_source: str
    kernel: str


@dataclass(frozen=True)
class SkippedModule:
    """A module of a requested type that was left in high precision, and why."""

    name: str
    type: str
    reason: str


@dataclass(frozen=True)
class ReportSummary:
    """Totals over the whole model.

    Attributes:
        recipe: the recipe's name.
        adapter: the adapter used.
        method: the weight quantizer.
        modules_quantized: number of quantized modules.
        modules_skipped: number of skipped modules of requested types.
        params_quantized: weights in quantized modules.
        total_params: parameters of the model before quantization.
        original_bytes: bytes of the model's parameters and buffers before quantization.
        quantized_bytes: the same after quantization (quantized weights at their exact size).
        compression: ``original_bytes / quantized_bytes``.
        avg_bits_per_weight: over the quantized weights, scales included.
        output_error_source: where the output errors were measured.
        notes: anything the user should know (settings recorded but not applied, ...).
    """

    recipe: str
    adapter: str
    method: str
    modules_quantized: int
    modules_skipped: int
    params_quantized: int
    total_params: int
    original_bytes: int
    quantized_bytes: int
    compression: float
    avg_bits_per_weight: float
    output_error_source: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantizationReport:
    """Rows, skipped modules and totals of one :func:`polyquant.quantize` call.

    Example:
        >>> report.to_dict()["summary"]["compression"]  # doctest: +SKIP
        1.98
    """

    rows: tuple[ModuleReport, ...]
    skipped: tuple[SkippedModule, ...]
    summary: ReportSummary
    recipe: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> ModuleReport:
        """The row of module ``name`` (``KeyError`` when it was not quantized)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite floats become ``None``)."""
        data: dict[str, Any] = _json_safe(
            {
                "summary": asdict(self.summary),
                "rows": [asdict(r) for r in self.rows],
                "skipped": [asdict(s) for s in self.skipped],
                "recipe": self.recipe,
            }
        )
        return data

    def to_markdown(self) -> str:
        """A summary paragraph, the per-module table and the skipped modules, as Markdown."""
        s = self.summary
        lines = [
            f"**polyquant** recipe `{s.recipe}` (method `{s.method}`, adapter `{s.adapter}`): "
            f"{s.modules_quantized} modules quantized, {s.modules_skipped} skipped; "
            f"{_bytes(s.original_bytes)} → {_bytes(s.quantized_bytes)} ({s.compression:.2f}×), "
            f"{s.avg_bits_per_weight:.3f} bits/weight over {s.params_quantized:,} quantized weights "
            f"of {s.total_params:,} parameters. Output errors measured on {s.output_error_source} inputs.",
            "",
            "| module | type | format | granularity | act | bits/w | weight err | output err | kernel |",
            "|---|---|---|---|---|---:|---:|---:|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {r.type} | {r.format} | {r.granularity} | {r.activations} | {r.bits_per_weight:.3f} | "
                f"{_pct(r.weight_rel_error)} | {_pct(r.output_rel_error)} | {r.kernel} |"
            )
        if self.skipped:
            lines += ["", "| skipped module | type | reason |", "|---|---|---|"]
            lines += [f"| {m.name} | {m.type} | {m.reason} |" for m in self.skipped]
        if s.notes:
            lines += [""] + [f"- {note}" for note in s.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100.0 * value:.2f}%"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - loop always returns


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value

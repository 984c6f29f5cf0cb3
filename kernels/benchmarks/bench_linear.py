"""Benchmark quantized linear kernels against fp32 and bf16 ``nn.Linear`` on CPU.

Decode (GEMV, batch 1) and prefill-like (GEMM, batch 32) on LLM-sized layers. Each variant cycles through
enough distinct layers that its weights are not cache-resident (working set ≥ 2× the last-level cache and
at least 8 layers), so decode numbers measure memory traffic the way a real model does. Quantized
variants run through ``polyquant.kernels.linear`` with a per-layer cache, exactly as a quantized module
does (fp32 input and output), and the script checks which kernel dispatch selected.

    python kernels/benchmarks/bench_linear.py              # full run (a few minutes on 2 cores)
    python kernels/benchmarks/bench_linear.py --quick      # CI smoke: one shape, two layers, three rounds

Not a test: speed is measured here, never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import polyquant
from polyquant.activations import ActivationSpec
from polyquant.plugins import KernelContext

SHAPES = ((4096, 4096), (11008, 4096))  # (out_features, in_features)
BATCHES = (1, 32)
TARGETS = {  # (variant, batch) -> minimum speedup over fp32 nn.Linear
    ("int4 g128 w-only", 1): 4.0,
    ("w8a8 int8 dyn", 32): 2.0,
}


@dataclass(frozen=True)
class Variant:
    """One thing to time: builds a layer from a seed; ``run(layer, x)`` computes its output."""

    name: str
    kernel: str | None  # the kernel dispatch must select (None: plain torch)
    input_dtype: torch.dtype
    build: Callable[[int, int, int], Any]
    run: Callable[[Any, torch.Tensor], torch.Tensor]
    nbytes: Callable[[Any], int]


@dataclass
class QLayer:
    """A quantized weight plus the per-module dispatch cache a QLinear would own."""

    weight: Any
    act: ActivationSpec | None
    cache: dict[str, Any]


def _dense(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / math.sqrt(k)


def _linear(dtype: torch.dtype) -> Callable[[int, int, int], torch.nn.Linear]:
    def build(n: int, k: int, seed: int) -> torch.nn.Linear:
        layer = torch.nn.Linear(k, n, bias=False, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(_dense(n, k, seed))
        return layer.requires_grad_(False)

    return build


def _quantized(fmt: str, act: ActivationSpec | None, **options: Any) -> Callable[[int, int, int], QLayer]:
    def build(n: int, k: int, seed: int) -> QLayer:
        spec = polyquant.formats.get(fmt)
        if options:
            spec = spec.with_options(**options)
        return QLayer(spec.quantize(_dense(n, k, seed)), act, {})

    return build


def _run_quantized(layer: QLayer, x: torch.Tensor) -> torch.Tensor:
    return polyquant.kernels.linear(x, layer.weight, act=layer.act, cache=layer.cache)


def _prepared_bytes(layer: QLayer) -> int:
    """Bytes the kernel reads per call: its repacked weight (what stays resident next to the QTensor)."""
    total = 0
    for memo in layer.cache.values():
        for prepared in getattr(memo, "prepared", {}).values():
            for value in vars(prepared).values():
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
    return total or int(layer.weight.nbytes)


VARIANTS = (
    Variant(
        "fp32 nn.Linear", None, torch.float32, _linear(torch.float32), lambda m, x: m(x), lambda m: m.weight.nbytes
    ),
    Variant(
        "bf16 nn.Linear", None, torch.bfloat16, _linear(torch.bfloat16), lambda m, x: m(x), lambda m: m.weight.nbytes
    ),
    Variant(
        "int4 g128 w-only",
        "cpu_int4pack",
        torch.float32,
        _quantized("int4", None, group_size=128),
        _run_quantized,
        _prepared_bytes,
    ),
    Variant("int8 w-only", "cpu_int8pack", torch.float32, _quantized("int8", None), _run_quantized, _prepared_bytes),
    Variant(
        "w8a8 int8 dyn",
        "cpu_w8a8_intmm",
        torch.float32,
        _quantized("int8", ActivationSpec("int8", granularity="token", dynamic=True)),
        _run_quantized,
        _prepared_bytes,
    ),
)


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs), or 260 MiB when unknown."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * factor)
    return max(sizes) if sizes else 260 << 20


def layer_count(n: int, k: int, llc: int, minimum: int) -> int:
    """Layers to cycle through so that even the int4 working set (0.5 byte/weight) is ≥ 2× the LLC."""
    return max(minimum, math.ceil(2 * llc / (n * k * 0.5)))


def check_kernel(variant: Variant, layer: QLayer, batch: int) -> None:
    ctx = KernelContext(
        op="linear",
        format=layer.weight.spec.name,
        device="cpu",
        dtype=variant.input_dtype,
        weight=layer.weight,
        act_format=None if layer.act is None else layer.act.format,
        batch=batch,
    )
    chosen = polyquant.kernels.select_kernel(ctx)
    if chosen.name != variant.kernel:
        why = {c.name: c.reason for c in polyquant.kernels.explain("linear", ctx)}
        raise SystemExit(f"{variant.name}: dispatch selected {chosen.name}, expected {variant.kernel}: {why}")


def measure_shape(n: int, k: int, layers: int, rounds: int) -> dict[tuple[str, int], tuple[float, float, int]]:
    """Time every variant and batch on ``layers`` distinct ``n×k`` layers, interleaved round by round.

    Each round makes one pass through all layers per (variant, batch) and keeps the median call time of
    that pass. Interleaving spreads background load on a shared machine over every variant alike; the
    best round is the least disturbed one. Returns ``(best ms, median ms, weight bytes)`` per key.
    """
    built = {v.name: [v.build(n, k, seed) for seed in range(layers)] for v in VARIANTS}
    inputs = {(v.name, b): torch.randn(b, k).to(v.input_dtype) for v in VARIANTS for b in BATCHES}
    per_round: dict[tuple[str, int], list[float]] = {key: [] for key in inputs}
    with torch.inference_mode():
        for variant in VARIANTS:
            for batch in BATCHES:
                if variant.kernel is not None:
                    check_kernel(variant, built[variant.name][0], batch)
                for layer in built[variant.name]:  # warm-up (repacking happens here, not in the timing)
                    variant.run(layer, inputs[variant.name, batch])
        for _ in range(rounds):
            for batch in BATCHES:
                for variant in VARIANTS:
                    x = inputs[variant.name, batch]
                    calls = []
                    for layer in built[variant.name]:
                        t0 = time.perf_counter()
                        variant.run(layer, x)
                        calls.append(time.perf_counter() - t0)
                    per_round[variant.name, batch].append(statistics.median(calls) * 1e3)
    nbytes = {v.name: v.nbytes(built[v.name][0]) for v in VARIANTS}
    return {key: (min(ms), statistics.median(ms), nbytes[key[0]]) for key, ms in per_round.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 4096x4096 only, 2 layers, 3 rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 10, quick 3)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    llc = last_level_cache_bytes()
    shapes = SHAPES[:1] if args.quick else SHAPES
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 10)
    header = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, last-level cache {llc >> 20} MiB, {rounds} rounds"
    )
    print(header)
    rows = [
        "| layer (out×in) | layers cycled | batch | variant | kernel | weight MiB/layer | ms/call (best round) "
        "| ms/call (median round) | vs fp32 (best) | vs fp32 (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses: list[str] = []
    for n, k in shapes:
        layers = 2 if args.quick else layer_count(n, k, llc, minimum=8)
        measured = measure_shape(n, k, layers, rounds)
        for batch in BATCHES:
            fp32_best, fp32_median, _ = measured["fp32 nn.Linear", batch]
            for variant in VARIANTS:
                best, median, nbytes = measured[variant.name, batch]
                cells = (
                    f"{n}×{k}",
                    layers,
                    batch,
                    variant.name,
                    variant.kernel or "torch",
                    f"{nbytes / (1 << 20):.1f}",
                    f"{best:.3f}",
                    f"{median:.3f}",
                    f"{fp32_best / best:.2f}×",
                    f"{fp32_median / median:.2f}×",
                )
                rows.append("| " + " | ".join(str(c) for c in cells) + " |")
                target = TARGETS.get((variant.name, batch))
                if target is not None and fp32_best / best < target:
                    misses.append(f"{variant.name} batch {batch} on {n}×{k}: {fp32_best / best:.2f}× < {target}×")
            print("\n".join(rows[-len(VARIANTS) :]), flush=True)
    table = "\n".join([header, "", *rows])
    print()
    print(table)
    for (name, batch), target in TARGETS.items():
        print(f"target: {name} at batch {batch} >= {target}x faster than fp32 nn.Linear (best rounds)")
    print("\n".join(f"MISSED: {m}" for m in misses) if misses else "all targets met")
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

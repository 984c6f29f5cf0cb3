"""``polyquant demo``: quantize a small trained network with several presets and compare them.

The model is a plain-PyTorch MLP *student* trained for a few seconds to imitate a fixed random *teacher*
network, so the errors the table shows are the errors of a network that has actually learned
something (not of random weights). For each preset the demo reports, all measured in the same run:

* the model's size and the compression against fp32,
* the output error against the fp32 student (relative L2 over held-out inputs),
* the task loss (MSE to the teacher) next to the fp32 student's,
* the time of one forward pass and the ratio to the fp32 forward.

Example:
    $ polyquant demo --presets w8a16,w4a16-g128,nf4 --out ./polyquant-demo
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import torch

from polyquant.cli.output import echo, human_bytes, print_table, progress
from polyquant.errors import RecipeError

__all__ = ["DEFAULT_PRESETS", "DemoResult", "DemoTask", "benchmark_forward", "demo", "run_demo", "train_student"]

DEFAULT_PRESETS: tuple[str, ...] = ("w8a16", "w4a16-g128", "w3a16", "nf4", "mxfp4", "nvfp4", "w8a8")


@dataclass(frozen=True)
class DemoTask:
    """The synthetic regression task: imitate ``teacher`` on Gaussian inputs.

    Attributes:
        teacher: a fixed random network; its outputs are the targets.
        train_inputs: inputs the student is trained on.
        test_inputs: held-out inputs used for every error in the report.
    """

    teacher: torch.nn.Module
    train_inputs: torch.Tensor
    test_inputs: torch.Tensor

    @classmethod
    def make(cls, *, width: int = 128, samples: int = 4096, seed: int = 0) -> DemoTask:
        """A task with ``width``-dimensional inputs and outputs, drawn with ``seed``.

        Example:
            >>> task = DemoTask.make(width=128, samples=256)
            >>> tuple(task.test_inputs.shape)
            (256, 128)
        """
        generator = torch.Generator().manual_seed(seed)
        teacher = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, width))
        with torch.no_grad():
            for param in teacher.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * (1.5 / param.shape[-1] ** 0.5))
        teacher.requires_grad_(False)
        train = torch.randn(samples, width, generator=generator)
        test = torch.randn(samples // 4, width, generator=generator)
        return cls(teacher=teacher, train_inputs=train, test_inputs=test)

    def loss(self, model: torch.nn.Module) -> float:
        """Task error of ``model`` on the test inputs: MSE to the teacher / variance of the teacher's outputs.

        0 is a perfect imitation; 1 is what always predicting the mean output scores.
        """
        with torch.inference_mode():
            target = self.teacher(self.test_inputs)
            return float(torch.nn.functional.mse_loss(model(self.test_inputs), target) / target.var())


def make_student(width: int = 128, hidden: int = 256, seed: int = 0) -> torch.nn.Sequential:
    """The student MLP: ``width → hidden → hidden → width`` with GELUs (dimensions divisible by 128).

    Example:
        >>> sum(p.numel() for p in make_student(128, 256).parameters())
        131712
    """
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(width, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, width),
    )


def train_student(
    task: DemoTask, *, steps: int = 300, batch: int = 128, hidden: int = 256, seed: int = 0
) -> torch.nn.Module:
    """Train a fresh student on ``task`` with Adam for ``steps`` steps (a few seconds on two CPU cores).

    Example:
        >>> task = DemoTask.make(width=128, samples=512)
        >>> student = train_student(task, steps=20, hidden=128)
        >>> task.loss(student) < task.loss(make_student(128, 128))
        True
    """
    width = task.train_inputs.shape[1]
    student = make_student(width, hidden, seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        targets = task.teacher(task.train_inputs)
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, task.train_inputs.shape[0], (batch,), generator=generator)
        loss = torch.nn.functional.mse_loss(student(task.train_inputs[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
    student.eval().requires_grad_(False)
    return student


def benchmark_forward(
    model: torch.nn.Module, x: torch.Tensor, *, repeats: int = 20, warmup: int = 2, budget_s: float = 1.0
) -> float:
    """Median wall time of ``model(x)`` in milliseconds (inference mode, after ``warmup`` calls).

    Stops early, after at least three timed calls, once ``budget_s`` seconds have been spent, so a slow
    (reference-kernel) model does not dominate the run.

    Example:
        >>> benchmark_forward(torch.nn.Linear(8, 8), torch.randn(2, 8), repeats=3) > 0
        True
    """
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        deadline = time.perf_counter() + budget_s
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@dataclass(frozen=True)
class DemoResult:
    """One row of the demo table.

    Attributes:
        preset: recipe preset name (``"fp32"`` for the unquantized student).
        size_bytes: bytes of all the model's tensors (quantized weights with their scales).
        bits_per_weight: average bits per quantized weight (32 for fp32).
        relative_error: relative L2 error of the outputs against the fp32 student.
        task_loss: MSE against the teacher on held-out inputs, divided by the variance of the teacher's outputs.
        ms_per_forward: median time of one forward pass of ``batch`` rows.
        speed_vs_fp32: fp32 time / this time (above 1: faster than fp32).
    """

    preset: str
    size_bytes: int
    bits_per_weight: float
    relative_error: float
    task_loss: float
    ms_per_forward: float
    speed_vs_fp32: float


def _model_bytes(model: torch.nn.Module) -> tuple[int, float]:
    from polyquant.evaluation import model_size

    size = model_size(model)
    bits = float(size.get("bits_per_weight") or 0.0) or 32.0
    return int(size["total_bytes"]), bits


def run_demo(
    presets: Sequence[str] = DEFAULT_PRESETS,
    *,
    steps: int = 300,
    width: int = 128,
    hidden: int = 256,
    batch: int = 16,
    repeats: int = 20,
    seed: int = 0,
) -> tuple[list[DemoResult], dict[str, Any]]:
    """Train the student, quantize it with each preset and measure every row of the table.

    Args:
        presets: recipe preset names (each must be registered).
        steps: training steps of the student.
        width: input/output width of the task.
        hidden: hidden width of the student.
        batch: rows per forward pass in the timing.
        repeats: timed forward passes per model (the median is reported).
        seed: seed of the task, the student and the calibration data.

    Returns:
        The rows (fp32 first) and a description of the setup for the report.

    Raises:
        RecipeError: a preset name is not registered (the message lists the registered ones).
    """
    import polyquant
    from polyquant.evaluation import output_error
    from polyquant.plugins import get_plugin_manager

    known = get_plugin_manager().get_recipes()
    unknown = [p for p in presets if p not in known]
    if unknown:
        raise RecipeError(f"unknown preset(s) {', '.join(unknown)}; run `polyquant recipes` for the registered ones")
    task = DemoTask.make(width=width, seed=seed)
    start = time.perf_counter()
    untrained = task.loss(make_student(width, hidden, seed))
    student = train_student(task, steps=steps, hidden=hidden, seed=seed)
    train_seconds = time.perf_counter() - start
    x = task.test_inputs[:batch]
    calibration = [task.train_inputs[i : i + 64] for i in range(0, 512, 64)]

    fp32_ms = benchmark_forward(student, x, repeats=repeats)
    fp32_bytes, _ = _model_bytes(student)
    rows = [DemoResult("fp32", fp32_bytes, 32.0, 0.0, task.loss(student), fp32_ms, 1.0)]
    with progress("quantizing", total=len(presets)) as advance:
        for preset in presets:
            model, _report = polyquant.quantize(copy.deepcopy(student), preset, calibration=calibration, progress=False)
            model.eval()
            error = output_error(student, model, [task.test_inputs])  # one input: the whole batch
            ms = benchmark_forward(model, x, repeats=repeats)
            size, bits = _model_bytes(model)
            rows.append(DemoResult(preset, size, bits, float(error["relative_l2"]), task.loss(model), ms, fp32_ms / ms))
            advance(preset)
    n_params = sum(p.numel() for p in student.parameters())
    setup = {
        "model": f"MLP {width}→{hidden}→{hidden}→{width} (GELU), {n_params} parameters",
        "task": f"imitate a random tanh teacher on N(0,1) inputs; {steps} Adam steps in {train_seconds:.1f} s",
        "timing": f"median of up to {repeats} forward passes of {batch} rows, {torch.get_num_threads()} thread(s)",
        "trained": f"fp32 task error {rows[0].task_loss:.4f} (untrained: {untrained:.4f})",
        "torch": torch.__version__,
    }
    return rows, setup


def _table_rows(rows: Sequence[DemoResult]) -> list[list[str]]:
    fp32 = rows[0].size_bytes
    return [
        [
            r.preset,
            human_bytes(r.size_bytes),
            f"{fp32 / r.size_bytes:.1f}x",
            f"{r.bits_per_weight:.2f}",
            f"{r.relative_error:.4f}",
            f"{r.task_loss:.4f}",
            f"{r.ms_per_forward:.3f}",
            f"{r.speed_vs_fp32:.2f}x",
        ]
        for r in rows
    ]


COLUMNS = [
    "preset",
    "size",
    "compression",
    "bits/weight",
    "output rel. error",
    "task error",
    "ms/forward",
    "speed vs fp32",
]


def render_markdown(rows: Sequence[DemoResult], setup: dict[str, Any]) -> str:
    """The demo report as markdown (setup list and the results table).

    Example:
        >>> row = DemoResult("fp32", 1024, 32.0, 0.0, 0.01, 0.5, 1.0)
        >>> "| fp32 |" in render_markdown([row], {"model": "MLP"})
        True
    """
    lines = ["# polyquant demo", ""]
    lines += [f"- **{key}**: {value}" for key, value in setup.items()]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _table_rows(rows)]
    lines += [
        "",
        "Output error is relative to the fp32 student; task error is the MSE to the teacher divided by the variance",
        "of the teacher's outputs (lower is better).",
        "Speed is measured with the kernels this machine selects (`polyquant kernels`); on CPUs without a fast",
        "kernel for a format, weights are dequantized on the fly and quantized models are slower than fp32.",
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--presets",
    default=",".join(DEFAULT_PRESETS),
    show_default=True,
    help="Comma-separated recipe presets to compare.",
)
@click.option(
    "--steps", type=click.IntRange(1, 100_000), default=300, show_default=True, help="Training steps of the model."
)
@click.option(
    "--repeats", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Timed forward passes per model."
)
@click.option(
    "--batch", type=click.IntRange(1, 4096), default=16, show_default=True, help="Rows per timed forward pass."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the task, model and data.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("polyquant-demo"),
    show_default=True,
    help="Directory for report.md and results.json.",
)
def demo(presets: str, steps: int, repeats: int, batch: int, seed: int, out: Path) -> None:
    """Quantize a small freshly trained network with several presets; compare size, error and speed."""
    import json

    names = [p.strip() for p in presets.split(",") if p.strip()]
    if not names:
        raise click.BadParameter("give at least one preset", param_hint="--presets")
    rows, setup = run_demo(names, steps=steps, repeats=repeats, batch=batch, seed=seed)
    print_table("polyquant demo", COLUMNS, _table_rows(rows), caption=setup["model"], right_align=COLUMNS[1:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(rows, setup), encoding="utf-8")
    payload = {"setup": setup, "results": [asdict(r) for r in rows]}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    echo(f"report written to {out / 'report.md'}")

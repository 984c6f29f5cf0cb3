"""``polyquant kernels``: which kernels are registered, which can run here, and why one is chosen.

Example:
    $ polyquant kernels
    $ polyquant kernels --explain linear --format int4 --dtype bfloat16 --batch 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from polyquant.cli.output import echo, print_json, print_table, styled
from polyquant.errors import FormatError, KernelError
from polyquant.plugins import KERNEL_OPS, KernelContext, KernelSpec, get_plugin_manager

if TYPE_CHECKING:
    import torch

__all__ = ["explain_context", "kernels"]

_DTYPES = ("float32", "float16", "bfloat16", "float64")
_WEIGHT_OPS = ("linear", "conv", "dequantize")


def _availability(kernel: KernelSpec) -> str | None:
    from polyquant.kernels import kernel_availability

    return kernel_availability(kernel)


def _record(kernel: KernelSpec, provider: str) -> dict[str, Any]:
    why_not = _availability(kernel)
    return {
        "op": kernel.op,
        "name": kernel.name,
        "formats": list(kernel.formats),
        "device": kernel.device,
        "backend": kernel.backend,
        "priority": kernel.priority,
        "available": why_not is None,
        "unavailable_reason": why_not,
        "description": kernel.description,
        "plugin": provider,
    }


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().replace(",", "x").split("x") if part)
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise click.BadParameter(f"{text!r} is not a shape; write positive sizes like 256x512", param_hint="--shape")
    return shape


def explain_context(
    op: str,
    fmt: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    batch: int = 1,
    shape: tuple[int, ...] = (256, 512),
) -> KernelContext:
    """The :class:`KernelContext` that ``--explain`` asks dispatch about.

    Ops with a weight get a real quantized weight of ``shape`` in format ``fmt`` (so kernels whose
    ``supports`` looks at group sizes or packing see a realistic call); ``quantize_activation`` gets
    ``fmt`` as its activation format.

    Raises:
        FormatError: ``fmt`` is unknown or cannot quantize a weight of ``shape``.

    Example:
        >>> explain_context("linear", "int8", shape=(16, 32)).weight.shape
        torch.Size([16, 32])
    """
    import torch

    import polyquant.formats

    torch_dtype: torch.dtype = getattr(torch, dtype)
    if op not in _WEIGHT_OPS:
        return KernelContext(op=op, format=fmt, device=device, dtype=torch_dtype, act_format=fmt, batch=batch)
    spec = polyquant.formats.get(fmt)
    generator = torch.Generator().manual_seed(0)
    try:
        weight = spec.quantize(torch.randn(shape, generator=generator))
    except FormatError as exc:
        raise FormatError(f"{exc} (choose a weight shape that suits {fmt!r} with --shape)") from exc
    return KernelContext(op=op, format=fmt, device=device, dtype=torch_dtype, weight=weight, batch=batch)


def _explain(op: str, fmt: str, device: str, dtype: str, batch: int, shape: str, as_json: bool) -> None:
    from polyquant.kernels import active_overrides, explain

    ctx = explain_context(op, fmt, device=device, dtype=dtype, batch=batch, shape=_parse_shape(shape))
    choices = explain(op, ctx)
    if as_json:
        print_json(
            {
                "op": op,
                "format": fmt,
                "device": device,
                "dtype": dtype,
                "batch": batch,
                "overrides": active_overrides(),
                "choices": [
                    {
                        "kernel": c.kernel.name,
                        "backend": c.kernel.backend,
                        "priority": c.kernel.priority,
                        "selected": c.selected,
                        "reason": c.reason,
                    }
                    for c in choices
                ],
            }
        )
        return
    rows = [
        [styled("→", "green") if c.selected else "", c.kernel.name, c.kernel.backend, c.kernel.priority, c.reason]
        for c in choices
    ]
    title = f"{op} with {fmt} weights on {device}, {dtype} input, batch {batch}"
    print_table(title, ["", "kernel", "backend", "priority", "decision"], rows, right_align=["priority"])
    selected = [c.kernel.name for c in choices if c.selected]
    if not selected:
        raise KernelError(f"no kernel can run {op} with {fmt} weights on {device}; see the reasons above")
    echo(Text.assemble("selected: ", (selected[0], "bold")))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--op", "op_filter", type=click.Choice(KERNEL_OPS), help="Only list kernels of this op.")
@click.option("--explain", "explain_op", type=click.Choice(KERNEL_OPS), help="Explain which kernel runs OP and why.")
@click.option("--format", "fmt", help="Weight format of the call to explain (required with --explain).")
@click.option("--device", default="cpu", show_default=True, help="Device type of the call to explain.")
@click.option(
    "--dtype", type=click.Choice(_DTYPES), default="float32", show_default=True, help="Input dtype of the call."
)
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Rows of the flattened input.")
@click.option("--shape", default="256x512", show_default=True, help="Shape of the quantized weight of the call.")
def kernels(
    as_json: bool,
    op_filter: str | None,
    explain_op: str | None,
    fmt: str | None,
    device: str,
    dtype: str,
    batch: int,
    shape: str,
) -> None:
    """List kernels (op, formats, device, backend, priority, whether they can run here), or explain a choice.

    Overrides from POLYQUANT_KERNELS (e.g. linear=reference) are taken into account by --explain.
    """
    if explain_op is not None:
        if not fmt:
            raise click.UsageError("--explain needs --format (the weight format of the call)")
        _explain(explain_op, fmt, device, dtype, batch, shape, as_json)
        return
    pm = get_plugin_manager()
    records = [_record(k, pm.provider("kernel", k.key)) for k in pm.get_kernels(op_filter)]
    records.sort(key=lambda r: (r["op"], -r["priority"], r["name"]))
    if as_json:
        print_json(records)
        return
    rows = [
        [
            r["op"],
            r["name"],
            ", ".join(r["formats"]) if len(r["formats"]) <= 6 else f"{len(r['formats'])} formats",
            r["device"],
            r["backend"],
            r["priority"],
            styled("yes", "green") if r["available"] else styled(f"no: {r['unavailable_reason']}", "yellow"),
            r["plugin"],
        ]
        for r in records
    ]
    columns = ["op", "name", "formats", "device", "backend", "priority", "available here", "plugin"]
    print_table("Kernels", columns, rows, right_align=["priority"])

"""The plugin's command group, mounted as ``polyquant example`` (and as the script ``polyquant-example``).

Example:
    $ polyquant example show
    $ polyquant example roundtrip --rows 256 --cols 1024
"""

from __future__ import annotations

import click
import torch

from polyquant.cli.main import run_domain_cli
from polyquant.cli.output import echo, print_table
from polyquant_example.format import DEFAULT_GROUP_SIZE, ELEMENT, FORMAT_NAME, integer_levels

__all__ = ["example", "main"]


@click.group()
def example() -> None:
    """The example plugin: the int4_pow2 format (int4 with power-of-two group scales)."""


@example.command()
def show() -> None:
    """Print the 16 codes of int4_pow2 and the value each stands for."""
    codes = torch.arange(1 << ELEMENT.bits, dtype=torch.uint8)
    values = ELEMENT.decode(codes) * 4
    rows = [
        [f"{int(c):2d}", f"{int(c):04b}", "-" if int(c) & 0x8 else "+", int(c) & 0x7, f"{int(v):+d} · step"]
        for c, v in zip(codes, values, strict=True)
    ]
    print_table(f"{FORMAT_NAME} codes", ["code", "bits", "sign", "magnitude", "value"], rows)
    levels = integer_levels()
    echo(
        f"{len(levels)} distinct levels {levels[0]}..{levels[-1]}; step = 2^k per group of "
        f"{DEFAULT_GROUP_SIZE} (stored as one E8M0 byte), the smallest power of two with max|w| ≤ 7·step"
    )


@example.command()
@click.option("--rows", type=click.IntRange(1), default=256, show_default=True, help="Rows of the random matrix.")
@click.option(
    "--cols", type=click.IntRange(1), default=1024, show_default=True, help="Columns (a multiple of the group size)."
)
@click.option(
    "--group-size", type=click.IntRange(1), default=DEFAULT_GROUP_SIZE, show_default=True, help="Weights per scale."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random matrix.")
def roundtrip(rows: int, cols: int, group_size: int, seed: int) -> None:
    """Quantize a random N(0,1) matrix with int4_pow2 and with comparable formats; print size and error."""
    import polyquant.formats
    from polyquant.quantizers import make_quantizer

    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    candidates = [
        (f"{FORMAT_NAME} (rtn)", FORMAT_NAME, "rtn", group_size),
        (f"{FORMAT_NAME} (mse)", FORMAT_NAME, "mse", group_size),
        ("int4 (rtn)", "int4", "rtn", group_size),
        ("mxfp4 (rtn)", "mxfp4", "rtn", None),
    ]
    table = []
    for label, fmt, method, gs in candidates:
        spec = polyquant.formats.get(fmt)
        spec = spec if gs is None else spec.with_options(group_size=gs)
        qt = make_quantizer(method).quantize_weight(w, spec)
        error = float((qt.dequantize() - w).norm() / w.norm())
        table.append([label, str(spec.granularity), f"{qt.bits_per_weight:.3f}", f"{100 * error:.2f}%"])
    print_table(f"{rows}x{cols} N(0,1) matrix", ["format", "granularity", "bits/weight", "relative error"], table)


#: Console script ``polyquant-example``: the commands above, standalone (``polyquant-example show``).
main = run_domain_cli("example")

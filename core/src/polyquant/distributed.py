"""Solving layers on several processes with ``torch.distributed`` (any backend; gloo works on CPU).

When :func:`polyquant.quantize` runs inside an initialized process group of more than one process, every
process runs the same calibration (so every process holds the same statistics and the same model), but the
expensive per-layer solves (GPTQ's column loop, AWQ's clip search, k-means, ...) are split: the modules of
each batch (a block, under block-sequential calibration) are dealt round-robin to the ranks, each rank
solves its share, and the packed results are exchanged with ``all_gather_object`` so that every rank swaps
in exactly the same quantized modules. The result is identical to a single-process run: the solves are the
same computations on the same inputs, only on another process.

Start the processes as usual (``torchrun --nproc-per-node 2 script.py`` or ``torch.multiprocessing``), call
``torch.distributed.init_process_group("gloo")`` and then ``polyquant.quantize`` on every rank with the same
model and calibration data.

Example:
    >>> active()  # no process group here
    False
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

__all__ = ["active", "rank", "solve_sharded", "world_size"]

T = TypeVar("T")


def active() -> bool:
    """Whether an initialized process group of more than one process exists."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if active() else 0


def solve_sharded(items: Sequence[T], solve: Callable[[T], Any]) -> list[Any]:
    """``[solve(item) for item in items]``, each item solved on rank ``index % world_size`` and shared with all.

    ``solve`` must return something picklable (tensors, strings, tuples); every rank gets the full list.

    Example:
        >>> solve_sharded([1, 2, 3], lambda x: x * x)
        [1, 4, 9]
    """
    if not active():
        return [solve(item) for item in items]
    world, me = world_size(), rank()
    mine = {i: solve(item) for i, item in enumerate(items) if i % world == me}
    gathered: list[dict[int, Any] | None] = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    merged: dict[int, Any] = {}
    for part in gathered:
        merged.update(part or {})
    return [merged[i] for i in range(len(items))]

"""Block-sequential calibration: quantize a layer stack one block at a time, on the quantized prefix's outputs.

Quantizers that need statistics (GPTQ and its relatives) give better results when each block is calibrated on
the outputs of the blocks *before it as already quantized*: rounding errors then propagate the way they will
at inference, and later blocks compensate them (GPTQ's reference loop; QEP makes the point explicit). The
engine, for the blocks an adapter reports (``adapter.blocks(model)``, e.g. the decoder layers):

1. **Capture** block 0's positional and keyword inputs (hidden states, attention mask, position ids, RoPE
   cos/sin) for every calibration input, stopping the forward there. KV caches in the captured keyword
   arguments are dropped (``use_cache=False``), so re-running a block never appends to a cache.
2. **Per block**: hook the block's planned modules, run every captured input through the block (statistics
   are collected on full-precision weights), quantize those modules (swapping them in place), re-run the
   inputs through the now-quantized block, and feed its outputs to the next block.

The engine first checks on one input that the blocks really are chained (block ``i + 1`` receives block
``i``'s output): a ``ModuleList`` of parallel experts is not a stack, and the caller then falls back to one
pass over the whole model. Modules outside the blocks (before the first or after the last) are left to the
caller, which calibrates them in one pass over the partially quantized model afterwards.

Example:
    >>> import torch
    >>> blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(3)])
    >>> model = torch.nn.Sequential(*blocks)
    >>> is_chained(model, [(str(i), b) for i, b in enumerate(blocks)], torch.randn(2, 8))
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polyquant.calibration import ModelInput, move_to, run_model

__all__ = ["BlockInputs", "capture_block_inputs", "is_chained", "run_sequential"]

#: Keyword arguments holding a KV cache (transformers' names across versions) and the flag that creates one.
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass at block 0."""


@dataclass
class BlockInputs:
    """One calibration input as block 0 (then each next block) receives it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def with_hidden(self, hidden: Tensor) -> BlockInputs:
        """The same call with the first positional (or ``hidden_states``) argument replaced."""
        if self.args:
            return BlockInputs((hidden, *self.args[1:]), self.kwargs)
        key = "hidden_states" if "hidden_states" in self.kwargs else next(iter(self.kwargs))
        return BlockInputs(self.args, {**self.kwargs, key: hidden})

    def hidden(self) -> Any:
        """The first positional argument (or ``hidden_states``)."""
        if self.args:
            return self.args[0]
        return self.kwargs.get("hidden_states", next(iter(self.kwargs.values()), None))


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if isinstance(hidden, Tensor) else None


def is_chained(model: nn.Module, blocks: Sequence[tuple[str, nn.Module]], sample: ModelInput) -> bool:
    """Whether, on ``sample``, every block receives the previous block's output as its first input."""
    if len(blocks) < 2:
        return False
    seen_in: dict[int, Tensor] = {}
    seen_out: dict[int, Tensor] = {}
    handles = []
    for index, (_, block) in enumerate(blocks):

        def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], index: int = index) -> None:
            first = BlockInputs(args, kwargs).hidden()
            if isinstance(first, Tensor) and index not in seen_in:
                seen_in[index] = first

        def post(module: nn.Module, args: Any, kwargs: Any, output: Any, index: int = index) -> None:
            out = _first_tensor(output)
            if out is not None and index not in seen_out:
                seen_out[index] = out

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            run_model(model, sample)
    finally:
        for handle in handles:
            handle.remove()
    for i in range(len(blocks) - 1):
        out, nxt = seen_out.get(i), seen_in.get(i + 1)
        if out is None or nxt is None or out.shape != nxt.shape or not torch.equal(out, nxt):
            return False
    return True


def _drop_caches(kwargs: dict[str, Any]) -> dict[str, Any]:
    cleaned = {k: (None if k in CACHE_KWARGS else v) for k, v in kwargs.items()}
    if "use_cache" in cleaned:
        cleaned["use_cache"] = False
    return cleaned


def capture_block_inputs(model: nn.Module, block: nn.Module, inputs: Iterable[ModelInput]) -> list[BlockInputs]:
    """Run ``model`` on each input until ``block`` starts; return what ``block`` would have been called with."""
    captured: list[BlockInputs] = []

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append(BlockInputs(tuple(args), _drop_caches(dict(kwargs))))
        raise _Stop

    handle = block.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            for sample in inputs:
                with contextlib.suppress(_Stop):
                    run_model(model, sample)
    finally:
        handle.remove()
    return captured


def _run_block(block: nn.Module, call: BlockInputs) -> Tensor:
    output = block(*call.args, **call.kwargs)
    hidden = _first_tensor(output)
    if hidden is None:
        raise TypeError(f"block {type(block).__name__} returned {type(output).__name__}, not a tensor or a tuple")
    return hidden


def run_sequential(
    model: nn.Module,
    blocks: Sequence[tuple[str, nn.Module]],
    inputs: Iterable[ModelInput],
    *,
    observe: Callable[[str, nn.Module], Callable[[], None]],
    quantize: Callable[[str], None],
    device: torch.device | None = None,
    progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
) -> None:
    """Calibrate and quantize ``blocks`` in order, each on the previous quantized blocks' outputs.

    Args:
        model: the whole model (run only up to the first block, to capture its inputs).
        blocks: ``(qualified name, module)`` of the chained blocks, in order (see :func:`is_chained`).
        inputs: the calibration inputs (model inputs).
        observe: ``observe(block_name, block)`` installs statistics hooks on the block's planned modules and
            returns a function that removes them.
        quantize: ``quantize(block_name)`` quantizes the block's planned modules (swapping them in place).
        device: where model inputs are moved before the capture pass.
        progress: wraps the block iteration with a progress bar.
    """
    samples = (sample if device is None else move_to(sample, device) for sample in inputs)
    calls = capture_block_inputs(model, blocks[0][1], samples)
    steps: Iterable[Any] = blocks if progress is None else progress(blocks, "calibrating blocks")
    with torch.no_grad():
        for name, _ in steps:
            block = _lookup(model, name)
            remove = observe(name, block)
            try:
                for call in calls:
                    block(*call.args, **call.kwargs)
            finally:
                remove()
            quantize(name)
            block = _lookup(model, name)  # the block itself may have been swapped (a bare Linear block)
            calls = [call.with_hidden(_run_block(block, call)) for call in calls]


def _lookup(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model

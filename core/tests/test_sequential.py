"""Block-sequential calibration: each block's statistics come from the quantized prefix's outputs."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch
from torch import nn

import polyquant
from polyquant.nn import QLinear
from polyquant.plugins import PluginManager, QuantizerInfo, hookimpl, using_plugin_manager
from polyquant.quantizers import RTNQuantizer
from polyquant.sequential import capture_block_inputs, is_chained


class _Stack(nn.Module):
    """Embedding-free layer stack: in → blocks (Linear + tanh, 3 of them, with a keyword scale) → head."""

    def __init__(self, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(32, width)
        self.layers = nn.ModuleList([_Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, scale=0.5)[0]
        return self.head(h)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, *, scale: float) -> tuple[torch.Tensor]:
        return (h + torch.tanh(self.fc(h)) * scale,)  # a tuple, like transformers' decoder layers


class _Recorder:
    """Records the Hessian each weight receives, and rounds coarsely (int2) so errors are visible."""

    name = "recorder"
    needs_calibration = True
    seen: ClassVar[list[tuple[torch.Tensor, Mapping[str, torch.Tensor] | None]]] = []

    def quantize_weight(self, weight: torch.Tensor, spec, *, stats=None):  # type: ignore[no-untyped-def]
        _Recorder.seen.append((weight.detach().clone(), stats))
        return RTNQuantizer().quantize_weight(weight, spec)

    @staticmethod
    def stats_of(weight: torch.Tensor) -> Mapping[str, torch.Tensor] | None:
        return next(stats for w, stats in _Recorder.seen if torch.equal(w, weight))


@pytest.fixture
def recorder_pm() -> PluginManager:
    _Recorder.seen.clear()
    pm = PluginManager(entry_points=False)
    plugin = types.SimpleNamespace(
        polyquant_register_quantizers=hookimpl(
            lambda: [QuantizerInfo("recorder", _Recorder, "test", needs_calibration=True)]
        )
    )
    pm.register(plugin, "recorder-plugin")
    return pm


def _hessian(x: torch.Tensor) -> torch.Tensor:
    return 2.0 / x.shape[0] * x.T @ x


RECIPE = {"weights": {"format": "int2", "group_size": 32, "symmetric": False}, "method": "recorder"}


def test_blocks_see_the_quantized_prefix(recorder_pm: PluginManager) -> None:
    torch.manual_seed(0)
    model = _Stack()
    data = torch.randn(16, 32)
    weights = {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with using_plugin_manager(recorder_pm):
        qmodel, report = polyquant.quantize(model, RECIPE, calibration=data, inplace=False, progress=False)
    assert [r.name for r in report.rows] == ["inp", "layers.0.fc", "layers.1.fc", "layers.2.fc", "head"]

    # What each block's linear must have seen: the outputs of the *quantized* blocks before it. Modules in
    # front of the first block are calibrated (and quantized) after the blocks, so block 0 sees them in full
    # precision; the head, after the blocks, sees the whole quantized stack.
    with torch.no_grad():
        h = model.inp(data)
        expected = {}
        for i, layer in enumerate(qmodel.layers):
            expected[f"layers.{i}.fc"] = h
            h = layer(h, scale=0.5)[0]
        expected["head"] = h
        expected["inp"] = data
    for name, x in expected.items():
        stats = _Recorder.stats_of(weights[name])
        assert stats is not None
        assert torch.allclose(stats["hessian"], _hessian(x), rtol=1e-4, atol=1e-6), name

    # ... and not what the full-precision model would give them (the errors propagate).
    with torch.no_grad():
        fp = model.layers[0](model.inp(data), scale=0.5)[0]
    assert not torch.allclose(_Recorder.stats_of(weights["layers.1.fc"])["hessian"], _hessian(fp), rtol=1e-3)


def test_sequential_false_uses_the_full_precision_model(recorder_pm: PluginManager) -> None:
    torch.manual_seed(0)
    model = _Stack()
    data = torch.randn(16, 32)
    weight = model.layers[1].fc.weight
    with torch.no_grad():
        fp = model.layers[0](model.inp(data), scale=0.5)[0]
    with using_plugin_manager(recorder_pm):
        polyquant.quantize(model, RECIPE, calibration=data, inplace=False, progress=False, sequential=False)
    stats = _Recorder.stats_of(weight)
    assert stats is not None and torch.allclose(stats["hessian"], _hessian(fp), rtol=1e-4, atol=1e-6)


def test_parallel_module_lists_are_not_treated_as_a_chain() -> None:
    class Parallel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branches = nn.ModuleList([nn.Linear(16, 16) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return sum(b(x) for b in self.branches)  # type: ignore[return-value]

    model = Parallel()
    blocks = [(f"branches.{i}", b) for i, b in enumerate(model.branches)]
    assert not is_chained(model, blocks, torch.randn(2, 16))
    recipe = {"weights": {"format": "int4", "group_size": 16, "symmetric": False}, "method": "gptq"}
    qmodel, report = polyquant.quantize(model, recipe, calibration=torch.randn(8, 16), progress=False)
    assert report.summary.modules_quantized == 3 and all(isinstance(b, QLinear) for b in qmodel.branches)
    assert not report.summary.notes, "every branch saw the calibration data (one pass, not a chain)"


def test_capture_stops_at_the_block_and_drops_caches() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, h: torch.Tensor, cache: object = None, use_cache: bool = False) -> torch.Tensor:
            return self.fc(h)

    class WithCache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = nn.Linear(4, 4)
            self.block = Block()
            self.after_calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.block(self.pre(x), cache=[], use_cache=True)
            self.after_calls += 1
            return h

    model = WithCache()
    samples = [torch.randn(1, 4), torch.randn(1, 4)]
    calls = capture_block_inputs(model, model.block, samples)
    assert len(calls) == 2 and model.after_calls == 0, "the forward stops where the block starts"
    with torch.no_grad():
        assert torch.equal(calls[1].args[0], model.pre(samples[1]))
    assert calls[0].kwargs == {"cache": None, "use_cache": False}


def test_gptq_sequential_on_a_tiny_llama_keeps_logits_close(tiny_llama) -> None:
    model = tiny_llama(layers=3)
    calib = {"input_ids": torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(1))}
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(ids).logits

    def error(**options: object) -> float:
        qmodel, report = polyquant.quantize(
            model, "w3a16-gptq", calibration=calib, inplace=False, progress=False, **options
        )  # type: ignore[arg-type]
        assert report.summary.modules_quantized == 21
        with torch.no_grad():
            return float((qmodel(ids).logits - reference).norm() / reference.norm())

    sequential, one_pass = error(), error(sequential=False)
    assert sequential < 0.5 and one_pass < 0.5
    assert sequential <= one_pass * 1.05, (sequential, one_pass)


def test_nan_activation_names_the_module_and_call() -> None:
    class Overflow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h * float("inf") if bool((x > 3).any()) else h)

    data = torch.zeros(4, 16)
    data[2, 0] = 5.0  # the third call overflows inside the model; the data itself is finite
    with pytest.raises(polyquant.CalibrationError, match=r"input of module 'b' \(calibration call 2\).*Inf"):
        polyquant.quantize(Overflow(), "w8a16", calibration=data, progress=False)

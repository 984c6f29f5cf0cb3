"""Kernel dispatch: selection, priority, fallback, explain, overrides, forced-kernel errors, caching.

These tests register tiny kernels in an isolated plugin manager and use a stand-in weight (anything with
``spec.name``, ``shape``, ``device`` and ``dequantize``), so they test the dispatch machinery alone.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from polyquant.errors import KernelError
from polyquant.kernels import (
    OVERRIDE_ENV,
    active_overrides,
    candidate_kernels,
    explain,
    kernel_availability,
    linear,
    select_kernel,
    use,
)
from polyquant.kernels import dispatch as dispatch_module
from polyquant.plugins import KernelContext, KernelSpec, PluginManager, hookimpl, using_plugin_manager


class FakeWeight:
    """The parts of a QTensor that dispatch and the linear reference use."""

    def __init__(self, fmt: str, dense: torch.Tensor) -> None:
        self.spec = types.SimpleNamespace(name=fmt)
        self.dense = dense
        self.shape = dense.shape
        self.device = dense.device
        self.dtype = dense.dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.dense.to(dtype or self.dtype)


def marker_fn(value: float) -> Callable[..., torch.Tensor]:
    """A kernel implementation whose output tells which kernel ran."""

    def fn(x: torch.Tensor, weight: Any, bias: Any = None, **kwargs: Any) -> torch.Tensor:
        return torch.full((*x.shape[:-1], weight.shape[0]), value)

    return fn


def kernel(
    name: str, priority: int = 0, formats: tuple[str, ...] = ("int4",), device: str = "cpu", **kw: Any
) -> KernelSpec:
    return KernelSpec(
        op="linear",
        name=name,
        formats=formats,
        device=device,
        backend="test",
        fn=marker_fn(priority),
        priority=priority,
        **kw,
    )


def plugin_of(*kernels: KernelSpec) -> types.SimpleNamespace:
    return types.SimpleNamespace(polyquant_register_kernels=hookimpl(lambda: list(kernels)))


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginManager]:
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    manager = PluginManager(entry_points=False)
    with using_plugin_manager(manager):
        yield manager


@pytest.fixture
def weight() -> FakeWeight:
    return FakeWeight("int4", torch.randn(8, 16))


def ctx_for(
    weight: FakeWeight, *, device: str = "cpu", dtype: torch.dtype = torch.float32, batch: int = 4
) -> KernelContext:
    return KernelContext(op="linear", format=weight.spec.name, device=device, dtype=dtype, weight=weight, batch=batch)  # type: ignore[arg-type]


def reasons(op: str, ctx: KernelContext) -> dict[str, str]:
    return {c.name: c.reason for c in explain(op, ctx)}


# ------------------------------------------------------------------------------------------ selection
def test_reference_is_the_fallback(pm: PluginManager, weight: FakeWeight) -> None:
    chosen = select_kernel(ctx_for(weight))
    assert (chosen.name, chosen.backend, chosen.priority) == ("reference", "reference", -100)
    x = torch.randn(3, 16)
    torch.testing.assert_close(linear(x, weight), x @ weight.dense.t())  # type: ignore[arg-type]


def test_highest_priority_capable_kernel_wins(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(plugin_of(kernel("low", 1), kernel("high", 5), kernel("other_format", 9, formats=("int8",))), "k")
    assert select_kernel(ctx_for(weight)).name == "high"
    got = reasons("linear", ctx_for(weight))
    assert got == {
        "other_format": "format not handled ('int4' not in int8)",
        "high": "selected",
        "low": "lower priority than high",
        "reference": "lower priority than high",
    }
    assert linear(torch.randn(2, 16), weight).unique().tolist() == [5.0]  # type: ignore[arg-type]


def test_device_availability_and_support_are_explained(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(
        plugin_of(
            kernel("gpu", 9, device="cuda"),
            kernel("no_triton", 8, available=lambda: "triton not installed"),
            kernel("picky", 7, supports=lambda ctx: None if ctx.batch == 1 else "needs batch 1"),
            kernel("wildcard", 6, formats=("*",), device="*"),
        ),
        "k",
    )
    got = reasons("linear", ctx_for(weight, batch=4))
    assert got["gpu"] == "device cuda != cpu"
    assert got["no_triton"] == "unavailable: triton not installed"
    assert got["picky"] == "unsupported: needs batch 1"
    assert got["wildcard"] == "selected"
    assert select_kernel(ctx_for(weight, batch=1)).name == "picky"


def test_broken_checks_rule_a_kernel_out_instead_of_crashing(pm: PluginManager, weight: FakeWeight) -> None:
    def boom(*args: Any) -> str | None:
        raise ValueError("bad check")

    pm.register(plugin_of(kernel("bad_available", 5, available=boom), kernel("bad_supports", 4, supports=boom)), "k")
    got = reasons("linear", ctx_for(weight))
    assert got["bad_available"] == "unavailable: availability check raised ValueError: bad check"
    assert got["bad_supports"] == "unsupported: supports() raised ValueError: bad check"
    assert select_kernel(ctx_for(weight)).name == "reference"


def test_availability_is_checked_once_per_kernel(pm: PluginManager, weight: FakeWeight) -> None:
    calls = []
    spec = kernel("counted", 3, available=lambda: calls.append(1))
    pm.register(plugin_of(spec), "k")
    for _ in range(3):
        select_kernel(ctx_for(weight))
        explain("linear", ctx_for(weight))
    assert kernel_availability(spec) is None
    assert len(calls) == 1


def test_op_without_reference_and_without_kernels_raises(pm: PluginManager) -> None:
    ctx = KernelContext(op="kv_attention", format="int4", device="cpu", dtype=torch.float32)
    with pytest.raises(KernelError, match="no kernel can run kv_attention"):
        select_kernel(ctx)


def test_reference_is_present_even_without_builtins() -> None:
    with using_plugin_manager(PluginManager(entry_points=False, builtins=False)):
        assert [k.name for k in candidate_kernels("linear")] == ["reference"]
        ctx = KernelContext(op="conv", format="nf4", device="cpu", dtype=torch.float16)
        assert select_kernel(ctx).name == "reference"


def test_unknown_op_is_a_clear_error(pm: PluginManager) -> None:
    with pytest.raises(KernelError, match="unknown op 'matmul'; known ops: linear"):
        candidate_kernels("matmul")


# ------------------------------------------------------------------------------------------ overrides
def test_use_forces_a_kernel_and_disables_the_others(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(plugin_of(kernel("fast", 5)), "k")
    with use(linear="reference"):
        assert active_overrides() == {"linear": "reference"}
        assert select_kernel(ctx_for(weight)).name == "reference"
        got = reasons("linear", ctx_for(weight))
        assert got == {
            "fast": "disabled by override (linear=reference)",
            "reference": "selected (forced: linear=reference)",
        }
    assert select_kernel(ctx_for(weight)).name == "fast"
    assert active_overrides() == {}


def test_nested_use_and_auto(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(plugin_of(kernel("fast", 5), kernel("slow", 1)), "k")
    with use(linear="slow"):
        with use(linear="auto"):
            assert select_kernel(ctx_for(weight)).name == "fast"
        with use(linear="reference", conv="reference"):
            assert active_overrides() == {"linear": "reference", "conv": "reference"}
        assert select_kernel(ctx_for(weight)).name == "slow"


def test_env_var_overrides_and_use_wins(pm: PluginManager, weight: FakeWeight, monkeypatch: pytest.MonkeyPatch) -> None:
    pm.register(plugin_of(kernel("fast", 5), kernel("slow", 1)), "k")
    monkeypatch.setenv(OVERRIDE_ENV, " linear = slow , conv=reference,")
    assert active_overrides() == {"linear": "slow", "conv": "reference"}
    assert select_kernel(ctx_for(weight)).name == "slow"
    with use(linear="fast"):
        assert select_kernel(ctx_for(weight)).name == "fast"
    monkeypatch.setenv(OVERRIDE_ENV, "linear=auto")
    assert select_kernel(ctx_for(weight)).name == "fast"


@pytest.mark.parametrize(
    ("value", "message"),
    [("linear", "cannot parse 'linear'; write op=kernel pairs"), ("matmul=fast", "unknown op 'matmul'")],
)
def test_malformed_env_var_is_a_clear_error(
    pm: PluginManager, weight: FakeWeight, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv(OVERRIDE_ENV, value)
    with pytest.raises(KernelError, match=message):
        select_kernel(ctx_for(weight))


def test_use_rejects_unknown_ops_and_bad_names(pm: PluginManager) -> None:
    with pytest.raises(KernelError, match="unknown op 'matmul'"), use(matmul="x"):
        pass
    with pytest.raises(KernelError, match="non-empty string"), use(linear=""):
        pass


def test_forcing_an_unusable_kernel_names_reason_and_alternatives(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(plugin_of(kernel("gpu_only", 9, device="cuda"), kernel("fast", 5)), "k")
    with use(linear="gpu_only"):
        with pytest.raises(KernelError) as info:
            select_kernel(ctx_for(weight))
        # explain never raises: it shows the forced kernel and why it cannot run
        assert reasons("linear", ctx_for(weight)) == {
            "gpu_only": "device cuda != cpu",
            "fast": "disabled by override (linear=gpu_only)",
            "reference": "disabled by override (linear=gpu_only)",
        }
    message = str(info.value)
    assert "polyquant.kernels.use() forces linear='gpu_only'" in message
    assert "device cuda != cpu" in message
    assert "Kernels that can: fast, reference" in message


def test_forcing_an_unknown_kernel_lists_the_registered_ones(
    pm: PluginManager, weight: FakeWeight, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERRIDE_ENV, "linear=nope")
    with pytest.raises(
        KernelError, match=f"environment variable {OVERRIDE_ENV} forces linear='nope'.*registered: reference"
    ):
        select_kernel(ctx_for(weight))


def test_overrides_are_local_to_a_thread(pm: PluginManager, weight: FakeWeight) -> None:
    pm.register(plugin_of(kernel("fast", 5)), "k")
    seen: list[str] = []
    with use(linear="reference"):
        worker = threading.Thread(target=lambda: seen.append(select_kernel(ctx_for(weight)).name))
        worker.start()
        worker.join()
        assert select_kernel(ctx_for(weight)).name == "reference"
    assert seen == ["fast"]


# ------------------------------------------------------------------------------------------ caching
def test_prepare_runs_once_per_weight_with_a_cache(pm: PluginManager, weight: FakeWeight) -> None:
    prepared_for: list[Any] = []

    def prepare(w: Any) -> str:
        prepared_for.append(w)
        return f"packed-{len(prepared_for)}"

    def fn(x: torch.Tensor, w: Any, bias: Any = None, *, prepared: Any = None, **kwargs: Any) -> torch.Tensor:
        received.append(prepared)
        return torch.zeros(*x.shape[:-1], w.shape[0])

    received: list[Any] = []
    spec = KernelSpec(
        op="linear", name="packed", formats=("int4",), device="cpu", backend="test", fn=fn, prepare=prepare
    )
    pm.register(plugin_of(spec), "k")
    cache: dict[str, Any] = {}
    for batch in (1, 2, 7, 32, 1):
        linear(torch.randn(batch, 16), weight, cache=cache)  # type: ignore[arg-type]
    assert prepared_for == [weight] and received == ["packed-1"] * 5
    other = FakeWeight("int4", torch.randn(8, 16))  # the module's weight was replaced: repack
    linear(torch.randn(1, 16), other, cache=cache)  # type: ignore[arg-type]
    assert prepared_for == [weight, other] and received[-1] == "packed-2"
    linear(torch.randn(1, 16), weight)  # type: ignore[arg-type]  # no cache: prepared every call
    assert len(prepared_for) == 3


def test_selection_is_memoized_per_batch_bucket(pm: PluginManager, weight: FakeWeight) -> None:
    calls: list[int | None] = []

    def supports(ctx: KernelContext) -> str | None:
        calls.append(ctx.batch)
        return None if ctx.batch == 1 else "needs batch 1"

    pm.register(plugin_of(kernel("gemv", 5, supports=supports)), "k")
    cache: dict[str, Any] = {}
    outputs = [linear(torch.randn(b, 16), weight, cache=cache) for b in (1, 1, 3, 4, 1, 3)]  # type: ignore[arg-type]
    assert [float(o.flatten()[0]) != 5.0 for o in outputs] == [False, False, True, True, False, True]
    assert calls == [1, 3]  # batch 1 and the bucket of 3..4 were each checked once


def test_memo_follows_registry_changes_and_overrides(pm: PluginManager, weight: FakeWeight) -> None:
    cache: dict[str, Any] = {}
    x = torch.randn(2, 16)
    assert select_kernel(ctx_for(weight)).name == "reference"
    linear(x, weight, cache=cache)  # type: ignore[arg-type]
    pm.register(plugin_of(kernel("late", 5)), "late")
    assert linear(x, weight, cache=cache).unique().tolist() == [5.0]  # type: ignore[arg-type]
    with use(linear="reference"):
        torch.testing.assert_close(linear(x, weight, cache=cache), x @ weight.dense.t())  # type: ignore[arg-type]
    pm.unregister("late")
    torch.testing.assert_close(linear(x, weight, cache=cache), x @ weight.dense.t())  # type: ignore[arg-type]


def test_batch_buckets_are_powers_of_two() -> None:
    bucket = dispatch_module._batch_bucket
    assert [bucket(b) for b in (None, 0, 1, 2, 3, 4, 5, 31, 32, 33)] == [-1, 0, 1, 2, 4, 4, 8, 32, 32, 64]


def test_a_non_qtensor_weight_is_a_clear_error(pm: PluginManager) -> None:
    with pytest.raises(KernelError, match="must be a polyquant QTensor, got Tensor"):
        linear(torch.randn(2, 4), torch.randn(3, 4))  # type: ignore[arg-type]

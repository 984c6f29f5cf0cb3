"""Calibration data: normalization, seeded subsets, finiteness checks, the built-in sources and the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from polyquant.calibration import (
    CalibrationSet,
    builtin_calibration_sources,
    check_finite,
    iter_batches,
    load_calibration,
    load_tensors,
    move_to,
    random_inputs,
    run_model,
)
from polyquant.errors import CalibrationError
from polyquant.plugins import CalibrationSourceInfo, PluginManager, hookimpl, using_plugin_manager


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    """An isolated plugin manager (built-ins only) installed as the process-wide one."""
    pm = PluginManager(entry_points=False)
    with using_plugin_manager(pm):
        yield pm


# --------------------------------------------------------------------------------------------- iter_batches
def test_tensor_is_split_into_single_row_samples_in_order() -> None:
    data = torch.arange(12.0).reshape(4, 3)
    samples = list(iter_batches(data))
    assert [tuple(s.shape) for s in samples] == [(1, 3)] * 4
    assert torch.equal(torch.cat(samples), data)


def test_subset_is_seeded_ordered_and_reproducible() -> None:
    data = torch.arange(100.0).unsqueeze(1)
    first = [int(s.item()) for s in iter_batches(data, num_samples=10, seed=3)]
    again = [int(s.item()) for s in iter_batches(data, num_samples=10, seed=3)]
    other = [int(s.item()) for s in iter_batches(data, num_samples=10, seed=4)]
    assert first == again
    assert first != other
    assert len(set(first)) == 10 and first == sorted(first)


def test_num_samples_larger_than_data_keeps_everything() -> None:
    assert len(list(iter_batches(torch.zeros(3, 2), num_samples=10))) == 3


def test_mapping_is_split_and_passes_non_tensors_through() -> None:
    batch = {"input_ids": torch.arange(8).reshape(2, 4), "attention_mask": torch.ones(2, 4), "use_cache": False}
    samples = list(iter_batches(batch))
    assert len(samples) == 2
    assert isinstance(samples[1], dict)
    assert torch.equal(samples[1]["input_ids"], torch.tensor([[4, 5, 6, 7]]))
    assert samples[1]["use_cache"] is False


def test_mapping_with_disagreeing_first_axes_names_them() -> None:
    with pytest.raises(CalibrationError, match=r"input_ids: 2, attention_mask: 3"):
        list(iter_batches({"input_ids": torch.zeros(2, 4), "attention_mask": torch.zeros(3, 4)}))


def test_iterable_items_become_positional_or_keyword_inputs() -> None:
    x, y = torch.zeros(1, 2), torch.ones(1, 2)
    samples = list(iter_batches([x, (x, y), [y], {"input": x}]))
    assert samples[0] is x
    assert isinstance(samples[1], tuple) and samples[1][1] is y
    assert isinstance(samples[2], tuple) and len(samples[2]) == 1
    assert isinstance(samples[3], dict) and samples[3]["input"] is x


def test_unsized_iterables_are_consumed_lazily() -> None:
    pulled: list[int] = []

    def stream() -> Iterator[torch.Tensor]:
        for i in range(100):
            pulled.append(i)
            yield torch.full((1, 2), float(i))

    samples = list(iter_batches(stream(), num_samples=3))
    assert [float(s[0, 0]) for s in samples] == [0.0, 1.0, 2.0]
    assert pulled == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "empty"),
        ("some text", "pass tensors"),
        (["some text"], r"sample 0 is a str"),
        (42, "not supported"),
        (torch.tensor(1.0), "0-dimensional"),
        ([{1: torch.zeros(1)}], "string keys"),
    ],
)
def test_bad_data_is_rejected_with_a_fix(data: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        list(iter_batches(data))


@pytest.mark.parametrize("num_samples", [0, -1, 2.5])
def test_num_samples_must_be_positive_integer(num_samples: object) -> None:
    with pytest.raises(CalibrationError, match="num_samples"):
        list(iter_batches(torch.zeros(2, 2), num_samples=num_samples))  # type: ignore[arg-type]


def test_non_finite_inputs_name_sample_and_key() -> None:
    bad = {"pixel_values": torch.tensor([[0.0, float("inf")], [1.0, 2.0]])}
    with pytest.raises(CalibrationError, match=r"calibration sample 0, 'pixel_values': 0 NaN and 1 Inf"):
        list(iter_batches(bad))
    assert len(list(iter_batches(bad, check=False))) == 2


def test_calibration_set_is_reiterable() -> None:
    data = random_inputs((1, 4), num_samples=3, seed=1)
    first, second = list(data), list(data)
    assert len(first) == len(data) == 3
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert [torch.equal(a, b) for a, b in zip(first, list(iter_batches(data)), strict=True)] == [True] * 3


# --------------------------------------------------------------------------------------------- running and checks
def test_run_model_dispatches_on_input_kind() -> None:
    def model(*args: torch.Tensor, **kwargs: torch.Tensor) -> tuple[int, list[str]]:
        return len(args), sorted(kwargs)

    assert run_model(model, torch.zeros(1)) == (1, [])
    assert run_model(model, (torch.zeros(1), torch.zeros(1))) == (2, [])
    assert run_model(model, {"a": torch.zeros(1), "b": 1}) == (0, ["a", "b"])
    with pytest.raises(CalibrationError, match="iter_batches"):
        run_model(model, [torch.zeros(1)])  # type: ignore[arg-type]


def test_move_to_reaches_nested_tensors() -> None:
    moved = move_to({"x": torch.zeros(1), "pair": (torch.zeros(1), 3)}, "meta")
    assert isinstance(moved, dict)
    assert moved["x"].device.type == "meta" and moved["pair"][0].device.type == "meta" and moved["pair"][1] == 3


def test_check_finite_ignores_integer_tensors() -> None:
    check_finite(torch.tensor([1, 2, 3]), "ids")
    check_finite(torch.ones(2, dtype=torch.bfloat16), "x")


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=40),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_check_finite_raises_exactly_on_nan_or_inf(values: list[float], dtype: torch.dtype) -> None:
    tensor = torch.tensor(values, dtype=torch.float32).to(dtype)
    n_nan = int(torch.isnan(tensor).sum())
    n_inf = int(torch.isinf(tensor).sum())
    if n_nan + n_inf == 0:
        check_finite(tensor, "layer.0 input")
    else:
        with pytest.raises(CalibrationError, match=rf"^layer\.0 input: {n_nan} NaN and {n_inf} Inf value"):
            check_finite(tensor, "layer.0 input")


# --------------------------------------------------------------------------------------------- tensors source
def test_tensors_file_with_one_tensor_gives_positional_rows(tmp_path: Path) -> None:
    data = torch.randn(6, 8)
    save_file({"input": data}, tmp_path / "calib.safetensors")
    samples = list(load_tensors(tmp_path / "calib.safetensors"))
    assert torch.equal(torch.cat(samples), data)


def test_tensors_file_with_named_tensors_gives_keyword_rows(tmp_path: Path) -> None:
    ids = torch.arange(12).reshape(3, 4)
    save_file({"input_ids": ids, "attention_mask": torch.ones(3, 4)}, tmp_path / "c.safetensors")
    samples = list(load_tensors(tmp_path / "c.safetensors"))
    assert isinstance(samples[2], dict) and torch.equal(samples[2]["input_ids"], ids[2:3])


def test_tensors_named_by_position_give_positional_arguments(tmp_path: Path) -> None:
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    save_file({"1": b, "0": a}, tmp_path / "c.safetensors")
    samples = list(load_tensors(tmp_path / "c.safetensors"))
    assert isinstance(samples[1], tuple)
    assert torch.equal(samples[1][0], a[1:2]) and torch.equal(samples[1][1], b[1:2])


def test_tensors_directory_reads_files_in_name_order_and_subsets(tmp_path: Path) -> None:
    save_file({"x": torch.full((2, 1), 2.0)}, tmp_path / "b.safetensors")
    save_file({"x": torch.full((3, 1), 1.0)}, tmp_path / "a.safetensors")
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_tensors(tmp_path)
    assert [float(s) for s in data] == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert "2 files" in data.description
    subset = load_tensors(tmp_path, num_samples=2, seed=0)
    assert len(subset) == 2 and len(list(subset)) == 2
    assert [float(s) for s in subset] == [float(s) for s in subset]


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_pickle_files_are_refused_without_being_opened(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"calib{suffix}"
    path.write_bytes(b"not even read")
    with pytest.raises(CalibrationError, match=r"pickle files are never loaded.*save_file"):
        load_tensors(path)


def test_tensors_source_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_tensors(tmp_path / "missing.safetensors")
    with pytest.raises(CalibrationError, match=r"no \.safetensors file"):
        load_tensors(tmp_path)
    (tmp_path / "data.npy").write_bytes(b"")
    with pytest.raises(CalibrationError, match=r"not a \.safetensors file"):
        load_tensors(tmp_path / "data.npy")
    save_file({"a": torch.zeros(2, 1), "b": torch.zeros(3, 1)}, tmp_path / "bad.safetensors")
    with pytest.raises(CalibrationError, match="same first dimension"):
        load_tensors(tmp_path / "bad.safetensors")


# --------------------------------------------------------------------------------------------- random source
def test_random_inputs_are_seeded_gaussian_and_labelled() -> None:
    data = random_inputs((2, 64), num_samples=4, seed=7)
    samples = list(data)
    assert [tuple(s.shape) for s in samples] == [(2, 64)] * 4
    assert torch.equal(torch.stack(samples), torch.stack(list(random_inputs((2, 64), num_samples=4, seed=7))))
    assert not torch.equal(samples[0], samples[1])
    assert "smoke test" in data.description
    pooled = torch.stack(list(random_inputs((1, 4096), num_samples=4)))
    assert abs(float(pooled.mean())) < 0.05 and abs(float(pooled.std()) - 1.0) < 0.05


@pytest.mark.parametrize(("shape", "kwargs"), [((0, 4), {}), ((), {}), ((4,), {"num_samples": 0})])
def test_random_inputs_validate(shape: tuple[int, ...], kwargs: dict[str, int]) -> None:
    with pytest.raises(CalibrationError):
        random_inputs(shape, **kwargs)


def test_random_inputs_need_a_float_dtype() -> None:
    with pytest.raises(CalibrationError, match="not floating point"):
        random_inputs((1, 4), dtype=torch.int64)


# --------------------------------------------------------------------------------------------- registry
def test_builtin_sources_are_registered(manager: PluginManager) -> None:
    assert {"tensors", "random"} <= set(manager.get_calibration_sources())
    assert manager.provider("calibration_source", "random") == "polyquant-core"
    assert all(s.description for s in builtin_calibration_sources())


def test_load_calibration_parses_name_and_argument(manager: PluginManager, tmp_path: Path) -> None:
    data = load_calibration("random:1x16", num_samples=5, seed=2)
    assert [tuple(s.shape) for s in data] == [(1, 16)] * 5
    save_file({"input": torch.ones(3, 2)}, tmp_path / "c.safetensors")
    assert len(list(load_calibration(f"tensors:{tmp_path / 'c.safetensors'}"))) == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wikitext:train", r"unknown calibration source 'wikitext'.*known sources: random, tensors"),
        ("random:12 by 4", "random:1x128"),
        ("tensors", "needs a path"),
        ("", "must be a string"),
    ],
)
def test_load_calibration_errors(manager: PluginManager, spec: str, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        load_calibration(spec)


def test_plugin_sources_are_reached_through_the_registry(manager: PluginManager) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    def load_ramp(arg: str, **options: object) -> list[torch.Tensor]:
        calls.append((arg, options))
        return [torch.full((1, 2), float(i)) for i in range(int(arg))]

    class RampPlugin:
        @hookimpl
        def polyquant_register_calibration_sources(self) -> list[CalibrationSourceInfo]:
            return [CalibrationSourceInfo("ramp", load_ramp, "0, 1, 2, ...")]

    info = manager.register(RampPlugin(), "ramp-plugin")
    assert info.status == "loaded"
    data = load_calibration("ramp:3", scale=2)
    assert isinstance(data, CalibrationSet)
    assert [float(s[0, 0]) for s in data] == [0.0, 1.0, 2.0]
    assert [float(s[0, 0]) for s in data] == [0.0, 1.0, 2.0]  # re-iterable even though the plugin gave a list
    assert calls == [("3", {"scale": 2})]

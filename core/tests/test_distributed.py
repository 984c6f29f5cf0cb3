"""Two gloo processes split the layer solves and produce exactly the single-process result."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import polyquant
from polyquant import distributed

transformers = pytest.importorskip("transformers")


def _model() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


CALIB = {"input_ids": torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(1))}
RECIPE = {"weights": {"format": "int3", "group_size": 32, "symmetric": False}, "method": "gptq"}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.dequantized_weight() for name, m in model.named_modules() if hasattr(m, "dequantized_weight")}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        qmodel, report = polyquant.quantize(_model(), RECIPE, calibration=CALIB, progress=False)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in _weights(qmodel).items()}, f"{out_dir}/rank{rank}.safetensors")
        pathlib.Path(f"{out_dir}/rank{rank}.notes").write_text("\n".join(report.summary.notes))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: pathlib.Path) -> None:
    from safetensors.torch import load_file

    assert not distributed.active()
    torch.set_num_threads(1)
    single, _ = polyquant.quantize(_model(), RECIPE, calibration=CALIB, progress=False)
    expected = _weights(single)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert got.keys() == expected.keys() and len(got) == 14
        for name, weight in expected.items():
            assert torch.equal(got[name], weight), f"rank {rank}: {name} differs from the single-process result"
        notes = (tmp_path / f"rank{rank}.notes").read_text()
        assert "distributed: 14 module(s) solved round-robin on 2 ranks" in notes


def test_solve_sharded_without_a_group_is_a_plain_map() -> None:
    assert distributed.solve_sharded(["a", "b"], str.upper) == ["A", "B"]
    assert (distributed.world_size(), distributed.rank()) == (1, 0)

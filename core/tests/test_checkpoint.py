"""Checkpoints: bit-identical round trips, atomic replacement, and every integrity check a user can hit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import polyquant
from polyquant.checkpoint import CONFIG_FILE, REPORT_FILE, WEIGHTS_FILE, inspect, load, read_manifest, save
from polyquant.errors import CheckpointError
from polyquant.evaluation import quantized_weights
from polyquant.plugins import PluginManager, using_plugin_manager

PRESETS = [
    "w8a16",
    "w4a16",
    "w4a16-g128",
    "w3a16",
    "w2a16",
    "w8a8",
    "w8a8-fp8",
    "fp8",
    "nvfp4",
    "mxfp4",
    "nf4",
    "ternary",
]


@pytest.fixture(autouse=True)
def manager() -> Iterator[PluginManager]:
    """Built-ins only, so installed third-party plugins cannot change what these tests see."""
    pm = PluginManager(entry_points=False)
    with using_plugin_manager(pm):
        yield pm


def build_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 128), torch.nn.LayerNorm(128)
    )


def quantized_mlp(recipe: Any = "w4a16-g128", seed: int = 0) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(seed)
    return polyquant.quantize(build_mlp(), recipe, progress=False)


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model, report = quantized_mlp()
    return save(model, tmp_path / "ckpt", recipe="w4a16-g128", report=report, metadata={"note": "test"}), model


# --------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_round_trip_bit_identically(tmp_path: Path, preset: str) -> None:
    model, report = quantized_mlp(preset)
    assert quantized_weights(model), f"{preset} quantized nothing"
    save(model, tmp_path / preset, recipe=preset, report=report)
    restored = load(tmp_path / preset, build_mlp)
    x = torch.randn(3, 128)
    assert torch.equal(outputs(restored, x), outputs(model, x))
    for (name, _, qt), (name2, _, qt2) in zip(quantized_weights(model), quantized_weights(restored), strict=True):
        assert name == name2 and qt2.spec == qt.spec and tuple(qt2.shape) == tuple(qt.shape)
        assert qt2.tensors().keys() == qt.tensors().keys()
        assert all(torch.equal(qt.tensors()[k], qt2.tensors()[k]) for k in qt.tensors())


def test_static_activation_scales_round_trip(tmp_path: Path) -> None:
    recipe = {
        "weights": {"format": "int8", "group_size": 0},
        "activations": {"format": "int8", "granularity": "tensor", "dynamic": False},
    }
    torch.manual_seed(0)
    calibration = [torch.randn(4, 128) for _ in range(4)]
    model, _ = polyquant.quantize(build_mlp(), recipe, calibration=calibration, progress=False)
    save(model, tmp_path / "static", recipe=recipe)
    restored = load(tmp_path / "static", build_mlp)
    assert restored[0].act == model[0].act and not restored[0].act.dynamic
    assert torch.equal(restored[0].act_scale, model[0].act_scale)
    x = torch.randn(2, 128)
    assert torch.equal(outputs(restored, x), outputs(model, x))


def tiny_llama_factory(tie: bool = True) -> Callable[[], torch.nn.Module]:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=tie,
    )
    return lambda: transformers.LlamaForCausalLM(config).eval()


def test_llama_with_tied_embeddings_round_trips(tmp_path: Path) -> None:
    factory = tiny_llama_factory(tie=True)
    torch.manual_seed(0)
    model, report = polyquant.quantize(factory(), "w8a16", progress=False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    path = save(model, tmp_path / "llama", report=report)
    manifest = read_manifest(path)
    assert manifest["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    with safetensors.torch.safe_open(str(path / WEIGHTS_FILE), framework="pt") as handle:
        assert "lm_head.weight" not in set(handle.keys())
    torch.manual_seed(1)  # the factory's own random weights differ: everything must come from the file
    restored = load(path, factory)
    ids = torch.randint(0, 128, (2, 12))
    assert torch.equal(outputs(restored, ids).logits, outputs(model, ids).logits)
    assert restored.lm_head.weight is restored.model.embed_tokens.weight
    assert len(quantized_weights(restored)) == len(quantized_weights(model)) > 0


class ConvEmbedNet(torch.nn.Module):
    """Every quantized module type at once: embedding, depthwise Conv1d (Mamba-style), Conv2d, Linear."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 32)
        self.conv1d = torch.nn.Conv1d(32, 32, 4, groups=32, padding=3)
        self.conv2d = torch.nn.Conv2d(1, 8, 3, padding=1, stride=stride)
        self.head = torch.nn.Linear(32, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).transpose(1, 2)  # (batch, 32, seq)
        h = self.conv1d(h)[..., : ids.shape[1]]
        h = self.conv2d(h.unsqueeze(1)).mean(1)  # (batch, 32, seq)
        return self.head(h.transpose(1, 2))


CONV_RECIPE = {
    "weights": {"format": "int8", "group_size": 0},
    "modules": ["Linear", "Conv1d", "Conv2d", "Embedding"],
    "adapter_excludes": False,
}


def test_conv_and_embedding_modules_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, _ = polyquant.quantize(ConvEmbedNet(), CONV_RECIPE, progress=False)
    types = {name: type(module).__name__ for name, module, _ in quantized_weights(model)}
    assert types == {"embed": "QEmbedding", "conv1d": "QConv1d", "conv2d": "QConv2d", "head": "QLinear"}
    save(model, tmp_path / "convs", recipe=CONV_RECIPE)
    assert read_manifest(tmp_path / "convs")["modules"]["conv2d"]["extra"]["stride"] == [1, 1]
    restored = load(tmp_path / "convs", ConvEmbedNet)
    ids = torch.randint(0, 50, (2, 7))
    assert torch.equal(outputs(restored, ids), outputs(model, ids))
    with pytest.raises(CheckpointError, match=r"module conv2d: the model has stride=\(2, 2\).*saved with \[1, 1\]"):
        load(tmp_path / "convs", lambda: ConvEmbedNet(stride=2))


def test_a_quantized_root_module_round_trips(tmp_path: Path) -> None:
    from polyquant.formats import get
    from polyquant.nn import QLinear

    torch.manual_seed(0)
    layer = QLinear.from_linear(torch.nn.Linear(64, 32), get("int4").with_options(group_size=32))
    save(layer, tmp_path / "layer")
    restored = load(tmp_path / "layer", lambda: torch.nn.Linear(64, 32))
    assert isinstance(restored, QLinear)
    x = torch.randn(3, 64)
    assert torch.equal(outputs(restored, x), outputs(layer, x))
    assert [row.name for row in inspect(tmp_path / "layer").layers] == [""]


def test_unquantized_model_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_mlp().to(torch.bfloat16)
    save(model, tmp_path / "fp")
    restored = load(tmp_path / "fp", lambda: build_mlp().to(torch.bfloat16))
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True)
    )
    assert read_manifest(tmp_path / "fp")["modules"] == {}


def test_load_into_an_instance_onto_a_device_and_from_meta(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    x = torch.randn(2, 128)
    expected = outputs(model, x)
    assert torch.equal(outputs(load(path, build_mlp(), device="cpu"), x), expected)
    with torch.device("meta"):
        skeleton = build_mlp()
    restored = load(path, skeleton)
    assert torch.equal(outputs(restored, x), expected)


def test_manifest_records_recipe_report_metadata_and_report_file(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    manifest = read_manifest(path)
    assert manifest["recipe"]["name"] == "w4a16-g128"
    assert manifest["metadata"] == {"note": "test"}
    assert manifest["report"]
    assert manifest["polyquant_version"] == polyquant.__version__
    assert manifest["torch_version"] == torch.__version__.split("+")[0]
    entry = manifest["modules"]["0"]
    assert entry["type"] == "QLinear" and entry["shape"] == [256, 128] and entry["dtype"] == "float32"
    assert entry["spec"] == model[0].weight.spec.to_dict()
    assert entry["extra"] == {"in_features": 128, "out_features": 256}
    assert (path / REPORT_FILE).read_text().strip()


# --------------------------------------------------------------------------------------------- atomicity
def test_save_replaces_an_existing_checkpoint_and_keeps_foreign_files(tmp_path: Path) -> None:
    first, _ = quantized_mlp(seed=0)
    second, _ = quantized_mlp(seed=1)
    path = save(first, tmp_path / "ckpt")
    (path / "tokenizer.json").write_text("{}")
    (path / "extras").mkdir()
    (path / "extras" / "notes.txt").write_text("kept")
    save(second, path)
    x = torch.randn(2, 128)
    assert torch.equal(outputs(load(path, build_mlp), x), outputs(second, x))
    assert (path / "tokenizer.json").read_text() == "{}" and (path / "extras" / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or retired directories left


@pytest.mark.parametrize("cleanup", [True, False], ids=["exception", "killed"])
def test_interrupted_save_leaves_the_previous_checkpoint_intact(
    saved: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch, cleanup: bool
) -> None:
    path, model = saved
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    real_save_file = safetensors.torch.save_file

    def crash_midway(tensors: dict[str, torch.Tensor], filename: str, metadata: Any = None) -> None:
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:  # half the file made it to disk, then the process died
            handle.truncate(Path(filename).stat().st_size // 2)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
    if not cleanup:  # a killed process runs no cleanup at all
        monkeypatch.setattr(polyquant.checkpoint.writer.shutil, "rmtree", lambda *a, **k: None)
    other, _ = quantized_mlp(seed=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save(other, path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name != "ckpt")
    if cleanup:
        assert leftovers == []
    else:
        assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.") and leftovers[0].endswith(".saving")
    x = torch.randn(2, 128)
    assert torch.equal(outputs(load(path, build_mlp), x), outputs(model, x))


def test_failure_while_swapping_restores_the_previous_checkpoint(
    saved: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model = saved
    real_replace = polyquant.checkpoint.writer.os.replace
    calls: list[str] = []

    def flaky_replace(src: Any, dst: Any) -> None:
        calls.append(str(src))
        if len(calls) == 2:  # old checkpoint already moved aside, new one fails to move in
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(polyquant.checkpoint.writer.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        save(quantized_mlp(seed=3)[0], path)
    monkeypatch.undo()
    x = torch.randn(2, 128)
    assert torch.equal(outputs(load(path, build_mlp), x), outputs(model, x))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


def test_save_refuses_to_clobber_other_directories(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "main.py").write_text("print('hi')")
    with pytest.raises(CheckpointError, match="not a polyquant checkpoint"):
        save(build_mlp(), tmp_path / "project")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        save(build_mlp(), tmp_path / "file")
    assert (tmp_path / "project" / "main.py").exists()


def test_save_rejects_unserializable_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="metadata is not JSON-serializable"):
        save(build_mlp(), tmp_path / "a", metadata={"when": object()})
    with torch.device("meta"):
        skeleton = build_mlp()
    with pytest.raises(CheckpointError, match=r"tensor 0\.weight is on the meta device"):
        save(skeleton, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------------------------- integrity
def _rewrite_manifest(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((path / CONFIG_FILE).read_text())
    edit(manifest)
    (path / CONFIG_FILE).write_text(json.dumps(manifest))


def test_flipped_byte_fails_the_hash_check(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match the SHA-256.*re-save or re-download"):
        load(path, build_mlp)
    load(path, build_mlp, verify=False)  # opting out of the hash check is possible (and documented)


@pytest.mark.parametrize("keep", [0.5, 0.999, 4 / 1e9])
def test_truncated_file_is_reported_as_truncated(saved: tuple[Path, torch.nn.Module], keep: float) -> None:
    path, _ = saved
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated"):
        load(path, build_mlp, verify=False)


def test_newer_format_version_asks_for_an_upgrade(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    _rewrite_manifest(path, lambda m: m.update(format_version="2.0", polyquant_version="9.1.0"))
    with pytest.raises(CheckpointError, match=r"written by polyquant 9\.1\.0 \(checkpoint format 2\.0\).*upgrade"):
        load(path, build_mlp)
    with pytest.raises(CheckpointError, match="upgrade"):
        inspect(path)


def test_newer_minor_version_still_loads(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    _rewrite_manifest(path, lambda m: m.update(format_version="1.7"))
    x = torch.randn(1, 128)
    assert torch.equal(outputs(load(path, build_mlp), x), outputs(model, x))


def test_tensor_missing_from_the_file_is_named(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path / WEIGHTS_FILE
    tensors = safetensors.torch.load_file(str(weights))
    del tensors["2.bias"]
    safetensors.torch.save_file(tensors, str(weights))
    manifest = json.loads((path / CONFIG_FILE).read_text())
    import hashlib

    manifest["files"][WEIGHTS_FILE] = {
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "bytes": weights.stat().st_size,
    }
    (path / CONFIG_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"tensor 2\.bias is listed in polyquant\.json but missing"):
        load(path, build_mlp)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda: torch.nn.Sequential(*build_mlp(), torch.nn.Linear(128, 4)),
            r"tensor 4\.bias of the model is not in the checkpoint \(2 missing\)",
        ),
        (lambda: torch.nn.Sequential(*list(build_mlp())[:3]), r"tensor 3\.bias in the checkpoint has no place"),
        (
            lambda: torch.nn.Sequential(*list(build_mlp())[:3], torch.nn.LayerNorm(64)),
            r"tensor 3\.weight: shape \(128,\) in the checkpoint, \(64,\) in the model",
        ),
        (
            lambda: torch.nn.Sequential(*list(build_mlp())[:3], torch.nn.LayerNorm(128).double()),
            r"tensor 3\.weight: dtype float32 in the checkpoint, float64 in the model",
        ),
        (
            lambda: torch.nn.Sequential(torch.nn.Linear(128, 128), *list(build_mlp())[1:]),
            r"module 0: the model's weight has shape \(128, 128\)",
        ),
        (lambda: torch.nn.Sequential(torch.nn.Identity()), r"module 0 is a Identity without a weight tensor"),
        (torch.nn.Sequential, r"quantizes module '0' but the model has no such module"),
        (lambda: "not a model", "not a torch.nn.Module"),
    ],
)
def test_architecture_mismatches_name_the_tensor(
    saved: tuple[Path, torch.nn.Module], factory: Callable[[], Any], message: str
) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError, match=message):
        load(path, factory)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("tensors"), r"field 'tensors' must be a dict"),
        (lambda m: m["modules"]["0"].update(type="QFancy"), r"type 'QFancy'.*upgrade polyquant or install"),
        (lambda m: m["modules"]["0"]["weight"].update(format={"bogus": 1}), r"module 0: quantized tensor metadata"),
        (lambda m: m["modules"]["0"].update(act={"format": "int3"}), r"module 0"),
        (lambda m: m["aliases"].update({"x": "missing"}), r"aliases\.x"),
        (lambda m: m["files"].clear(), r"files\.model\.safetensors"),
        (lambda m: m.update(format="something-else"), "not a polyquant checkpoint manifest"),
    ],
)
def test_damaged_manifests_are_rejected(
    saved: tuple[Path, torch.nn.Module], edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    path, _ = saved
    _rewrite_manifest(path, edit)
    with pytest.raises(CheckpointError, match=message):
        load(path, build_mlp)


def test_missing_and_garbled_files(tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere", build_mlp)
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(path, build_mlp)
    (path / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"has no polyquant\.json"):
        load(path, build_mlp)


# --------------------------------------------------------------------------------------------- no pickle
def test_checkpoints_hold_only_safetensors_and_json(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE, REPORT_FILE])
    raw = (path / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header.pop("__metadata__")["producer"] == "polyquant"
    assert 8 + header_len + max(v["data_offsets"][1] for v in header.values()) == len(raw)
    json.loads((path / CONFIG_FILE).read_text())
    for file in path.iterdir():
        head = file.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{file.name} looks like a pickle or a torch.save zip"


def test_checkpoint_code_never_uses_pickle() -> None:
    package = Path(polyquant.checkpoint.__file__).parent
    source = "\n".join(p.read_text() for p in sorted(package.glob("*.py")))
    for forbidden in ("torch.load(", "torch.save(", "import pickle", "pickle.load", "weights_only"):
        assert forbidden not in source


# --------------------------------------------------------------------------------------------- inspect
def test_inspect_summarizes_without_reading_tensors(
    saved: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model = saved

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("inspect must not read tensor data")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    summary = inspect(path)
    qlayers = quantized_weights(model)
    assert [row.name for row in summary.layers] == [name for name, _, _ in qlayers]
    for row, (_, module, qt) in zip(summary.layers, qlayers, strict=True):
        assert row.type == type(module).__name__ and row.format == qt.spec.name
        assert row.shape == tuple(qt.shape) and row.nbytes == qt.nbytes
        assert row.bits_per_weight == pytest.approx(qt.bits_per_weight)
    assert summary.formats == {qlayers[0][2].spec.name: len(qlayers)}
    assert summary.quantized_bytes == sum(qt.nbytes for _, _, qt in qlayers)
    assert summary.size_on_disk == sum(p.stat().st_size for p in path.iterdir())
    assert summary.other_tensors == len(read_manifest(path)["tensors"]) - sum(len(qt.tensors()) for _, _, qt in qlayers)
    assert summary.recipe == "w4a16-g128" and summary.metadata == {"note": "test"}
    expected_bpw = 8 * summary.quantized_bytes / sum(qt.shape.numel() for _, _, qt in qlayers)
    assert summary.avg_bits_per_weight == pytest.approx(expected_bpw)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["totals"]["avg_bits_per_weight"] == pytest.approx(expected_bpw)
    markdown = summary.to_markdown()
    assert "| 0 | QLinear |" in markdown and "bits/weight" in markdown


def test_inspect_of_an_unquantized_checkpoint(tmp_path: Path) -> None:
    model = build_mlp()
    summary = inspect(save(model, tmp_path / "fp"))
    assert summary.layers == () and summary.formats == {} and summary.avg_bits_per_weight == 0.0
    assert summary.other_bytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert "none (unquantized)" in summary.to_markdown()


def test_inspect_can_verify_the_hash(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    inspect(path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        inspect(path, verify=True)

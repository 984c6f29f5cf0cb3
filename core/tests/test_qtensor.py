"""QTensor: dequantization, accounting, device moves and (de)serialization with validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from polyquant.errors import CheckpointError
from polyquant.formats import FormatSpec, QParams
from polyquant.formats.builtin import builtin_formats
from polyquant.packing import pack
from polyquant.qtensor import QTensor

BUILTINS = {spec.name: spec for spec in builtin_formats()}
SHAPE = (16, 256)


def weights(shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_dequantize_equals_fake_quantize_and_survives_serialization(name: str) -> None:
    spec = BUILTINS[name]
    w = weights()
    qt = spec.quantize(w)
    expected = spec.fake_quantize(w)
    assert torch.equal(qt.dequantize(), expected)
    metadata = json.loads(json.dumps(qt.metadata()))  # JSON-able
    again = QTensor.from_tensors(qt.tensors(), metadata)
    assert again.spec == spec and again.shape == qt.shape and again.dtype == qt.dtype
    assert torch.equal(again.dequantize(), expected)
    moved = qt.to("cpu")
    assert moved.device == torch.device("cpu") and torch.equal(moved.dequantize(), expected)
    assert torch.equal(qt.codes(), spec.quantize_codes(w, spec.compute_qparams(w)))


def test_round_trip_through_safetensors(tmp_path: Path) -> None:
    qt = BUILTINS["nvfp4"].quantize(weights(dtype=torch.bfloat16))
    save_file(qt.tensors(), tmp_path / "w.safetensors")
    loaded = QTensor.from_tensors(load_file(tmp_path / "w.safetensors"), qt.metadata())
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.dequantize(), qt.dequantize())


def test_stored_tensors_and_exact_bytes() -> None:
    qt = BUILTINS["int4"].quantize(weights((256, 256)))
    assert set(qt.tensors()) == {"packed", "scale"}
    assert qt.packed.shape == (256, 128) and qt.scale is not None and qt.scale.dtype == torch.float16
    assert qt.nbytes == 256 * 128 + 256 * 2 * 2
    assert qt.bits_per_weight == 4.125 and qt.numel == 256 * 256
    uint4 = BUILTINS["uint4"].quantize(weights((4, 128)))
    assert set(uint4.tensors()) == {"packed", "scale", "zero"}
    assert uint4.zero is not None and uint4.zero.dtype == torch.float16
    mx = BUILTINS["mxfp4"].quantize(weights())
    assert mx.scale is not None and mx.scale.dtype == torch.uint8  # e8m0 codes, 8 bits each
    assert set(BUILTINS["nvfp4"].quantize(weights()).tensors()) == {"packed", "scale", "tensor_scale"}
    assert set(BUILTINS["codebook4"].quantize(weights()).tensors()) == {"packed", "levels"}


def test_qparams_are_decoded_values() -> None:
    w = weights()
    for name in ("mxfp4", "nvfp4", "uint4", "codebook3", "int8_blockwise"):
        spec = BUILTINS[name]
        qt, qp = spec.quantize(w), spec.compute_qparams(w)
        got = qt.qparams()
        assert torch.equal(got.scale, qp.scale)
        for field in ("zero", "tensor_scale", "levels"):
            a, b = getattr(got, field), getattr(qp, field)
            assert (a is None and b is None) or torch.equal(a, b)
    scales = BUILTINS["mxfp4"].quantize(w).qparams().scale
    assert torch.equal(torch.exp2(torch.log2(scales).round()), scales)  # powers of two


def test_dequantize_dtype_and_repr() -> None:
    qt = BUILTINS["int4"].quantize(weights((4096, 128), dtype=torch.float16))
    assert qt.dequantize().dtype == torch.float16
    assert qt.dequantize(torch.float32).dtype == torch.float32
    assert repr(qt) == "QTensor(int4 per-group(128), shape=(4096, 128), 4.125 bpw)"
    assert isinstance(qt.shape, torch.Size)


def test_quantize_with_given_qparams() -> None:
    spec = BUILTINS["int8"]
    w = weights()
    qp = QParams(scale=torch.full((16, 1), 0.05))
    qt = spec.quantize(w, qparams=qp)
    assert torch.equal(qt.dequantize(), spec.fake_quantize(w, qparams=qp))
    assert torch.equal(qt.qparams().scale, torch.full((16, 1), 0.05).half().float())


def good_parts() -> tuple[dict[str, torch.Tensor], dict]:
    qt = BUILTINS["uint4"].quantize(weights((4, 128)))
    return qt.tensors(), qt.metadata()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t, m: t.pop("zero"), r"missing \['zero'\]"),
        (lambda t, m: t.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
        (lambda t, m: t.update(scale=t["scale"].float()), "'scale' should be"),
        (lambda t, m: t.update(packed=t["packed"][:, :-1]), "'packed' should be"),
        (lambda t, m: m.update(shape=[4, 100]), "does not fit format"),
        (lambda t, m: m.update(dtype="int8"), "not a float dtype"),
        (lambda t, m: m.update(dtype="no_such_dtype"), "malformed"),
        (lambda t, m: m.pop("format"), "malformed"),
        (lambda t, m: m["format"].update(scale_dtype="fp12"), "malformed"),
        (lambda t, m: m.update(version=99), "newer than this polyquant"),
    ],
    ids=[
        "missing",
        "extra",
        "scale-dtype",
        "packed-shape",
        "shape",
        "dtype",
        "unknown-dtype",
        "no-format",
        "bad-spec",
        "version",
    ],
)
def test_from_tensors_rejects_inconsistent_data(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    tensors, metadata = good_parts()
    mutate(tensors, metadata)
    with pytest.raises(CheckpointError, match=message):
        QTensor.from_tensors(tensors, metadata)


def test_codes_unpack_the_packed_rows() -> None:
    spec: FormatSpec = BUILTINS["int3"]
    qt = spec.quantize(weights((3, 128)))
    assert torch.equal(pack(qt.codes(), 3), qt.packed)
    assert qt.codes().shape == (3, 128)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_cuda_matches_cpu(name: str) -> None:
    spec = BUILTINS[name]
    w = weights()
    clip = torch.full(spec.granularity.scale_shape(SHAPE), 0.9) if spec.scale_method == "absmax" else None
    cpu = spec.quantize(w, clip=clip)
    gpu = spec.quantize(w.cuda(), clip=None if clip is None else clip.cuda())
    assert gpu.device.type == "cuda" and gpu.dequantize().device.type == "cuda"
    if spec.scale_method == "absmean":  # mean|W| sums in a different order on the GPU
        torch.testing.assert_close(gpu.dequantize().cpu(), cpu.dequantize())
    else:
        assert torch.equal(gpu.codes().cpu(), cpu.codes())
        assert torch.equal(gpu.dequantize().cpu(), cpu.dequantize())
    assert torch.equal(cpu.to("cuda").dequantize().cpu(), cpu.dequantize())

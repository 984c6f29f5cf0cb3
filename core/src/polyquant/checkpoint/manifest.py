"""The checkpoint manifest (``polyquant.json``) and the integrity checks of ``model.safetensors``.

Everything here reads metadata only: the manifest's structure and format version, the safetensors header
(an 8-byte little-endian length followed by JSON, as the safetensors format specifies), the file's size and
its SHA-256. :func:`verify_files` is the one gate both :func:`polyquant.checkpoint.load` and
:func:`polyquant.checkpoint.inspect` pass through.

Manifest fields (format 1.x): ``format`` (``"polyquant-checkpoint"``), ``format_version`` (``"MAJOR.MINOR"``),
``polyquant_version``, ``torch_version``, ``model_class``, ``modules`` (quantized module name → ``type``,
``format``, ``spec``, ``shape``, ``dtype``, ``bits_per_weight``, ``parts``, ``weight`` (the QTensor metadata),
``act``, ``extra``), ``tensors`` (name → ``shape``, ``dtype``), ``aliases`` (name → stored name), ``files``
(``model.safetensors`` → ``sha256``, ``bytes``), ``recipe``, ``report`` (summary) and ``metadata``.

Example:
    >>> read_manifest("out/mlp")["modules"]["0"]["format"]  # doctest: +SKIP
    'int8'
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from polyquant.errors import CheckpointError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "REPORT_FILE",
    "WEIGHTS_FILE",
    "dtype_name",
    "module_prefix",
    "read_header",
    "read_manifest",
    "sha256_file",
    "verify_files",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "polyquant.json"
REPORT_FILE = "report.md"
#: Checkpoint format version written by this polyquant; readers accept any minor of the same major.
FORMAT_VERSION = "1.0"
FORMAT_NAME = "polyquant-checkpoint"
REDOWNLOAD = "re-save or re-download the checkpoint"
#: safetensors header dtype codes → torch dtype names (the codes are fixed by the safetensors format).
HEADER_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
    "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
    "F64": "float64", "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip


def module_prefix(module_name: str) -> str:
    """``"name."`` for a submodule, ``""`` for the root module (whose tensors have no prefix)."""
    return f"{module_name}." if module_name else ""


def dtype_name(dtype: torch.dtype) -> str:
    """The name a manifest uses for a dtype: ``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def sha256_file(path: Path, *, fsync: bool = False) -> str:
    """SHA-256 of a file, streamed; with ``fsync`` the file is also flushed to disk (before publishing it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            digest.update(block)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``polyquant.json`` (structure and format version); no tensor is read.

    Raises:
        CheckpointError: missing directory or file, invalid JSON, a newer major format version (upgrade
            polyquant), or a malformed field (named in the message).

    Example:
        >>> read_manifest("out/mlp")["format_version"]  # doctest: +SKIP
        '1.0'
    """
    root = Path(directory).expanduser()
    path = root / CONFIG_FILE
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist; check the path")
    if not path.is_file():
        raise CheckpointError(f"{root} has no {CONFIG_FILE}, so it is not a polyquant checkpoint; check the path")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is damaged: {REDOWNLOAD}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a polyquant checkpoint manifest (no 'format': '{FORMAT_NAME}')")
    _check_version(manifest, path)
    _validate_manifest(manifest, path)
    return manifest


def _check_version(manifest: dict[str, Any], path: Path) -> None:
    from polyquant import __version__

    version = manifest.get("format_version")
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise CheckpointError(f"{path}: format_version {version!r} is not 'MAJOR.MINOR'; {REDOWNLOAD}")
    if int(parts[0]) > int(FORMAT_VERSION.split(".")[0]):
        writer = manifest.get("polyquant_version", "a newer release")
        raise CheckpointError(
            f"{path.parent} was written by polyquant {writer} (checkpoint format {version}); this polyquant "
            f"{__version__} reads format {FORMAT_VERSION.split('.')[0]}.x — upgrade: pip install -U polyquant-core"
        )


def _validate_manifest(manifest: dict[str, Any], path: Path) -> None:
    def fail(field_name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: field {field_name!r} {problem}; the manifest is damaged: {REDOWNLOAD}")

    def is_shape(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value)

    expected: dict[str, type] = {"modules": dict, "tensors": dict, "aliases": dict, "files": dict, "metadata": dict}
    for key, kind in expected.items():
        if not isinstance(manifest.get(key), kind):
            raise fail(key, f"must be a {kind.__name__}")
    for key in ("recipe", "report"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise fail(key, "must be an object or null")
    tensors = manifest["tensors"]
    for name, info in tensors.items():
        if not (isinstance(info, dict) and is_shape(info.get("shape")) and isinstance(info.get("dtype"), str)):
            raise fail(f"tensors.{name}", "must be {'shape': [int, ...], 'dtype': str}")
    for name, canonical in manifest["aliases"].items():
        if canonical not in tensors or name in tensors:
            raise fail(f"aliases.{name}", f"must name a stored tensor (got {canonical!r})")
    known = tensors.keys() | manifest["aliases"].keys()
    module_fields: dict[str, type] = {
        "type": str, "format": str, "spec": dict, "shape": list, "dtype": str, "parts": list,
        "weight": dict, "extra": dict,
    }  # fmt: skip
    for name, entry in manifest["modules"].items():
        if not isinstance(entry, dict):
            raise fail(f"modules.{name}", "must be an object")
        for key, kind in module_fields.items():
            if not isinstance(entry.get(key), kind):
                raise fail(f"modules.{name}.{key}", f"must be a {kind.__name__}")
        if entry.get("act") is not None and not isinstance(entry["act"], dict):
            raise fail(f"modules.{name}.act", "must be an object or null")
        if not is_shape(entry["shape"]):
            raise fail(f"modules.{name}.shape", "must be a list of non-negative integers")
        for part in entry["parts"]:
            if f"{module_prefix(name)}weight.{part}" not in known:
                raise fail(f"modules.{name}.parts", f"lists {part!r} but no tensor {module_prefix(name)}weight.{part}")
    file_info = manifest["files"].get(WEIGHTS_FILE)
    if not (
        isinstance(file_info, dict)
        and isinstance(file_info.get("sha256"), str)
        and len(file_info["sha256"]) == 64
        and isinstance(file_info.get("bytes"), int)
    ):
        raise fail(f"files.{WEIGHTS_FILE}", "must be {'sha256': 64 hex digits, 'bytes': int}")


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """Parse a safetensors header (8-byte little-endian length + JSON) and check the file is complete."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {REDOWNLOAD}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        if length < 2 or 8 + length > size:
            raise CheckpointError(f"{path} is truncated or not a safetensors file (bad header); {REDOWNLOAD}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} has a damaged safetensors header ({exc}); {REDOWNLOAD}") from exc
    header.pop("__metadata__", None)
    end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    if 8 + length + end > size:
        raise CheckpointError(
            f"{path} is truncated: {size} bytes on disk, the header needs {8 + length + end}; the save was "
            f"interrupted or the download is incomplete — {REDOWNLOAD}"
        )
    return header  # type: ignore[no-any-return]


def verify_files(root: Path, manifest: dict[str, Any], *, check_hash: bool) -> dict[str, dict[str, Any]]:
    """Size, hash and header of ``model.safetensors`` against the manifest; returns the header."""
    path = root / WEIGHTS_FILE
    header = read_header(path)
    recorded = manifest["files"][WEIGHTS_FILE]
    size = path.stat().st_size
    if size != recorded["bytes"]:
        state = "truncated" if size < recorded["bytes"] else "longer than recorded"
        raise CheckpointError(f"{path} is {state}: {size} bytes on disk, {recorded['bytes']} when saved; {REDOWNLOAD}")
    if check_hash and sha256_file(path) != recorded["sha256"]:
        raise CheckpointError(
            f"{path} does not match the SHA-256 recorded in {CONFIG_FILE}: the file was modified or corrupted "
            f"after saving; {REDOWNLOAD}"
        )
    listed = manifest["tensors"]
    missing, extra = sorted(listed.keys() - header.keys()), sorted(header.keys() - listed.keys())
    if missing:
        raise CheckpointError(
            f"tensor {missing[0]} is listed in {CONFIG_FILE} but missing from {path} ({len(missing)} missing); "
            f"{REDOWNLOAD}"
        )
    if extra:
        raise CheckpointError(f"tensor {extra[0]} is in {path} but not listed in {CONFIG_FILE}; {REDOWNLOAD}")
    for name, info in listed.items():
        stored = header[name]
        code = str(stored.get("dtype"))
        dtype = HEADER_DTYPES.get(code, code)
        if list(stored.get("shape", [])) != info["shape"] or dtype != info["dtype"]:
            raise CheckpointError(
                f"tensor {name} is {dtype}{stored.get('shape')} in {path} but {info['dtype']}{info['shape']} in "
                f"{CONFIG_FILE}; {REDOWNLOAD}"
            )
    return header

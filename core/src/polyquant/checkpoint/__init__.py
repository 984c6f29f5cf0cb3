"""Safe checkpoints: ``save(model, dir)`` / ``load(dir, factory)`` with safetensors + JSON, atomic and hashed.

A checkpoint is a directory holding

* ``model.safetensors`` — every tensor: each quantized module's QTensor parts as ``<module>.weight.<part>``
  (``packed``, ``scale``, ``zero``, ...) and every other parameter and persistent buffer under its
  ``state_dict`` name, in its original dtype. Tensors shared between modules (tied embeddings) are written
  once; the other names are recorded as aliases.
* ``polyquant.json`` — the manifest (:mod:`polyquant.checkpoint.manifest`): format version, polyquant and torch
  versions, the recipe, one entry per quantized module (type, format spec, shape, dtype, activation spec,
  architecture extras), the quantization report's summary, the name/shape/dtype of every tensor, and the
  SHA-256 and size of ``model.safetensors``.
* ``report.md`` — the quantization report, when one was given.

Nothing is ever pickled: tensors go through ``safetensors`` and everything else is JSON, so loading an
untrusted checkpoint cannot run code. :func:`save` writes into a temporary directory next to the target,
fsyncs, and swaps it into place, so an interrupted save leaves the previous checkpoint intact. :func:`load`
verifies the manifest, the format version, the file size and hash, and that the tensors match both the
manifest and the model before touching the model. :func:`inspect` summarizes a checkpoint from its manifest
and the safetensors header alone.

Example:
    >>> import tempfile, torch, polyquant
    >>> def build() -> torch.nn.Module:
    ...     return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> model, report = polyquant.quantize(build(), "w8a16", progress=False)
    >>> path = polyquant.save(model, f"{tempfile.mkdtemp()}/mlp", report=report)
    >>> restored = polyquant.load(path, build)
    >>> x = torch.randn(2, 64)
    >>> torch.equal(restored(x), model(x))
    True
    >>> inspect(path).formats
    {'int8': 2}
"""

from __future__ import annotations

from polyquant.checkpoint.manifest import CONFIG_FILE, FORMAT_VERSION, REPORT_FILE, WEIGHTS_FILE, read_manifest
from polyquant.checkpoint.reader import load
from polyquant.checkpoint.summary import CheckpointSummary, LayerSummary, inspect
from polyquant.checkpoint.writer import save

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "REPORT_FILE",
    "WEIGHTS_FILE",
    "CheckpointSummary",
    "LayerSummary",
    "inspect",
    "load",
    "read_manifest",
    "save",
]

"""QTensor: a quantized tensor as plain data — packed codes, scales, zeros, levels and its format.

A QTensor is deliberately **not** a ``torch.Tensor`` subclass:

* **Explicit dispatch.** Quantized modules hold QTensors and call :mod:`polyquant.kernels`, which picks
  a kernel by (op, format, device). There is no ``__torch_dispatch__`` layer deciding implicitly what
  ``x @ w`` means, so which kernel runs is always inspectable (``polyquant.kernels.explain``).
* **Trivial serialization.** Its state is a handful of ordinary tensors (:meth:`tensors`) plus a JSON
  description (:meth:`metadata`) — exactly what safetensors + JSON checkpoints store, with no pickling
  and no custom tensor types to register.
* **No surprises** in autograd, ``torch.compile``, ``deepcopy`` or device moves: tensor subclasses with
  packed storage tend to leak through these in version-specific ways.

Layout: codes are packed with :func:`polyquant.packing.pack` row by row along the *last* axis of the
logical shape; scales are stored in the format's ``scale_dtype`` (E8M0 and E4M3 scales as their
``uint8`` codes, so they count 8 bits each), zeros and codebook levels in the scale's float type and the
NVFP4 tensor scale as a 0-dim float32.

Example:
    >>> import torch, polyquant.formats as formats
    >>> qt = formats.get("int4").quantize(torch.randn(256, 256))
    >>> qt.dequantize().shape, qt.bits_per_weight
    (torch.Size([256, 256]), 4.125)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from polyquant.errors import CheckpointError, FormatError
from polyquant.formats.spec import FormatSpec, QParams
from polyquant.packing import unpack

__all__ = ["QTensor"]

METADATA_VERSION = 1
_TENSOR_NAMES = ("packed", "scale", "zero", "tensor_scale", "levels")


@dataclass(eq=False)
class QTensor:
    """Packed codes plus everything needed to dequantize them.

    Build one with :meth:`FormatSpec.quantize <polyquant.formats.spec.FormatSpec.quantize>` or
    :meth:`from_tensors`.

    Attributes:
        packed: ``uint8`` codes packed along the last axis: shape ``(*shape[:-1], ceil(K·bits/8))``.
        scale: stored scales (``None`` for formats without scales).
        zero: zero points (asymmetric integer formats).
        spec: the format.
        shape: logical (unpacked) shape.
        dtype: the original tensor's dtype, the default output of :meth:`dequantize`.
        tensor_scale: 0-dim float32 second-level scale (NVFP4).
        levels: codebook levels (codebook formats).
    """

    packed: torch.Tensor
    scale: torch.Tensor | None
    zero: torch.Tensor | None
    spec: FormatSpec
    shape: torch.Size
    dtype: torch.dtype
    tensor_scale: torch.Tensor | None = None
    levels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.shape = torch.Size(self.shape)

    # ------------------------------------------------------------------ values
    def codes(self) -> torch.Tensor:
        """Unpacked ``uint8`` codes of the logical shape."""
        return unpack(self.packed, self.spec.bits, self.shape[-1]).reshape(self.shape)

    def qparams(self) -> QParams:
        """The quantization parameters decoded to ``float32`` (scales of 1 when the format has none)."""
        spec = self.spec
        if self.scale is None:
            scale = torch.ones(spec.granularity.scale_shape(tuple(self.shape)), device=self.device)
        else:
            scale = spec.load_scale(self.scale)
        return QParams(
            scale=scale,
            zero=None if self.zero is None else self.zero.float(),
            tensor_scale=None if self.tensor_scale is None else self.tensor_scale.float(),
            levels=None if self.levels is None else self.levels.float(),
        )

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dequantized tensor (``dtype`` defaults to the original dtype).

        Bit-identical to ``spec.fake_quantize`` of the original tensor with the same qparams.
        """
        return self.spec.dequantize_codes(self.codes(), self.qparams(), dtype=dtype or self.dtype)

    def to(self, device: torch.device | str) -> QTensor:
        """A copy with every stored tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return QTensor(
            packed=self.packed.to(device),
            scale=move(self.scale),
            zero=move(self.zero),
            spec=self.spec,
            shape=self.shape,
            dtype=self.dtype,
            tensor_scale=move(self.tensor_scale),
            levels=move(self.levels),
        )

    # ------------------------------------------------------------------ accounting
    @property
    def device(self) -> torch.device:
        """Device of the packed codes."""
        return self.packed.device

    @property
    def numel(self) -> int:
        """Number of logical elements."""
        return self.shape.numel()

    @property
    def nbytes(self) -> int:
        """Exact bytes of all stored tensors (codes, scales, zeros, tensor scale, levels)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def bits_per_weight(self) -> float:
        """``8 · nbytes / numel``; equals ``spec.bits_per_weight(shape)``."""
        return 8 * self.nbytes / self.numel

    # ------------------------------------------------------------------ serialization
    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by name, present ones only (packed, scale, zero, tensor_scale, levels)."""
        found = {name: getattr(self, name) for name in _TENSOR_NAMES}
        return {name: t for name, t in found.items() if t is not None}

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description: format, logical shape, original dtype and a layout version."""
        return {
            "format": self.spec.to_dict(),
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "version": METADATA_VERSION,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> QTensor:
        """Rebuild a QTensor from :meth:`tensors` and :meth:`metadata` (e.g. read from a checkpoint).

        Raises:
            CheckpointError: when the metadata is malformed, or a tensor is missing, unexpected, or has
                a shape or dtype that does not match the format and logical shape.

        Example:
            >>> import torch, polyquant.formats as formats
            >>> qt = formats.get("nf4").quantize(torch.randn(4, 64))
            >>> same = QTensor.from_tensors(qt.tensors(), qt.metadata())
            >>> torch.equal(same.dequantize(), qt.dequantize())
            True
        """
        try:
            version = int(metadata.get("version", METADATA_VERSION))
            spec = FormatSpec.from_dict(metadata["format"])
            shape = torch.Size(int(s) for s in metadata["shape"])
            dtype = getattr(torch, str(metadata["dtype"]))
        except (KeyError, TypeError, ValueError, AttributeError, FormatError) as exc:
            raise CheckpointError(
                f"quantized tensor metadata is malformed or from an incompatible version: {exc}"
            ) from exc
        if version > METADATA_VERSION:
            raise CheckpointError(
                f"quantized tensor layout version {version} is newer than this polyquant supports "
                f"({METADATA_VERSION}); upgrade polyquant"
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise CheckpointError(f"quantized tensor metadata names dtype {metadata['dtype']!r}, not a float dtype")
        try:
            expected = spec.storage(shape)
        except FormatError as exc:
            raise CheckpointError(f"logical shape {tuple(shape)} does not fit format {spec.name!r}: {exc}") from exc
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise CheckpointError(
                f"quantized tensor of format {spec.name!r} needs tensors {sorted(expected)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for name, (tshape, tdtype) in expected.items():
            t = tensors[name]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tshape or t.dtype != tdtype:
                got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CheckpointError(
                    f"quantized tensor of format {spec.name!r} and shape {tuple(shape)}: '{name}' should be "
                    f"{tshape} {tdtype}, got {got}; the checkpoint is corrupted or was written for another format"
                )
        return cls(
            packed=tensors["packed"],
            scale=tensors.get("scale"),
            zero=tensors.get("zero"),
            spec=spec,
            shape=shape,
            dtype=dtype,
            tensor_scale=tensors.get("tensor_scale"),
            levels=tensors.get("levels"),
        )

    def __repr__(self) -> str:
        dims = ", ".join(str(s) for s in self.shape)
        return f"QTensor({self.spec.summary()}, shape=({dims}), {self.bits_per_weight:.4g} bpw)"

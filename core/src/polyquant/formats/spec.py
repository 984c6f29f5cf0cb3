"""FormatSpec: an element codec plus the rules that scale a tensor into it.

A :class:`FormatSpec` says *what* a quantized tensor is: the element codec (``int4``, ``fp4_e2m1``,
``nf4``, ...), which elements share a scale (:class:`~polyquant.formats.granularity.Granularity`), how
scales are chosen (``scale_method``), how they are stored (``scale_dtype``) and whether there is a zero
point or a second-level tensor scale. Quantizers choose :class:`QParams`; the spec turns a tensor and
its qparams into codes, and codes back into values, always with

    ``dequant = (decode(code) − zero) · scale [· tensor_scale]``

Scale rules (``scale_method="absmax"``, the default):

* symmetric: ``scale = amax / m`` with ``m = qmax`` for integers (int4 → ``amax/7``; so ``-8`` is never
  produced by absmax scales, only by smaller, e.g. clipped, user scales) and ``m = max_value`` otherwise
  (6 for E2M1, 448 for E4M3, 1 for NF4). ``int1`` (two's complement {−1, 0}) divides by 1.
* asymmetric (integers only) always uses *unsigned* codes ``0..2**b-1``, even for ``intN`` names: the range
  is widened to include 0, ``scale = (max − min)/qmax`` and ``zero = clamp(round(−min/scale), 0, qmax)``.
* ``scale_dtype="e8m0"`` (OCP MX): ``X = 2**(floor(log2 amax) − emax_elem)`` (``scale_rounding="floor"``)
  or the smallest power of two with ``amax/X ≤ max_value`` (``"rceil"``).
* ``tensor_scale=True`` (NVFP4): ``g = amax_tensor/(max_value·448)`` in FP32 and block scales
  ``E4M3(amax_block/(max_value·g))``.

``scale_method="absmean"`` uses ``mean|W|`` (BitNet b1.58 ternary, binary), ``"none"`` no scale at all
(plain casts, and codebooks whose levels are the values). Groups whose range is zero get scale 1 (binary,
which has no zero code, gets the tiniest float32 scale instead, so such groups dequantize to ±1e-38).
Scales are rounded to their storage type (fp16/bf16/e8m0/e4m3) *before* encoding, so dequantization is
exact with respect to what is stored, and scales never underflow to zero.

Example:
    >>> import torch
    >>> from polyquant.formats.elements import IntElement
    >>> int4 = FormatSpec("int4", IntElement(4), Granularity.per_group(32), scale_dtype="fp16")
    >>> w = torch.randn(8, 64)
    >>> qt = int4.quantize(w)
    >>> torch.equal(qt.dequantize(), int4.fake_quantize(w))
    True
    >>> int4.bits_per_weight((8, 64))
    4.5
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from polyquant.errors import FormatError
from polyquant.formats.codec import ElementCodec
from polyquant.formats.elements import (
    FP8_E4M3,
    CodebookElement,
    FloatElement,
    IntElement,
    element_from_dict,
)
from polyquant.formats.granularity import Granularity
from polyquant.formats.layout import GroupLayout
from polyquant.formats.qparams import (
    SCALE_DTYPES,
    QParams,
    load_scale,
    mx_scale,
    quantile_levels,
    round_scale,
    store_scale,
)
from polyquant.packing import pack, packed_size

if TYPE_CHECKING:
    from polyquant.qtensor import QTensor

__all__ = ["SCALE_DTYPES", "FormatSpec", "QParams"]

SCALE_METHODS = ("absmax", "absmean", "none")
SCALE_ROUNDINGS = ("nearest", "floor", "rceil")
_PER_TENSOR = Granularity.per_tensor()


@dataclass(frozen=True)
class FormatSpec:
    """A tensor format: element codec + granularity + scale rules (a frozen, registrable record).

    Args:
        name: registry name (``"int4"``).
        element: the element codec.
        granularity: which elements share a scale.
        symmetric: ``False`` adds a zero point (integer elements only, unsigned codes).
        scale_dtype: storage of scales: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"e8m0"`` or ``"e4m3"``;
            codebook levels are stored in this type too.
        scale_rounding: ``"nearest"``, or for ``e8m0`` scales ``"floor"`` (OCP) / ``"rceil"``.
        scale_method: ``"absmax"``, ``"absmean"`` or ``"none"``.
        tensor_scale: add an FP32 per-tensor scale above E4M3 block scales (NVFP4).
        description: one line for listings.

    Example:
        >>> from polyquant.formats.elements import FP4_E2M1
        >>> spec = FormatSpec("mxfp4", FP4_E2M1, Granularity.per_group(32), scale_dtype="e8m0",
        ...                   scale_rounding="floor")
        >>> spec.bits_per_weight((16, 64))
        4.25
    """

    name: str
    element: ElementCodec
    granularity: Granularity = _PER_TENSOR
    symmetric: bool = True
    scale_dtype: str = "fp32"
    scale_rounding: str = "nearest"
    scale_method: str = "absmax"
    tensor_scale: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise FormatError(f"format {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        el = self.element
        if not isinstance(self.name, str) or not self.name.strip():
            return "the name must be a non-empty string"
        if not isinstance(el, ElementCodec):
            return f"element {el!r} does not implement ElementCodec (encode/decode/round/name/bits/kind/max_value)"
        if el.kind == "scale":
            return f"{el.name} is a scale type, not an element; use it as scale_dtype='e8m0'"
        if not 1 <= el.bits <= 8:
            return f"element {el.name} has {el.bits} bits; formats need 1..8"
        if self.scale_dtype not in SCALE_DTYPES:
            return f"scale_dtype {self.scale_dtype!r} is unknown; use one of {', '.join(SCALE_DTYPES)}"
        if self.scale_method not in SCALE_METHODS:
            return f"scale_method {self.scale_method!r} is unknown; use one of {', '.join(SCALE_METHODS)}"
        if self.scale_rounding not in SCALE_ROUNDINGS:
            return f"scale_rounding {self.scale_rounding!r} is unknown; use one of {', '.join(SCALE_ROUNDINGS)}"
        e8m0 = self.scale_dtype == "e8m0"
        if e8m0 != (self.scale_rounding in ("floor", "rceil")):
            return "e8m0 scales need scale_rounding 'floor' or 'rceil', and other scale types need 'nearest'"
        if e8m0 and not isinstance(el, FloatElement):
            return f"e8m0 (MX) scales need a minifloat element, got {el.name}; use scale_dtype 'fp16' or 'fp32'"
        if self.is_codebook != (self.scale_method == "none" and isinstance(el, CodebookElement)):
            return "codebook elements carry their values in levels and need scale_method='none'"
        if self.is_codebook and self.scale_dtype not in ("fp32", "fp16", "bf16"):
            return "codebook levels are stored as fp32, fp16 or bf16; set scale_dtype accordingly"
        if self.scale_method != "absmax" and (e8m0 or self.tensor_scale or not self.symmetric):
            return f"scale_method {self.scale_method!r} supports neither zero points, e8m0 nor tensor scales"
        if self.tensor_scale and self.scale_dtype != "e4m3":
            return "tensor_scale (two-level scaling) is defined for e4m3 block scales (NVFP4); set scale_dtype='e4m3'"
        if not self.symmetric:
            if not isinstance(el, IntElement):
                return (
                    f"asymmetric scaling (a zero point) needs an integer element, but {el.name} is {el.kind}; "
                    f"keep symmetric=True or pick an integer format such as uint4"
                )
            if el.signed:
                return f"asymmetric scaling uses unsigned codes; use IntElement({el.bits}, signed=False)"
            if self.scale_dtype not in ("fp32", "fp16", "bf16"):
                return "zero points are stored like scales; use scale_dtype fp32, fp16 or bf16"
        elif isinstance(el, IntElement) and not el.signed:
            return (
                f"symmetric scaling needs signed codes to represent negatives; "
                f"use IntElement({el.bits}) or symmetric=False"
            )
        return None

    # ------------------------------------------------------------------ description
    @property
    def bits(self) -> int:
        """Bits per element code."""
        return self.element.bits

    @property
    def kind(self) -> str:
        """Element kind (``"int"``, ``"float"``, ``"lut"``, ``"binary"``, ``"ternary"``)."""
        return self.element.kind

    @property
    def is_codebook(self) -> bool:
        """Whether the levels are data (:class:`~polyquant.formats.lut.CodebookElement`)."""
        return isinstance(self.element, CodebookElement)

    def summary(self) -> str:
        """Short label such as ``int4 per-group(128)``."""
        return f"{self.name} {self.granularity}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Element-wise, unscaled: ``uint8`` codes of ``x``."""
        return self.element.encode(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Element-wise, unscaled: ``float32`` values of ``codes``."""
        return self.element.decode(codes)

    def with_options(
        self,
        *,
        group_size: int | None = None,
        granularity: Granularity | None = None,
        symmetric: bool | None = None,
        scale_dtype: str | None = None,
        name: str | None = None,
        scale_method: str | None = None,
        scale_rounding: str | None = None,
        description: str | None = None,
    ) -> FormatSpec:
        """A copy with some options changed (the result is validated like any spec).

        ``group_size`` > 0 selects per-group scaling, 0 or -1 per-channel (axis 0). Switching
        ``symmetric`` on an integer format switches between signed and unsigned codes. Switching to
        ``scale_dtype="e8m0"`` picks ``scale_rounding="floor"`` unless given.

        Example:
            >>> from polyquant.formats.elements import IntElement
            >>> spec = FormatSpec("int4", IntElement(4)).with_options(group_size=64, symmetric=False)
            >>> spec.granularity, spec.element
            (Granularity(kind='group', axis=0, group_size=64, block=(0, 0)), IntElement(bits=4, signed=False))
        """
        changes: dict[str, Any] = {}
        if group_size is not None and granularity is not None:
            raise FormatError("pass either group_size or granularity, not both")
        if group_size is not None:
            if group_size in (0, -1):
                changes["granularity"] = Granularity.per_channel(0)
            elif isinstance(group_size, int) and group_size > 0:
                changes["granularity"] = Granularity.per_group(group_size)
            else:
                raise FormatError(f"group_size must be a positive integer, or 0/-1 for per-channel; got {group_size!r}")
        if granularity is not None:
            changes["granularity"] = granularity
        if symmetric is not None:
            changes["symmetric"] = bool(symmetric)
            if isinstance(self.element, IntElement):
                changes["element"] = IntElement(self.element.bits, signed=bool(symmetric))
        if scale_dtype is not None:
            changes["scale_dtype"] = scale_dtype
            if scale_rounding is None:
                if scale_dtype == "e8m0" and self.scale_rounding == "nearest":
                    changes["scale_rounding"] = "floor"
                elif scale_dtype != "e8m0":
                    changes["scale_rounding"] = "nearest"
        for key, value in (
            ("name", name),
            ("scale_method", scale_method),
            ("scale_rounding", scale_rounding),
            ("description", description),
        ):
            if value is not None:
                changes[key] = value
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ storage
    def _storage_dtype(self) -> torch.dtype:
        return SCALE_DTYPES[self.scale_dtype][0]

    def _value_dtype(self) -> torch.dtype:
        """Float dtype zeros and levels are stored in."""
        return self._storage_dtype() if self.scale_dtype in ("fp32", "fp16", "bf16") else torch.float32

    def storage(self, shape: tuple[int, ...] | torch.Size) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every tensor a :class:`~polyquant.qtensor.QTensor` of ``shape`` stores.

        Example:
            >>> from polyquant.formats.elements import IntElement
            >>> FormatSpec("int4", IntElement(4), Granularity.per_group(2)).storage((3, 4))
            {'packed': ((3, 2), torch.uint8), 'scale': ((3, 2), torch.float32)}
        """
        shape = tuple(int(s) for s in shape)
        if not shape:
            raise FormatError("0-dim tensors cannot be quantized; keep scalars in high precision")
        scale_shape = self.granularity.scale_shape(shape)
        out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "packed": ((*shape[:-1], packed_size(shape[-1], self.bits)), torch.uint8)
        }
        if self.scale_method != "none":
            out["scale"] = (scale_shape, self._storage_dtype())
        if not self.symmetric:
            out["zero"] = (scale_shape, self._value_dtype())
        if self.tensor_scale:
            out["tensor_scale"] = ((), torch.float32)
        if self.is_codebook:
            out["levels"] = ((*scale_shape, 1 << self.bits), self._value_dtype())
        return out

    def bits_per_weight(self, shape: tuple[int, ...] | torch.Size) -> float:
        """Exact stored bits per element: codes (with per-row byte padding) plus scales, zeros, levels.

        Equals :attr:`QTensor.bits_per_weight <polyquant.qtensor.QTensor.bits_per_weight>` of a tensor of
        this shape.

        Example:
            >>> from polyquant.formats.elements import IntElement
            >>> FormatSpec("int4", IntElement(4), Granularity.per_group(128), scale_dtype="fp16").bits_per_weight(
            ...     (4096, 4096))
            4.125
        """
        total = 0
        for tshape, dtype in self.storage(shape).values():
            total += math.prod(tshape) * torch.empty((), dtype=dtype).element_size() * 8
        return total / math.prod(int(s) for s in shape)

    def store_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """Float32 scales (already representable) → the stored tensor (fp32/fp16/bf16 or 8-bit codes)."""
        return store_scale(scale, self.scale_dtype, self.scale_rounding)

    def load_scale(self, stored: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`store_scale`: stored scales → ``float32`` values."""
        return load_scale(stored, self.scale_dtype)

    def _round_scale(self, raw: torch.Tensor) -> torch.Tensor:
        return round_scale(raw, self.scale_dtype, self.scale_rounding, self.name)

    # ------------------------------------------------------------------ qparams
    def _check_input(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor):
            raise FormatError(f"format {self.name!r}: expected a torch.Tensor, got {type(w).__name__}")
        if not torch.is_floating_point(w):
            raise FormatError(
                f"format {self.name!r}: expected a floating-point tensor, got {w.dtype}; "
                f"quantize float weights (call .float() first) — integer tensors are already quantized"
            )
        if w.dim() == 0:
            raise FormatError(
                f"format {self.name!r}: 0-dim tensors cannot be quantized; keep scalars in high precision"
            )
        bad = None if bool(torch.isfinite(w.sum())) else ~torch.isfinite(w)  # one reduction when all finite
        if bad is not None and bool(bad.any()):
            raise FormatError(
                f"format {self.name!r}: the tensor contains {int(bad.sum())} NaN/Inf value(s) out of {w.numel()}; "
                f"fix the weights (or exclude this module) before quantizing"
            )
        return w if w.dtype in (torch.float32, torch.float64) else w.float()

    def _check_clip(
        self, clip: float | torch.Tensor | None, scale_shape: tuple[int, ...], device: torch.device
    ) -> torch.Tensor | None:
        if clip is None:
            return None
        c = torch.as_tensor(clip, dtype=torch.float32, device=device)
        fits = c.dim() <= len(scale_shape) and all(
            n in (1, s) for n, s in zip(reversed(c.shape), reversed(scale_shape), strict=False)
        )
        if not fits:
            raise FormatError(
                f"clip of shape {tuple(c.shape)} does not broadcast to the scale shape {scale_shape}; "
                f"pass a float or a tensor of the scale shape"
            )
        if not bool(torch.isfinite(c).all()) or bool((c <= 0).any()):
            raise FormatError("clip factors must be positive finite numbers (e.g. 0.9 clips the range by 10%)")
        return c

    def _divisor(self) -> float:
        el = self.element
        if isinstance(el, IntElement):
            return float(max(el.qmax, 1))
        return float(el.max_value)

    def compute_qparams(self, w: torch.Tensor, *, clip: float | torch.Tensor | None = None) -> QParams:
        """Scales (and zeros, tensor scale, levels) of ``w`` by this format's rules.

        Args:
            w: the tensor (float; no NaN/Inf).
            clip: multiply the range (absmax, min/max, mean|w| or codebook levels) by this factor; a
                float or a tensor broadcastable to the scale shape.

        Example:
            >>> from polyquant.formats.elements import IntElement
            >>> FormatSpec("int8", IntElement(8)).compute_qparams(torch.tensor([-2.54, 1.0])).scale
            tensor(0.0200)
        """
        x = self._check_input(w)
        layout = GroupLayout.of(self.granularity, tuple(x.shape))
        c = self._check_clip(clip, layout.scale_shape, x.device)
        ones = torch.ones(layout.scale_shape, dtype=torch.float32, device=x.device)
        if self.is_codebook:
            return self.cast_qparams(QParams(ones, levels=quantile_levels(x, layout, self.bits, c)), tuple(x.shape))
        if self.scale_method == "none":
            return QParams(ones)
        if not self.symmetric:
            return self._asymmetric_qparams(x, layout, c)
        stat = layout.reduce(x, "absmean" if self.scale_method == "absmean" else "absmax").float()
        amax = stat.amax() if self.tensor_scale else None  # the tensor's absmax, before clipping
        if c is not None:
            stat = stat * c
        if self.scale_dtype == "e8m0":
            assert isinstance(self.element, FloatElement)
            return QParams(mx_scale(stat, self.element, self.scale_rounding))
        tensor_scale = None
        divisor = torch.full_like(stat, self._divisor())
        if amax is not None:
            g = amax / (self._divisor() * FP8_E4M3.max_value)
            tensor_scale = torch.where(g > 0, g, torch.ones_like(g))
            divisor = divisor * tensor_scale
        raw = torch.where(stat > 0, stat / divisor, ones * self._empty_group_scale())
        return QParams(self._round_scale(raw), tensor_scale=tensor_scale)

    def _empty_group_scale(self) -> float:
        """Scale of all-zero groups: 1 when the element has a zero, else the smallest one (binary: ±tiny)."""
        has_zero = float(self.element.round(torch.zeros(1))[0]) == 0.0
        return 1.0 if has_zero else torch.finfo(torch.float32).tiny

    def _asymmetric_qparams(self, x: torch.Tensor, layout: GroupLayout, c: torch.Tensor | None) -> QParams:
        lo = layout.reduce(x, "amin").float().clamp(max=0)
        hi = layout.reduce(x, "amax").float().clamp(min=0)
        if c is not None:
            lo, hi = lo * c, hi * c
        qmax = float(self.element.qmax)  # type: ignore[attr-defined]
        span = hi - lo
        scale = self._round_scale(torch.where(span > 0, span / qmax, torch.ones_like(span)))
        zero = torch.round(-lo / scale).clamp(0, qmax)
        return QParams(scale, zero=zero.to(self._value_dtype()).float())

    def cast_qparams(self, qparams: QParams, shape: tuple[int, ...] | torch.Size) -> QParams:
        """Validate ``qparams`` for a tensor of ``shape`` and round them to what storage holds.

        Every quantize/dequantize path goes through this, so a :class:`QTensor` built from these
        qparams dequantizes bit-exactly like :meth:`fake_quantize` with them.

        Raises:
            FormatError: wrong shapes, missing or superfluous fields, non-positive or non-finite scales.
        """
        if not isinstance(qparams, QParams):
            raise FormatError(f"format {self.name!r}: qparams must be a QParams, got {type(qparams).__name__}")
        expected = self.storage(shape)
        scale_shape = self.granularity.scale_shape(tuple(int(s) for s in shape))
        _check_shape(self.name, "scale", qparams.scale, scale_shape)
        scale = qparams.scale.float()
        if self.scale_method == "none":
            if not bool((scale == 1).all()):
                raise FormatError(f"format {self.name!r} stores no scale (scale_method='none'); pass ones as scale")
        else:
            if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
                raise FormatError(f"format {self.name!r}: scales must be positive and finite")
            scale = self._round_scale(scale)
        zero = _optional(self.name, "zero", qparams.zero, "zero" in expected, "set symmetric=False for zero points")
        if zero is not None:
            _check_shape(self.name, "zero", zero, scale_shape)
            zero = zero.to(self._value_dtype()).float()
        tscale = _optional(
            self.name, "tensor_scale", qparams.tensor_scale, self.tensor_scale, "only tensor_scale formats use one"
        )
        if tscale is not None:
            _check_shape(self.name, "tensor_scale", tscale, ())
            tscale = tscale.float()
            if not bool(torch.isfinite(tscale)) or float(tscale) <= 0:
                raise FormatError(f"format {self.name!r}: tensor_scale must be positive and finite")
        levels = _optional(self.name, "levels", qparams.levels, self.is_codebook, "only codebook formats use levels")
        if levels is not None:
            _check_shape(self.name, "levels", levels, expected["levels"][0])
            levels = levels.to(self._value_dtype()).float()
            if not bool(torch.isfinite(levels).all()):
                raise FormatError(f"format {self.name!r}: codebook levels must be finite")
        return QParams(scale, zero, tscale, levels)

    # ------------------------------------------------------------------ quantization
    def quantize_codes(self, w: torch.Tensor, qparams: QParams) -> torch.Tensor:
        """Unpacked ``uint8`` codes of ``w`` (same shape) under ``qparams``."""
        x = self._check_input(w)
        qp = self.cast_qparams(qparams, tuple(x.shape))
        layout = GroupLayout.of(self.granularity, tuple(x.shape))
        if self.is_codebook:
            assert qp.levels is not None
            rows = layout.rows(x)
            codes = self.element.encode(rows, qp.levels.reshape(layout.num_groups, -1))  # type: ignore[call-arg]
            return layout.from_rows(codes)
        y = layout.view(x)
        if self.scale_method != "none":
            divisor = layout.broadcastable(qp.scale)
            if qp.tensor_scale is not None:
                divisor = divisor * qp.tensor_scale
            y = y / divisor
        if qp.zero is not None:
            y = y + layout.broadcastable(qp.zero)
        return self.element.encode(y).reshape(x.shape)

    def dequantize_codes(
        self, codes: torch.Tensor, qparams: QParams, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Values ``(decode(code) − zero) · scale [· tensor_scale]`` of unpacked codes, as ``dtype``."""
        shape = tuple(codes.shape)
        qp = self.cast_qparams(qparams, shape)
        layout = GroupLayout.of(self.granularity, shape)
        if self.is_codebook:
            assert qp.levels is not None
            rows = self.element.decode(layout.rows(codes), qp.levels.reshape(layout.num_groups, -1))  # type: ignore[call-arg]
            return layout.from_rows(rows).to(dtype)
        values = layout.view(self.element.decode(codes))
        if qp.zero is not None:
            values = values - layout.broadcastable(qp.zero)
        if self.scale_method != "none":
            values = values * layout.broadcastable(qp.scale)
        if qp.tensor_scale is not None:
            values = values * qp.tensor_scale
        return values.reshape(shape).to(dtype)

    def _resolve(self, w: torch.Tensor, qparams: QParams | None, clip: float | torch.Tensor | None) -> QParams:
        if qparams is not None and clip is not None:
            raise FormatError("clip only applies when qparams are computed; pass either qparams or clip")
        if qparams is None:
            return self.compute_qparams(w, clip=clip)
        return self.cast_qparams(qparams, tuple(w.shape))

    def fake_quantize(
        self, w: torch.Tensor, *, qparams: QParams | None = None, clip: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Quantize and dequantize ``w`` without packing; same dtype as ``w``.

        Equals ``self.quantize(w, ...).dequantize()`` bit for bit.
        """
        qp = self._resolve(w, qparams, clip)
        return self.dequantize_codes(self.quantize_codes(w, qp), qp, dtype=w.dtype)

    def quantize(
        self, w: torch.Tensor, *, qparams: QParams | None = None, clip: float | torch.Tensor | None = None
    ) -> QTensor:
        """Quantize ``w`` into a packed :class:`~polyquant.qtensor.QTensor`.

        Args:
            w: float tensor with at least one dimension, shape compatible with the granularity.
            qparams: parameters chosen by a quantizer; computed by :meth:`compute_qparams` when omitted.
            clip: range factor for the computed qparams (not combinable with ``qparams``).
        """
        from polyquant.qtensor import QTensor

        qp = self._resolve(w, qparams, clip)
        codes = self.quantize_codes(w, qp)
        return QTensor(
            packed=pack(codes, self.bits),
            scale=None if self.scale_method == "none" else self.store_scale(qp.scale),
            zero=None if qp.zero is None else qp.zero.to(self._value_dtype()),
            spec=self,
            shape=w.shape,
            dtype=w.dtype,
            tensor_scale=qp.tensor_scale,
            levels=None if qp.levels is None else qp.levels.to(self._value_dtype()),
        )

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints); inverse of :meth:`from_dict`."""
        return {
            "name": self.name,
            "element": self.element.to_dict(),
            "granularity": self.granularity.to_dict(),
            "symmetric": self.symmetric,
            "scale_dtype": self.scale_dtype,
            "scale_rounding": self.scale_rounding,
            "scale_method": self.scale_method,
            "tensor_scale": self.tensor_scale,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FormatSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Elements of types the core does not know (plugin codecs) are taken from the registered format
        of the same name.

        Raises:
            FormatError: unknown keys, missing fields or invalid values.
        """
        if not isinstance(data, dict):
            raise FormatError(f"a format description must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown or "name" not in data or "element" not in data:
            raise FormatError(
                f"format description is malformed (unknown keys: {sorted(unknown)}; 'name' and 'element' are "
                f"required); it must come from FormatSpec.to_dict()"
            )
        try:
            element = element_from_dict(dict(data["element"]))
        except FormatError:
            from polyquant.plugins import get_plugin_manager

            element = get_plugin_manager().get_format(str(data["name"])).element
        fields = {k: v for k, v in data.items() if k not in ("element", "granularity")}
        gran = Granularity.from_dict(data["granularity"]) if "granularity" in data else Granularity.per_tensor()
        return cls(element=element, granularity=gran, **fields)


def _check_shape(fmt: str, what: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise FormatError(f"format {fmt!r}: qparams.{what} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise FormatError(
            f"format {fmt!r}: qparams.{what} has shape {tuple(t.shape)}, expected {tuple(shape)} for this "
            f"granularity; compute qparams with the same format options"
        )


def _optional(fmt: str, what: str, t: torch.Tensor | None, needed: bool, hint: str) -> torch.Tensor | None:
    if needed and t is None:
        raise FormatError(f"format {fmt!r} needs qparams.{what}; compute qparams with this format")
    if not needed and t is not None:
        raise FormatError(f"format {fmt!r} does not use qparams.{what} ({hint})")
    return t

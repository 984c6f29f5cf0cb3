"""TurboQuant (Zandieh et al., arXiv 2504.19874): calibration-free vector quantization of KV vectors.

**TurboQuant-MSE** (``variant="mse"``, ``b`` bits): every vector ``x`` (the last axis, ``d = head_dim``)
is stored as its norm ``‖x‖`` (``float16``) and the ``b``-bit indices of ``y = Πu``, ``u = x/‖x‖``,
quantized coordinate by coordinate with the Lloyd–Max codebook of the coordinate density of a random unit
vector (:func:`~polyquant.kvcache.lloyd_max.coordinate_codebook`: the Gaussian levels scaled by ``1/√d``,
or the exact Beta-shaped ones). ``Π`` is a seeded random orthogonal matrix (any
:class:`~polyquant.kvcache.rotation.Rotation`; see ``rotation``). Reconstruction:
``x̃ = ‖x‖ · Πᵀ c[idx]``. On random unit vectors at ``d = 128`` the error ``E‖u − ũ‖²`` is about
0.36, 0.116, 0.034 and 0.0093 for ``b = 1..4``.

**TurboQuant-prod** (``variant="prod"``, ``b`` bits): ``b − 1`` bits of TurboQuant-MSE plus a 1-bit QJL
sketch of the residual: with ``r = u − ũ_mse`` it stores ``γ = ‖r‖`` (``float16``) and ``sgn(S'r)``
(``d`` bits) and estimates ``ũ = ũ_mse + (√(π/2)/d) · γ · S'ᵀ sgn(S'r)``, which makes inner products
unbiased: ``E⟨q, x̃⟩ = ⟨q, x⟩`` (MSE-only quantization shrinks them; at 1 bit by ``2/π``). The sketch is
``S' = SΠ`` with ``S`` a seeded ``d × d`` standard Gaussian matrix — again i.i.d. standard Gaussian, so
this is exactly the paper's estimator, computed in the rotated basis. ``b = 1`` is pure QJL (``m = d``).

**Outlier channel split** (fractional bit widths): with ``outlier_channels`` (or ``outlier_fraction``)
``n > 0``, the ``n`` channels of largest RMS per head (measured on the first chunk encoded, e.g. the
prefill, then fixed) form a second, independent TurboQuant instance with ``outlier_bits`` (default
``bits + 1``) bits, its own norm, rotation and codebook for dimension ``n``. ``turbo2.5`` is the paper's
example: 32 of 128 channels at 3 bits and 96 at 2 bits, i.e. 2.25 code bits, plus two ``float16`` norms
per vector (0.25 bits at ``d = 128``): **2.5 stored bits per element**. The per-head channel permutation
(``heads × d`` ``int16``) is stored once per cache.

Stored bits per element (codes + norms, ``d = head_dim``, ``float16`` norms):

================  ===============================  ==============
variant           per vector                       at ``d = 128``
================  ===============================  ==============
mse, b bits       ``b·d + 16``                     ``b + 0.125``
prod, b bits      ``(b−1)·d + d + 16 + 16``        ``b + 0.25``
split             the sum over both parts          e.g. 2.5
================  ===============================  ==============

Example:
    >>> import torch
    >>> quantizer = TurboQuantConfig(bits=3).build()
    >>> x = torch.randn(1, 2, 10, 128)
    >>> codes = quantizer.encode(x)
    >>> tuple(codes["idx"].shape), tuple(codes["norm"].shape)  # 3·128 bits = 48 bytes per vector
    ((1, 2, 10, 48), (1, 2, 10, 1))
    >>> quantizer.decode(codes).shape
    torch.Size([1, 2, 10, 128])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from polyquant.errors import FormatError
from polyquant.kvcache.base import check_kv_tensor
from polyquant.kvcache.lloyd_max import MAX_CODEBOOK_BITS, CodebookDistribution, coordinate_codebook
from polyquant.kvcache.rotation import Rotation, RotationFactory, random_orthogonal
from polyquant.packing import pack, packed_size, unpack

__all__ = ["TurboQuantConfig", "TurboQuantQuantizer"]

_NORM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Tags that derive the seeds of the independent random matrices of one config.
_ROTATION_TAG = {"regular": 0, "outlier": 1}
_SKETCH_TAG = {"regular": 2, "outlier": 3}


def _derive_seed(seed: int, tag: int) -> int:
    return (int(seed) * 1_000_003 + tag) % (1 << 62)


def _check_bits(bits: object, variant: str, field: str) -> None:
    top = MAX_CODEBOOK_BITS + (1 if variant == "prod" else 0)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= top:
        raise FormatError(
            f"TurboQuantConfig.{field} must be an integer in 1..{top} for variant={variant!r}, got {bits!r}"
        )


@dataclass(frozen=True)
class TurboQuantConfig:
    """TurboQuant settings for one KV stream.

    Attributes:
        bits: bits per coordinate (``mse``: 1..4; ``prod``: 1..5, of which one is the QJL sign bit).
        variant: ``"mse"`` (lowest reconstruction error) or ``"prod"`` (unbiased inner products; keys).
        outlier_channels: channels per head quantized with ``outlier_bits`` (0: no split).
        outlier_fraction: the same as a fraction of ``head_dim`` (rounded; use one or the other).
        outlier_bits: bits of the outlier channels (default ``bits + 1``).
        codebook: ``"gaussian"`` (Lloyd–Max levels of N(0, 1/d)) or ``"beta"`` (exact coordinate density).
        seed: seed of the rotations and sketches (all derived from it, deterministic on every device).
        rotation: ``factory(dim, seed) -> Rotation`` for each (sub)space (default
            :func:`~polyquant.kvcache.rotation.random_orthogonal`), e.g. a fast randomized Hadamard.
        norm_dtype: dtype of the stored norms ``‖x‖`` and ``γ``.

    Example:
        >>> TurboQuantConfig(bits=2, outlier_channels=32, outlier_bits=3).bits_per_element(128)
        2.5
    """

    bits: int = 3
    variant: Literal["mse", "prod"] = "mse"
    outlier_channels: int = 0
    outlier_fraction: float = 0.0
    outlier_bits: int | None = None
    codebook: CodebookDistribution = "gaussian"
    seed: int = 0
    rotation: RotationFactory | None = None
    norm_dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        if self.variant not in ("mse", "prod"):
            raise FormatError(f"TurboQuantConfig.variant must be 'mse' or 'prod', got {self.variant!r}")
        _check_bits(self.bits, self.variant, "bits")
        if self.outlier_bits is not None:
            _check_bits(self.outlier_bits, self.variant, "outlier_bits")
        n = self.outlier_channels
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FormatError(f"TurboQuantConfig.outlier_channels must be a non-negative integer, got {n!r}")
        f = self.outlier_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise FormatError(f"TurboQuantConfig.outlier_fraction must be in [0, 1), got {f!r}")
        if n and f:
            raise FormatError("TurboQuantConfig: give outlier_channels or outlier_fraction, not both")
        if self.codebook not in ("gaussian", "beta"):
            raise FormatError(f"TurboQuantConfig.codebook must be 'gaussian' or 'beta', got {self.codebook!r}")
        if self.rotation is not None and not callable(self.rotation):
            raise FormatError("TurboQuantConfig.rotation must be a callable factory(dim, seed) -> Rotation")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FormatError(f"TurboQuantConfig.seed must be an integer, got {self.seed!r}")
        if self.norm_dtype not in _NORM_DTYPES:
            raise FormatError(
                f"TurboQuantConfig.norm_dtype must be float16, bfloat16 or float32, got {self.norm_dtype}"
            )

    @property
    def block_tokens(self) -> int:
        """Every token is encoded on its own."""
        return 1

    @property
    def resolved_outlier_bits(self) -> int:
        """``outlier_bits``, defaulting to ``bits + 1``."""
        return self.outlier_bits if self.outlier_bits is not None else self.bits + 1

    def outlier_count(self, head_dim: int) -> int:
        """Outlier channels for a head of ``head_dim`` channels.

        Raises:
            FormatError: when the split leaves no regular channels.
        """
        n = self.outlier_channels or round(self.outlier_fraction * head_dim)
        if n >= head_dim:
            raise FormatError(
                f"{n} outlier channels leave none of the {head_dim} channels regular; use fewer outlier channels"
            )
        return int(n)

    def build(self) -> TurboQuantQuantizer:
        """A quantizer for one stream."""
        return TurboQuantQuantizer(self)

    def _part_bytes(self, dim: int, bits: int) -> int:
        norm_bytes = torch.finfo(self.norm_dtype).bits // 8
        if self.variant == "mse":
            return packed_size(dim, bits) + norm_bytes
        mse = packed_size(dim, bits - 1) if bits > 1 else 0
        return mse + packed_size(dim, 1) + 2 * norm_bytes

    def bits_per_element(self, head_dim: int) -> float:
        """Stored bits per element: packed codes (and QJL signs) plus norms, padding included."""
        n = self.outlier_count(head_dim)
        total = self._part_bytes(head_dim - n, self.bits)
        if n:
            total += self._part_bytes(n, self.resolved_outlier_bits)
        return 8.0 * total / head_dim


class _Subspace:
    """One TurboQuant instance on ``dim``-dimensional vectors (the whole head or one side of the split)."""

    def __init__(self, config: TurboQuantConfig, dim: int, bits: int, role: str) -> None:
        self.dim = dim
        self.prod = config.variant == "prod"
        self.mse_bits = bits - 1 if self.prod else bits
        self.norm_dtype = config.norm_dtype
        factory = config.rotation if config.rotation is not None else random_orthogonal
        rotation = factory(dim, _derive_seed(config.seed, _ROTATION_TAG[role]))
        if not isinstance(rotation, Rotation) or rotation.dim != dim:
            raise FormatError(
                f"the rotation factory must return a Rotation of dim {dim} (with apply/apply_transpose), "
                f"got {rotation!r:.80}"
            )
        self.rotation: Rotation = rotation
        self._levels: torch.Tensor | None = None
        self._thresholds: torch.Tensor | None = None
        if self.mse_bits:
            codebook = coordinate_codebook(self.mse_bits, dim, config.codebook)
            self._levels, self._thresholds = codebook.level_tensor(), codebook.threshold_tensor()
        self._sketch: torch.Tensor | None = None
        if self.prod:
            generator = torch.Generator().manual_seed(_derive_seed(config.seed, _SKETCH_TAG[role]))
            self._sketch = torch.randn(dim, dim, generator=generator, dtype=torch.float32)
        self.qjl_scale = math.sqrt(math.pi / 2) / dim
        self._on_device: dict[tuple[str, str], torch.Tensor] = {}

    def _tensor(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._on_device:
            source = {"levels": self._levels, "thresholds": self._thresholds, "sketch": self._sketch}[name]
            assert source is not None
            self._on_device[key] = source.to(device)
        return self._on_device[key]

    def encode(self, x: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        norm = x.norm(dim=-1, keepdim=True)
        stored = norm.to(self.norm_dtype)
        if not bool(torch.isfinite(stored).all()):
            raise FormatError(
                f"a vector norm does not fit {self.norm_dtype} (or the input has Inf/NaN); "
                f"use norm_dtype=torch.float32 or check the keys/values"
            )
        y = self.rotation.apply(x / norm.clamp_min(1e-30))
        out = {f"{prefix}norm": stored}
        y_hat = torch.zeros_like(y)
        if self.mse_bits:
            idx = torch.bucketize(y, self._tensor("thresholds", y.device))
            out[f"{prefix}idx"] = pack(idx.to(torch.uint8), self.mse_bits)
            y_hat = self._tensor("levels", y.device)[idx]
        if self.prod:
            residual = y - y_hat
            out[f"{prefix}gamma"] = residual.norm(dim=-1, keepdim=True).to(self.norm_dtype)
            signs = (residual @ self._tensor("sketch", y.device).T) >= 0
            out[f"{prefix}qjl"] = pack(signs.to(torch.uint8), 1)
        return out

    def _mse_levels(self, codes: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor | None:
        if not self.mse_bits:
            return None
        idx = unpack(codes[f"{prefix}idx"], self.mse_bits, self.dim)
        return self._tensor("levels", idx.device)[idx.long()]

    def _signs(self, codes: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return unpack(codes[f"{prefix}qjl"], 1, self.dim).float() * 2 - 1

    def rotated_unit(self, codes: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        """The estimate of ``Πu`` (unit-norm direction, rotated basis)."""
        y_hat = self._mse_levels(codes, prefix)
        if self.prod:
            gamma = codes[f"{prefix}gamma"].float()
            signs = self._signs(codes, prefix)
            qjl = (self.qjl_scale * gamma) * (signs @ self._tensor("sketch", signs.device))
            y_hat = qjl if y_hat is None else y_hat + qjl
        assert y_hat is not None
        return y_hat

    def decode(self, codes: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        direction = self.rotation.apply_transpose(self.rotated_unit(codes, prefix))
        return codes[f"{prefix}norm"].float() * direction

    def scores(self, query: torch.Tensor, codes: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        """``⟨q, x̃⟩`` for every query/token pair without leaving the rotated basis."""
        q = self.rotation.apply(query.float())
        out: torch.Tensor | None = None
        y_hat = self._mse_levels(codes, prefix)
        if y_hat is not None:
            out = q @ y_hat.transpose(-1, -2)
        if self.prod:
            sketched = q @ self._tensor("sketch", q.device).T
            gamma = codes[f"{prefix}gamma"].float().transpose(-1, -2)
            qjl = (sketched @ self._signs(codes, prefix).transpose(-1, -2)) * (self.qjl_scale * gamma)
            out = qjl if out is None else out + qjl
        assert out is not None
        return out * codes[f"{prefix}norm"].float().transpose(-1, -2)


class TurboQuantQuantizer:
    """The quantizer of a :class:`TurboQuantConfig` (see :class:`polyquant.kvcache.KVTensorQuantizer`).

    Encoded tensors (prefixed ``outlier.`` / ``regular.`` with a channel split): ``idx`` (packed
    Lloyd–Max indices, absent for 1-bit prod), ``norm`` (``‖x‖``), and for prod ``qjl`` (packed sign
    bits) and ``gamma`` (``‖r‖``); all ``(batch, heads, tokens, ·)``.
    """

    def __init__(self, config: TurboQuantConfig) -> None:
        self.config = config
        self._parts: list[tuple[str, _Subspace, slice]] | None = None
        self._order: torch.Tensor | None = None  # (heads, head_dim) int16: outlier channels first
        self._index: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._shape: tuple[int, int] | None = None  # (heads, head_dim)

    @property
    def block_tokens(self) -> int:
        """Every token is encoded on its own."""
        return 1

    @property
    def state_nbytes(self) -> int:
        """The per-head channel permutation of a split (``heads × head_dim`` ``int16``), else 0."""
        return 0 if self._order is None else self._order.numel() * self._order.element_size()

    @property
    def outlier_channels(self) -> torch.Tensor | None:
        """``(heads, n)`` indices of the outlier channels once fixed (``None`` without a split)."""
        if self._order is None or self._parts is None:
            return None
        return self._order[:, : self._parts[0][2].stop].long()

    def _setup(self, x: torch.Tensor) -> None:
        heads, dim = x.shape[1], x.shape[-1]
        n = self.config.outlier_count(dim)
        if not n:
            self._parts = [("", _Subspace(self.config, dim, self.config.bits, "regular"), slice(0, dim))]
        else:
            rms = x.float().pow(2).mean(dim=(0, 2))  # (heads, head_dim), from the first chunk
            outliers = rms.topk(n, dim=-1).indices.sort(dim=-1).values
            mask = torch.ones(heads, dim, dtype=torch.bool, device=x.device).scatter(-1, outliers, False)
            regular = torch.arange(dim, device=x.device).expand(heads, dim)[mask].reshape(heads, dim - n)
            self._order = torch.cat([outliers, regular], dim=-1).to("cpu", torch.int16)
            self._parts = [
                ("outlier.", _Subspace(self.config, n, self.config.resolved_outlier_bits, "outlier"), slice(0, n)),
                ("regular.", _Subspace(self.config, dim - n, self.config.bits, "regular"), slice(n, dim)),
            ]
        self._shape = (heads, dim)

    def _permutation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._order is not None
        key = str(device)
        if key not in self._index:
            order = self._order.to(device, torch.long)
            self._index[key] = (order, order.argsort(dim=-1))
        return self._index[key]

    def _permute(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        if self._order is None:
            return x
        order, inverse_order = self._permutation(x.device)
        index = inverse_order if inverse else order
        return x.gather(-1, index[None, :, None, :].expand(x.shape[0], -1, x.shape[2], -1))

    def _check_shape(self, x: torch.Tensor, what: str) -> None:
        assert self._shape is not None
        heads, dim = self._shape
        if (x.shape[1], x.shape[-1]) != (heads, dim):
            raise FormatError(
                f"{what} has {x.shape[1]} heads of size {x.shape[-1]}, but this quantizer was set up for "
                f"{heads} heads of size {dim}; use one quantizer (cache) per layer"
            )

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Norms and packed codes of every vector of ``x`` ``(batch, heads, tokens, head_dim)``."""
        x = check_kv_tensor(x, "KV tensor")
        if self._parts is None:
            self._setup(x)
        self._check_shape(x, "the tensor")
        assert self._parts is not None
        xp = self._permute(x.float())
        out: dict[str, torch.Tensor] = {}
        for prefix, part, channels in self._parts:
            out.update(part.encode(xp[..., channels], prefix))
        return out

    def _require_setup(self) -> list[tuple[str, _Subspace, slice]]:
        if self._parts is None:
            raise FormatError("decode() before encode(): this quantizer has not seen any data yet")
        return self._parts

    def decode(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``‖x‖ · Πᵀ ũ`` for every vector, as ``float32`` ``(batch, heads, tokens, head_dim)``."""
        parts = [part.decode(codes, prefix) for prefix, part, _ in self._require_setup()]
        return self._permute(torch.cat(parts, dim=-1), inverse=True)

    def scores(self, query: torch.Tensor, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``⟨q, x̃⟩`` for every query and cached vector (unbiased for ``variant="prod"``).

        Args:
            query: ``(batch, heads, M, head_dim)``.
            codes: what :meth:`encode` returned (possibly concatenated along tokens).

        Returns:
            ``float32`` ``(batch, heads, M, tokens)``.
        """
        parts = self._require_setup()
        self._check_shape(query, "the query")
        qp = self._permute(query.float())
        total: torch.Tensor | None = None
        for prefix, part, channels in parts:
            s = part.scores(qp[..., channels], codes, prefix)
            total = s if total is None else total + s
        assert total is not None
        return total

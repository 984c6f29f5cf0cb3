"""QuaRot: rotate a transformer's residual stream and attention heads, as an exact rewrite of the model.

Following QuaRot (Ashkboos et al., 2024; spcl/QuaRot ``rotation_utils.py``), :func:`rotate_model` rewrites
a model in place so that its function is unchanged (in exact arithmetic) while outlier channels are spread
over all channels, which makes weights (and activations) far easier to quantize:

1. **Untie** a head that shares the embedding table (:func:`~polyquant.transforms.fusion.untie_embeddings`).
2. **Fuse norms**: ``W ← W·diag(α)`` into each norm's readers, ``α ← 1``
   (:func:`~polyquant.transforms.fusion.fuse_norms`; LayerNorms: see there).
3. **Residual rotation** ``Q`` (``d × d``, :func:`~polyquant.transforms.rotation` ``(d, seed, kind)``): a
   weightless RMSNorm commutes with ``Q``, so with the residual carried as ``xQ``: embeddings ``E ← EQ``;
   readers (q, k, v, gate, up, routers, lm_head) ``W ← WQ``; writers (o_proj, down_proj) ``W ← QᵀW``,
   ``b ← Qᵀb`` (:func:`rotate_residual`).
4. **V/O per head**: for each kv head ``h`` a rotation ``R_h`` of size ``head_dim``: v_proj's output rows of
   head ``h`` ``W ← R_hᵀW`` (and bias), and o_proj's input columns of every *query* head ``i`` reading kv
   head ``h = i // (num_heads/num_kv_heads)`` (grouped-query attention) ``W ← W R_h``. Exact without any
   online op: softmax weights mix tokens, not channels, so each head's attention output is ``R_hᵀ``-rotated
   too (:func:`rotate_vo`). No RoPE is involved (it acts on q and k only).
5. **Online Hadamard before down_proj**: ``W ← WQ`` offline and ``x ← xQ`` at run time by an
   :class:`~polyquant.transforms.online.OnlineHadamard` wrapper (the fast transform for ``K·2^m`` sizes,
   else a dense random orthogonal matrix).

All offline products are computed in float64 and cast back to each parameter's dtype. Not done here:
QuaRot's online Hadamard across heads before o_proj and after RoPE on q/k (for activation and KV-cache
quantization).

:class:`QuaRotTransform` packages this as a model preparer for :func:`polyquant.quantize`. It must run
*before* the modules to quantize are planned: it replaces each ``down_proj`` by a wrapper whose child
``linear`` is then quantized as ``…mlp.down_proj.linear``.

Example:
    >>> from polyquant.transforms.structure import RotationStructure
    >>> model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "norm": nn.RMSNorm(8), "head": nn.Linear(8, 3)})
    >>> s = RotationStructure(8, ("emb",), (), "norm", ("head",), head_dim=8, num_heads=1, num_kv_heads=1)
    >>> ids = torch.tensor([1, 2, 3])
    >>> y = model["head"](model["norm"](model["emb"](ids)))
    >>> report = rotate_model(model, s, seed=0)
    >>> report.residual_kind, bool(torch.allclose(model["head"](model["norm"](model["emb"](ids))), y, atol=1e-5))
    ('hadamard', True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from polyquant.errors import RecipeError
from polyquant.plugins.records import TransformInfo
from polyquant.transforms.fusion import FusedNorm, fuse_norms, get_module, norm_form, untie_embeddings, weight_of
from polyquant.transforms.online import OnlineHadamard, insert_online_hadamard
from polyquant.transforms.rotations import RandomHadamard, RandomOrthogonal, RotationKind, rotation
from polyquant.transforms.structure import RotationStructure, llama_structure

if TYPE_CHECKING:
    from polyquant.calibration import ModelInput
    from polyquant.formats.spec import FormatSpec

__all__ = ["OnlineSite", "QuaRotTransform", "RotationReport", "rotate_model", "rotate_residual", "rotate_vo"]

AnyRotation = RandomHadamard | RandomOrthogonal


def derived_seed(seed: int, *parts: object) -> int:
    """A seed in ``[0, 2**64)`` derived from ``seed`` and ``parts`` (stable across machines and runs)."""
    text = "/".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _copy(param: Tensor, value: Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(device=param.device, dtype=param.dtype))


def _check_weightless(model: nn.Module, structure: RotationStructure) -> None:
    d = structure.hidden_size
    for name, _ in structure.norm_groups():
        norm = get_module(model, name, "norm")
        form = norm_form(norm, d, name)
        weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
        unit = 0.0 if form == "rms+1" else 1.0
        scaled = isinstance(weight, Tensor) and bool(weight.ne(unit).any())
        shifted = isinstance(bias, Tensor) and bool(bias.ne(0).any())
        if form == "layer" or scaled or shifted:
            raise RecipeError(
                f"residual rotation: the norm {name!r} is not a weightless RMSNorm (form {form!r}), so it does not "
                "commute with the rotation; call fuse_norms(model, structure) first (rotate_model does)"
            )


def _check_residual_shapes(model: nn.Module, structure: RotationStructure) -> None:
    d = structure.hidden_size
    for name in structure.embeddings:
        e = weight_of(get_module(model, name, "embedding"), name, "embedding")
        if int(e.shape[1]) != d:
            raise RecipeError(f"residual rotation: the embedding {name!r} has width {int(e.shape[1])}, not {d}")
    tables = {id(get_module(model, n, "embedding").weight) for n in structure.embeddings}
    seen: dict[int, str] = {}
    for role, names in (("reader", structure.readers()), ("writer", structure.writers())):
        for name in names:
            module = get_module(model, name, role)
            if isinstance(module, OnlineHadamard):
                raise RecipeError(
                    f"residual rotation: {name!r} already has an online Hadamard transform (was the model rotated "
                    "before?); rotate the original model once"
                )
            w = weight_of(module, name, role)
            size = int(w.shape[1] if role == "reader" else w.shape[0])
            if size != d:
                side = "input features" if role == "reader" else "output features"
                raise RecipeError(f"residual rotation: the {role} {name!r} has {size} {side}, not hidden_size={d}")
            if id(w) in tables:
                raise RecipeError(
                    f"residual rotation: {name!r} shares its weight with an embedding; call "
                    "untie_embeddings(model, structure) first (rotate_model does)"
                )
            if id(w) in seen:
                raise RecipeError(
                    f"residual rotation: {name!r} and {seen[id(w)]!r} share one weight tensor; shared (tied) "
                    "linears cannot be rotated, untie them first"
                )
            seen[id(w)] = name


def rotate_residual(model: nn.Module, structure: RotationStructure, q: AnyRotation) -> None:
    """Rotate the residual stream by ``q`` in place: ``E ← EQ``, readers ``W ← WQ``, writers ``W ← QᵀW, b ← Qᵀb``.

    Needs weightless norms (:func:`~polyquant.transforms.fusion.fuse_norms`) and untied embeddings; every
    check runs before the first weight changes.

    Raises:
        RecipeError: a norm still has a weight, a weight is tied or has the wrong shape, or ``q`` does not
            have size ``hidden_size``.

    Example:
        >>> from polyquant.transforms.structure import RotationStructure
        >>> model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "head": nn.Linear(8, 3)})
        >>> s = RotationStructure(8, ("emb",), (), None, ("head",), head_dim=8, num_heads=1, num_kv_heads=1)
        >>> ids = torch.tensor([4, 5])
        >>> y = model["head"](model["emb"](ids))
        >>> rotate_residual(model, s, rotation(8, seed=1))
        >>> bool(torch.allclose(model["head"](model["emb"](ids)), y, atol=1e-5))
        True
    """
    if q.n != structure.hidden_size:
        raise RecipeError(f"residual rotation: the rotation has size {q.n}, not hidden_size={structure.hidden_size}")
    _check_residual_shapes(model, structure)
    _check_weightless(model, structure)
    for name in structure.embeddings:
        e = weight_of(get_module(model, name, "embedding"), name, "embedding")
        _copy(e, q.apply(e.detach().double(), dim=-1))
    for name in structure.readers():
        w = weight_of(get_module(model, name, "reader"), name, "reader")
        _copy(w, q.apply(w.detach().double(), dim=-1))
    for name in structure.writers():
        module = get_module(model, name, "writer")
        w = weight_of(module, name, "writer")
        _copy(w, q.apply(w.detach().double(), dim=0))
        b = getattr(module, "bias", None)
        if isinstance(b, Tensor):
            _copy(b, q.apply(b.detach().double(), dim=-1))


def _vo_rotations(structure: RotationStructure, layer: int, seed: int, kind: RotationKind) -> list[AnyRotation]:
    return [
        rotation(structure.head_dim, derived_seed(seed, "vo", layer, h), kind) for h in range(structure.num_kv_heads)
    ]


def rotate_vo(
    model: nn.Module, structure: RotationStructure, *, seed: int = 0, kind: RotationKind = "auto"
) -> tuple[tuple[str, str], ...]:
    """Rotate each block's value heads and the matching o_proj input columns, in place; returns the pairs.

    kv head ``h`` of block ``l`` gets the rotation ``R = rotation(head_dim, derived_seed(seed, "vo", l, h),
    kind)``: v_proj rows ``[h·dh, (h+1)·dh)`` ``W ← RᵀW`` (bias ``b ← Rᵀb``), and o_proj columns of every query
    head ``i`` with ``i // (num_heads // num_kv_heads) == h`` ``W ← WR``.

    Raises:
        RecipeError: v_proj or o_proj does not have ``num_kv_heads·head_dim`` outputs / ``num_heads·head_dim``
            inputs, or ``kind``/``seed`` is invalid.

    Example:
        >>> from polyquant.transforms.structure import BlockStructure, RotationStructure
        >>> b = BlockStructure(None, ("v",), "v", "o", None, (), ())
        >>> model = nn.ModuleDict({"v": nn.Linear(8, 4), "o": nn.Linear(8, 8)})  # 2 query heads, 1 kv head
        >>> s = RotationStructure(8, (), (b,), None, (), head_dim=4, num_heads=2, num_kv_heads=1)
        >>> x = torch.randn(3, 8)
        >>> y = model["o"](model["v"](x).repeat(1, 2))  # both query heads read the one value head
        >>> rotate_vo(model, s)
        (('v', 'o'),)
        >>> bool(torch.allclose(model["o"](model["v"](x).repeat(1, 2)), y, atol=1e-5))
        True
    """
    return _rotate_heads(model, structure, seed, kind)


def _rotate_heads(
    model: nn.Module, structure: RotationStructure, seed: int, kind: RotationKind, *, check_only: bool = False
) -> tuple[tuple[str, str], ...]:
    dh, heads, kv = structure.head_dim, structure.num_heads, structure.num_kv_heads
    rep = heads // kv
    work = []
    for layer, block in enumerate(structure.blocks):
        if block.v_proj is None:
            continue
        v_mod = get_module(model, block.v_proj, "v_proj")
        o_mod = get_module(model, block.o_proj, "o_proj")
        wv, wo = weight_of(v_mod, block.v_proj, "v_proj"), weight_of(o_mod, block.o_proj, "o_proj")
        if int(wv.shape[0]) != kv * dh or int(wo.shape[1]) != heads * dh:
            raise RecipeError(
                f"V/O rotation: {block.v_proj!r} has {int(wv.shape[0])} outputs and {block.o_proj!r} "
                f"{int(wo.shape[1])} inputs, but num_kv_heads·head_dim = {kv * dh} and num_heads·head_dim = "
                f"{heads * dh}; fix head_dim / num_heads / num_kv_heads in the structure"
            )
        work.append((block, v_mod, wv, wo, _vo_rotations(structure, layer, seed, kind)))
    if check_only:
        return ()
    pairs = []
    for block, v_mod, wv, wo, rots in work:
        v64 = wv.detach().double().reshape(kv, dh, -1)
        o64 = wo.detach().double().reshape(wo.shape[0], heads, dh)
        v_new = torch.stack([rots[h].apply(v64[h], dim=0) for h in range(kv)])
        o_new = torch.stack([rots[i // rep].apply(o64[:, i, :], dim=-1) for i in range(heads)], dim=1)
        _copy(wv, v_new.reshape(wv.shape))
        _copy(wo, o_new.reshape(wo.shape))
        bv = getattr(v_mod, "bias", None)
        if isinstance(bv, Tensor):
            b64 = bv.detach().double().reshape(kv, dh)
            _copy(bv, torch.stack([rots[h].apply(b64[h], dim=-1) for h in range(kv)]).reshape(bv.shape))
        assert block.v_proj is not None
        pairs.append((block.v_proj, block.o_proj))
    return tuple(pairs)


@dataclass(frozen=True)
class OnlineSite:
    """One online transform inserted before a linear.

    Attributes:
        name: the wrapper's qualified name (its child ``linear`` is ``name + ".linear"``).
        size: the transformed size (the linear's input features).
        kind: ``"hadamard"`` (fast transform) or ``"orthogonal"`` (dense fallback).
    """

    name: str
    size: int
    kind: str


@dataclass(frozen=True)
class RotationReport:
    """What :func:`rotate_model` did, for the quantization report.

    Attributes:
        hidden_size: the residual width ``d``.
        seed: the seed all rotations derive from.
        residual_kind: ``"hadamard"`` or ``"orthogonal"`` (the residual rotation ``Q``).
        untied: readers given their own copy of a tied embedding table.
        fused_norms: the norms fused into their readers (name, form, readers).
        embeddings: embedding tables rotated ``E ← EQ``.
        readers: linears rotated ``W ← WQ``.
        writers: linears rotated ``W ← QᵀW``.
        head_dim: the attention head size.
        vo_kind: the kind of the per-head rotations, or ``None`` when V/O was not rotated.
        vo_pairs: ``(v_proj, o_proj)`` pairs rotated per head.
        online: the online transforms inserted.

    Example:
        >>> r = RotationReport(64, 0, "hadamard", (), (), ("emb",), ("head",), (), 16, None, (), ())
        >>> r.notes()[0]
        'quarot: residual rotation hadamard 64×64 (seed 0): 1 embedding(s), 1 reader(s), 0 writer(s)'
    """

    hidden_size: int
    seed: int
    residual_kind: str
    untied: tuple[str, ...]
    fused_norms: tuple[FusedNorm, ...]
    embeddings: tuple[str, ...]
    readers: tuple[str, ...]
    writers: tuple[str, ...]
    head_dim: int
    vo_kind: str | None
    vo_pairs: tuple[tuple[str, str], ...]
    online: tuple[OnlineSite, ...]

    @property
    def centred(self) -> bool:
        """Whether the residual stream was mean-centred (LayerNorm models)."""
        return any(f.form == "layer" for f in self.fused_norms)

    def notes(self) -> list[str]:
        """One line per step, for :attr:`polyquant.api.QuantizationReport` notes."""
        d = self.hidden_size
        notes = [
            f"quarot: residual rotation {self.residual_kind} {d}×{d} (seed {self.seed}): "
            f"{len(self.embeddings)} embedding(s), {len(self.readers)} reader(s), {len(self.writers)} writer(s)"
        ]
        if self.fused_norms:
            forms = sorted({f.form for f in self.fused_norms})
            extra = "; residual stream centred, LayerNorms replaced by RMSNorms" if self.centred else ""
            notes.append(
                f"quarot: fused {len(self.fused_norms)} norm(s) ({', '.join(forms)}) into their readers{extra}"
            )
        if self.untied:
            notes.append(f"quarot: untied {', '.join(self.untied)} from the embedding")
        if self.vo_pairs:
            layers = len(self.vo_pairs)
            notes.append(
                f"quarot: V/O per-head rotation {self.vo_kind} (head_dim {self.head_dim}) in {layers} layer(s)"
            )
        if self.online:
            sizes = sorted({(s.size, s.kind) for s in self.online})
            shown = ", ".join(f"{n} ({k})" for n, k in sizes)
            notes.append(f"quarot: online transform of size {shown} before {len(self.online)} linear(s)")
        return notes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field (plus ``centred``)."""
        out = asdict(self)
        out["centred"] = self.centred
        return out


def rotate_model(
    model: nn.Module,
    structure: RotationStructure,
    *,
    seed: int = 0,
    kind: RotationKind = "auto",
    online_down_proj: bool = True,
    rotate_vo: bool = True,
) -> RotationReport:
    """Apply QuaRot's function-preserving rotations to ``model`` in place (see the module docstring).

    Args:
        model: the model, unquantized (modified in place).
        structure: where its residual stream is read and written (e.g. :func:`llama_structure` ``(model)``).
        seed: seeds every rotation (the residual ``Q`` uses it directly; per-head and dense online rotations
            use seeds derived from it).
        kind: the residual and per-head rotations: ``"auto"`` (random Hadamard when the size allows, else
            random orthogonal), ``"hadamard"`` or ``"orthogonal"``. The online transform is always the fast
            Hadamard when its size allows.
        online_down_proj: wrap every MLP writer in :class:`~polyquant.transforms.online.OnlineHadamard`.
        rotate_vo: rotate value heads and o_proj inputs per head.

    Returns:
        A :class:`RotationReport`.

    Raises:
        RecipeError: the structure does not fit the model (a missing module, a wrong shape, tied or shared
            weights, an unsupported norm, an already rotated model), or ``kind``/``seed`` is invalid. All
            checks run before the first weight changes.
        FormatError: ``kind="hadamard"`` for a size without a Hadamard matrix.
    """
    # Every check runs before the first weight changes.
    q = rotation(structure.hidden_size, seed, kind)  # validates kind and seed
    writers = set(structure.writers())
    for name in structure.embeddings:
        weight_of(get_module(model, name, "embedding"), name, "embedding")
    for name in (*structure.readers(), *structure.writers()):
        role = "writer" if name in writers else "reader"
        module = get_module(model, name, role)
        if isinstance(module, OnlineHadamard):
            raise RecipeError(
                f"rotate_model: {name!r} already has an online Hadamard transform (was the model rotated before?); "
                "rotate the original model once"
            )
        weight_of(module, name, role)
    for name, _ in structure.norm_groups():
        norm_form(get_module(model, name, "norm"), structure.hidden_size, name)
    if rotate_vo:
        _rotate_heads(model, structure, seed, kind, check_only=True)
    untied = untie_embeddings(model, structure)
    _check_residual_shapes(model, structure)
    fused = fuse_norms(model, structure)
    rotate_residual(model, structure, q)
    pairs = _rotate_heads(model, structure, seed, kind) if rotate_vo else ()
    online: list[OnlineSite] = []
    if online_down_proj:
        for layer, block in enumerate(structure.blocks):
            for i, name in enumerate(block.mlp_writers):
                wrapper = insert_online_hadamard(model, name, seed=derived_seed(seed, "online", layer, i))
                online.append(OnlineSite(name, wrapper.n, wrapper.kind))
    vo_kind = None
    if pairs:
        vo_kind = _vo_rotations(structure, 0, seed, kind)[0].kind
    return RotationReport(
        hidden_size=structure.hidden_size,
        seed=seed,
        residual_kind=q.kind,
        untied=untied,
        fused_norms=fused,
        embeddings=structure.embeddings,
        readers=structure.readers(),
        writers=structure.writers(),
        head_dim=structure.head_dim,
        vo_kind=vo_kind,
        vo_pairs=pairs,
        online=tuple(online),
    )


@dataclass(frozen=True)
class QuaRotTransform:
    """QuaRot as a model preparer: ``prepare_model(model, calibration, plan)`` rotates the model in place.

    It has the shape of :class:`~polyquant.quantizers.protocol.ModelPreparer` so :func:`polyquant.quantize`
    can run it before quantization. It must run before the modules to quantize are planned (it replaces
    every MLP writer by an :class:`~polyquant.transforms.online.OnlineHadamard` wrapper, whose child
    ``linear`` is the module to quantize). Calibration data is not needed.

    Attributes:
        structure: the model → :class:`RotationStructure` function (an adapter's; default :func:`llama_structure`).
        seed: see :func:`rotate_model`.
        kind: see :func:`rotate_model`.
        online_down_proj: see :func:`rotate_model`.
        rotate_vo: see :func:`rotate_model`.

    Example:
        >>> from polyquant.quantizers.protocol import ModelPreparer
        >>> isinstance(QuaRotTransform(seed=1), ModelPreparer)
        True
    """

    structure: Callable[[nn.Module], RotationStructure] = llama_structure
    seed: int = 0
    kind: RotationKind = "auto"
    online_down_proj: bool = True
    rotate_vo: bool = True
    name: ClassVar[str] = "quarot"
    #: Rewrites the module tree (the online-Hadamard wrappers), so polyquant.quantize runs it before planning.
    before_planning: ClassVar[bool] = True

    def apply(self, model: nn.Module) -> RotationReport:
        """Rotate ``model`` in place and return the :class:`RotationReport`."""
        return rotate_model(
            model,
            self.structure(model),
            seed=self.seed,
            kind=self.kind,
            online_down_proj=self.online_down_proj,
            rotate_vo=self.rotate_vo,
        )

    def prepare_model(
        self, model: nn.Module, calibration: Sequence[ModelInput], plan: Mapping[str, FormatSpec]
    ) -> list[str]:
        """Rotate ``model`` in place (``calibration`` and ``plan`` are not used); returns the report notes."""
        return self.apply(model).notes()


def builtin_transforms() -> list[TransformInfo]:
    """The rotation transforms of the core, registered by :mod:`polyquant.builtins`."""
    return [
        TransformInfo(
            "hadamard",
            QuaRotTransform,
            "QuaRot: fuse norms, rotate the residual stream and V/O heads by random Hadamards, online Hadamard "
            "before down_proj (args: seed, kind, online_down_proj, rotate_vo)",
        )
    ]

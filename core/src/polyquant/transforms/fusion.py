"""Preparing the residual stream for rotation: untie embeddings, fuse the norms into their readers.

A rotation ``Q`` of the residual commutes with a *weightless* RMSNorm (``rms(xQ) = rms(x)``), not with its
per-channel weight ``α``, so QuaRot first folds every norm's weight into the linears that read it:
``W ← W·diag(α)`` and ``α ← 1`` (a norm bias ``β`` goes into the readers' biases, ``b ← b + Wβ``).

Supported norms (checked on a probe input before anything is changed; a mismatch raises
:class:`~polyquant.errors.RecipeError` and leaves the model untouched):

- **RMSNorm** ``x/√(mean(x²)+ε)·α (+β)``: ``nn.RMSNorm``, transformers' ``LlamaRMSNorm`` and the like; also
  the ``(1 + α)`` variant (Gemma), whose weight is then set to 0.
- **LayerNorm** ``(x−μ)/√(var(x)+ε)·α + β`` (``nn.LayerNorm``). The mean subtraction does not commute with
  ``Q``, but it is the projection ``M = I − 11ᵀ/d``, and a LayerNorm cannot tell ``x`` from ``xM``. So when
  **every** declared norm is a LayerNorm, the whole residual stream is centred once (each embedding row and
  each writer's output columns and bias get their mean removed, as SliceGPT does); on a mean-zero stream a
  LayerNorm equals an RMSNorm, so each LayerNorm is *replaced* by an ``nn.RMSNorm`` with the same ``ε`` and
  unit weight. This is exact only when the structure lists every module that writes the residual (all
  embeddings, including learned positional ones, and every writer). Models mixing LayerNorms and RMSNorms
  on the residual are refused.

Tied weights: a reader whose weight *is* an embedding table (a tied ``lm_head``) would scale and rotate the
embedding too; :func:`untie_embeddings` gives it its own copy first.

Example:
    >>> norm, lin = nn.RMSNorm(8), nn.Linear(8, 4)
    >>> with torch.no_grad():
    ...     _ = norm.weight.uniform_(0.5, 2.0)
    >>> model = nn.Sequential(norm, lin)
    >>> x = torch.randn(3, 8)
    >>> y = model(x)
    >>> fuse_norm(norm, [lin], name="0").form, bool(torch.allclose(model(x), y, atol=1e-5))
    ('rms', True)
    >>> norm.weight.detach().unique().tolist()
    [1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polyquant.errors import RecipeError
from polyquant.transforms.structure import RotationStructure

__all__ = ["FusedNorm", "fuse_norm", "fuse_norms", "untie_embeddings"]


def get_module(model: nn.Module, name: str, role: str) -> nn.Module:
    """The submodule ``name`` of ``model``, or a :class:`RecipeError` naming its ``role`` in the structure."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise RecipeError(
            f"rotation structure: the {role} {name!r} is not a submodule of {type(model).__name__}; fix the "
            "structure's module names (they are qualified names as model.named_modules() lists them)"
        ) from None


def weight_of(module: nn.Module, name: str, role: str) -> Tensor:
    """``module.weight`` when it is a floating 2-D tensor, else a :class:`RecipeError`."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else None
        raise RecipeError(
            f"rotation structure: the {role} {name!r} ({type(module).__name__}) has no floating 2-D weight "
            f"(found {shape}); readers and writers must be nn.Linear-like modules before quantization (unpack "
            "fused expert tensors into per-expert linears)"
        )
    return weight


def untie_embeddings(model: nn.Module, structure: RotationStructure) -> tuple[str, ...]:
    """Give every reader whose weight is an embedding's weight (a tied ``lm_head``) its own copy, in place.

    Also sets ``model.config.tie_word_embeddings = False`` when the model has such a config, so that
    transformers does not tie them again. Returns the names of the readers untied.

    Example:
        >>> emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        >>> head.weight = emb.weight
        >>> model = nn.ModuleDict({"emb": emb, "head": head})
        >>> from polyquant.transforms.structure import RotationStructure
        >>> s = RotationStructure(4, ("emb",), (), None, ("head",), head_dim=4, num_heads=1, num_kv_heads=1)
        >>> untie_embeddings(model, s), head.weight is emb.weight
        (('head',), False)
    """
    tables = {id(get_module(model, name, "embedding").weight) for name in structure.embeddings}
    untied = []
    for name in structure.readers():
        module = get_module(model, name, "reader")
        weight = weight_of(module, name, "reader")
        if id(weight) in tables:
            module.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
            untied.append(name)
    if untied:
        config = getattr(model, "config", None)
        for cfg in (config, getattr(config, "text_config", None)):
            if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
                cfg.tie_word_embeddings = False
    return tuple(untied)


@dataclass(frozen=True)
class FusedNorm:
    """What :func:`fuse_norm` found and did.

    Attributes:
        name: the norm's qualified name.
        form: ``"rms"``, ``"rms+1"`` (weight applied as ``1 + α``) or ``"layer"``.
        readers: the linears that absorbed the weight (and bias).
        replaced: whether the module was replaced by an ``nn.RMSNorm`` (LayerNorms, after centring).
    """

    name: str
    form: str
    readers: tuple[str, ...]
    replaced: bool = False


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-6, torch.float32: 1e-4}.get(dtype, 3e-2)


def _eps(norm: nn.Module) -> float:
    for attr in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _affine(norm: nn.Module, d: int, name: str) -> tuple[Tensor | None, Tensor | None]:
    """The norm's ``(weight, bias)`` (either may be None) after checking they are vectors of size ``d``."""
    found: list[Tensor | None] = []
    for attr in ("weight", "bias"):
        value = getattr(norm, attr, None)
        if value is not None and (not isinstance(value, Tensor) or tuple(value.shape) != (d,)):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise RecipeError(
                f"norm fusion: {name!r} ({type(norm).__name__}) has a {attr} of shape {shape}, not ({d},); only "
                "per-channel norms over the residual width can be fused"
            )
        found.append(value)
    return found[0], found[1]


def norm_form(norm: nn.Module, d: int, name: str) -> str:
    """Which supported form ``norm`` computes (``"rms"``, ``"rms+1"``, ``"layer"``), checked on a probe input.

    Raises:
        RecipeError: the module computes none of them (the message names it and what is supported).
    """
    weight, bias = _affine(norm, d, name)
    ref = weight if weight is not None else bias
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(8, d, generator=gen, dtype=torch.float64) * 1.5 + 1.0  # a mean far from 0
    eps = _eps(norm)
    w = weight.detach().double().cpu() if weight is not None else torch.ones(d, dtype=torch.float64)
    b = bias.detach().double().cpu() if bias is not None else torch.zeros(d, dtype=torch.float64)
    with torch.no_grad():
        out = norm(x64.to(dtype=dtype, device=device))
    if not isinstance(out, Tensor) or tuple(out.shape) != (8, d):
        raise RecipeError(
            f"norm fusion: {name!r} ({type(norm).__name__}) does not return a tensor of its input's shape"
        )
    y = out.detach().double().cpu()
    rms = x64 / (x64.square().mean(-1, keepdim=True) + eps).sqrt()
    centred = x64 - x64.mean(-1, keepdim=True)
    layer = centred / (centred.square().mean(-1, keepdim=True) + eps).sqrt()
    forms = {"rms": rms * w + b, "rms+1": rms * (1 + w) + b, "layer": layer * w + b}
    if isinstance(norm, nn.LayerNorm):
        forms = {"layer": forms["layer"]}
    for form, expected in forms.items():
        if float((y - expected).abs().max()) <= _tolerance(dtype) * max(1.0, float(expected.abs().max())):
            return form
    raise RecipeError(
        f"norm fusion: {name!r} ({type(norm).__name__}) does not compute x/rms(x)·w (+b), x/rms(x)·(1+w) or a "
        "LayerNorm on a probe input, so its weight cannot be folded into the readers exactly; declare it as "
        "no norm (None) in the rotation structure only if it has no weight, or fold it manually"
    )


def fuse_norm(
    norm: nn.Module,
    readers: Sequence[nn.Module],
    *,
    name: str = "norm",
    reader_names: Sequence[str] = (),
    form: str | None = None,
) -> FusedNorm:
    """Fold ``norm``'s weight and bias into ``readers`` (``W ← W·diag(α)``, ``b ← b + Wβ``) in float64, in place.

    The norm's weight becomes 1 (0 for the ``1 + α`` form) and its bias 0. A LayerNorm keeps its mean
    subtraction here (exact on its own); :func:`fuse_norms` centres the stream and replaces LayerNorms.

    Args:
        norm: the norm.
        readers: every linear reading its output (2-D weights ``(out, d)``).
        name: the norm's name, for messages and the record.
        reader_names: the readers' names, for the record.
        form: the form :func:`norm_form` found (found here when ``None``).

    Raises:
        RecipeError: an unsupported norm, or a reader whose weight does not have ``d`` input columns.
    """
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    ref = weight if isinstance(weight, Tensor) else bias
    if not isinstance(ref, Tensor):
        return FusedNorm(name, form or "rms", tuple(reader_names))  # nothing to fold
    d = int(ref.shape[0])
    form = form or norm_form(norm, d, name)
    for i, reader in enumerate(readers):
        w = weight_of(reader, f"{name} reader #{i}", "reader")
        if int(w.shape[1]) != d:
            raise RecipeError(f"norm fusion: reader #{i} of {name!r} has {int(w.shape[1])} input features, not {d}")
    alpha = weight.detach().double() if isinstance(weight, Tensor) else torch.ones_like(ref, dtype=torch.float64)
    if form == "rms+1":
        alpha = alpha + 1
    beta = bias.detach().double() if isinstance(bias, Tensor) else None
    with torch.no_grad():
        for i, reader in enumerate(readers):
            w = weight_of(reader, f"{name} reader #{i}", "reader")
            w64 = w.detach().double()
            if beta is not None and bool(beta.ne(0).any()):
                shift = w64 @ beta.to(w64.device)
                rb = getattr(reader, "bias", None)
                if isinstance(rb, Tensor):
                    rb.copy_((rb.detach().double() + shift.to(rb.device)).to(rb.dtype))
                elif isinstance(reader, nn.Linear):
                    reader.bias = nn.Parameter(shift.to(w.dtype), requires_grad=w.requires_grad)
                else:
                    raise RecipeError(
                        f"norm fusion: {name!r} has a bias but its reader {type(reader).__name__} has none to absorb it"
                    )
            w.copy_((w64 * alpha.to(w64.device)).to(w.dtype))
        if isinstance(weight, Tensor):
            weight.fill_(0.0 if form == "rms+1" else 1.0)
        if isinstance(bias, Tensor):
            bias.zero_()
    return FusedNorm(name, form, tuple(reader_names))


def _centre_stream(model: nn.Module, structure: RotationStructure) -> None:
    """Remove the mean over the residual channels from every embedding row and every writer's output."""
    with torch.no_grad():
        for name in structure.embeddings:
            e = weight_of(get_module(model, name, "embedding"), name, "embedding")
            e64 = e.detach().double()
            e.copy_((e64 - e64.mean(dim=1, keepdim=True)).to(e.dtype))
        for name in structure.writers():
            module = get_module(model, name, "writer")
            w = weight_of(module, name, "writer")
            w64 = w.detach().double()
            w.copy_((w64 - w64.mean(dim=0, keepdim=True)).to(w.dtype))
            b = getattr(module, "bias", None)
            if isinstance(b, Tensor):
                b64 = b.detach().double()
                b.copy_((b64 - b64.mean()).to(b.dtype))


def fuse_norms(model: nn.Module, structure: RotationStructure) -> tuple[FusedNorm, ...]:
    """Fuse every norm of ``structure`` into its readers, in place (see the module docstring).

    Every norm is checked first; nothing changes when one is unsupported.

    Raises:
        RecipeError: a module is missing or has the wrong shape, a reader shares its weight with an
            embedding (call :func:`untie_embeddings` first), a norm is unsupported, or LayerNorms and
            RMSNorms are mixed.

    Example:
        >>> from polyquant.transforms.structure import RotationStructure
        >>> model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "norm": nn.LayerNorm(8), "head": nn.Linear(8, 3)})
        >>> s = RotationStructure(8, ("emb",), (), "norm", ("head",), head_dim=8, num_heads=1, num_kv_heads=1)
        >>> ids = torch.tensor([1, 2, 3])
        >>> y = model["head"](model["norm"](model["emb"](ids)))
        >>> fuse_norms(model, s)[0].form, type(model["norm"]).__name__
        ('layer', 'RMSNorm')
        >>> bool(torch.allclose(model["head"](model["norm"](model["emb"](ids))), y, atol=1e-5))
        True
    """
    d = structure.hidden_size
    tables = {id(get_module(model, name, "embedding").weight) for name in structure.embeddings}
    plans: list[tuple[str, nn.Module, list[nn.Module], str]] = []
    for norm_name, reader_names in structure.norm_groups():
        norm = get_module(model, norm_name, "norm")
        readers = [get_module(model, r, "reader") for r in reader_names]
        for r, module in zip(reader_names, readers, strict=True):
            w = weight_of(module, r, "reader")
            if id(w) in tables:
                raise RecipeError(
                    f"norm fusion: {r!r} shares its weight with an embedding (tied embeddings); call "
                    "untie_embeddings(model, structure) first (rotate_model does)"
                )
            if int(w.shape[1]) != d:
                raise RecipeError(f"norm fusion: {r!r} reads {int(w.shape[1])} features, not hidden_size={d}")
        plans.append((norm_name, norm, readers, norm_form(norm, d, norm_name)))
    layer = [p[0] for p in plans if p[3] == "layer"]
    if layer and len(layer) != len(plans):
        other = next(p[0] for p in plans if p[3] != "layer")
        raise RecipeError(
            f"norm fusion: the residual stream is read by LayerNorms ({layer[0]!r}, ...) and RMSNorms ({other!r}); "
            "centring it for the LayerNorms would change the RMSNorms, so such models cannot be rotated"
        )
    if layer:
        _centre_stream(model, structure)
    done = []
    for (norm_name, norm, readers, form), (_, reader_names) in zip(plans, structure.norm_groups(), strict=True):
        fused = fuse_norm(norm, readers, name=norm_name, reader_names=reader_names, form=form)
        replaced = False
        if form == "layer":
            parent_name, _, attr = norm_name.rpartition(".")
            ref: Tensor | None = next(iter(norm.parameters()), None)
            if ref is None:  # a LayerNorm without affine parameters: take the readers' dtype
                ref = weight_of(readers[0], reader_names[0], "reader") if readers else None
            rms = nn.RMSNorm(
                d,
                eps=_eps(norm),
                elementwise_affine=True,
                device=ref.device if ref is not None else None,
                dtype=ref.dtype if ref is not None else None,
            )
            setattr(model.get_submodule(parent_name), attr, rms)
            replaced = True
        done.append(FusedNorm(fused.name, fused.form, fused.readers, replaced))
    return tuple(done)

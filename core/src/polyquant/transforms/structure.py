"""Where a transformer's residual stream is read and written: the :class:`RotationStructure` QuaRot needs.

Rotating the residual stream (:func:`polyquant.transforms.rotate_model`) is exact only when *every* module
that reads or writes the residual is transformed, and a core that sees only module names cannot find them
reliably. So a model adapter declares them:

- ``embeddings``: modules whose outputs are added into the residual (token embeddings; learned positional
  embeddings too). Their tables are rotated ``E ← EQ``.
- per decoder block (:class:`BlockStructure`): the attention input norm and every linear reading its output
  (q, k, v), the attention output writer (``o_proj``), the MLP input norm and its readers (gate and up; fc1
  for non-gated MLPs; for mixture-of-experts the router and every expert's gate/up), and the MLP writers
  (down_proj; every expert's down_proj). Readers get ``W ← WQ``, writers ``W ← QᵀW`` and ``b ← Qᵀb``.
- the final norm and the head (``lm_head``) reading it.
- ``head_dim``, ``num_heads``, ``num_kv_heads`` for the per-head V/O rotation.

Readers and writers must be modules with a 2-D ``weight`` of shape ``(out, in)`` (``nn.Linear``); fused 3-D
expert tensors must be unpacked into per-expert linears first.

:func:`llama_structure` declares it for transformers' Llama-family causal LMs (``LlamaForCausalLM``,
``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``, ... which share module names).

Example:
    >>> block = BlockStructure(
    ...     attn_norm="layers.0.ln1", attn_readers=("layers.0.q", "layers.0.k", "layers.0.v"),
    ...     v_proj="layers.0.v", o_proj="layers.0.o",
    ...     mlp_norm="layers.0.ln2", mlp_readers=("layers.0.up",), mlp_writers=("layers.0.down",))
    >>> s = RotationStructure(hidden_size=64, embeddings=("embed",), blocks=(block,), final_norm="norm",
    ...                       head=("lm_head",), head_dim=16, num_heads=4, num_kv_heads=2)
    >>> s.readers()[:3], s.writers()
    (('layers.0.q', 'layers.0.k', 'layers.0.v'), ('layers.0.o', 'layers.0.down'))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from polyquant.errors import RecipeError

__all__ = ["BlockStructure", "RotationStructure", "llama_structure"]


def _names(value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise RecipeError(f"{field}: {value!r} is invalid; give a tuple of qualified module names such as ('lm_head',)")
    if not all(isinstance(v, str) and v for v in value):
        raise RecipeError(f"{field}: {value!r} holds something other than non-empty module names")
    return tuple(value)


def _optional_name(value: object, field: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise RecipeError(f"{field}: {value!r} is invalid; give a qualified module name or None")
    return value


def _positive(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RecipeError(f"{field}: {value!r} is invalid; give a positive int")
    return value


@dataclass(frozen=True)
class BlockStructure:
    """One decoder block: its two norms, their readers, and the two writers into the residual stream.

    Attributes:
        attn_norm: the attention input norm (``input_layernorm``), or ``None`` when the readers read the
            residual directly.
        attn_readers: every linear reading ``attn_norm``'s output (q, k, v; a parallel block's MLP inputs).
        v_proj: the value projection among ``attn_readers`` (per-head V/O rotation), or ``None``.
        o_proj: the attention output projection (writes the residual).
        mlp_norm: the MLP input norm (``post_attention_layernorm``), or ``None``.
        mlp_readers: every linear reading ``mlp_norm``'s output (gate and up, fc1, a MoE router, every
            expert's gate and up).
        mlp_writers: the MLP output projections (down_proj, fc2, every expert's down_proj).

    Example:
        >>> BlockStructure(None, ("q",), "q", "o", None, ("up",), ("down",)).o_proj
        'o'
    """

    attn_norm: str | None
    attn_readers: tuple[str, ...]
    v_proj: str | None
    o_proj: str
    mlp_norm: str | None
    mlp_readers: tuple[str, ...]
    mlp_writers: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "attn_norm", _optional_name(self.attn_norm, "attn_norm"))
        object.__setattr__(self, "attn_readers", _names(self.attn_readers, "attn_readers"))
        object.__setattr__(self, "v_proj", _optional_name(self.v_proj, "v_proj"))
        if not isinstance(self.o_proj, str) or not self.o_proj:
            raise RecipeError(f"o_proj: {self.o_proj!r} is invalid; give the attention output projection's name")
        object.__setattr__(self, "mlp_norm", _optional_name(self.mlp_norm, "mlp_norm"))
        object.__setattr__(self, "mlp_readers", _names(self.mlp_readers, "mlp_readers"))
        object.__setattr__(self, "mlp_writers", _names(self.mlp_writers, "mlp_writers"))
        if self.v_proj is not None and self.v_proj not in self.attn_readers:
            raise RecipeError(
                f"v_proj: {self.v_proj!r} is not among attn_readers {self.attn_readers}; list the value "
                "projection among the attention norm's readers"
            )


@dataclass(frozen=True)
class RotationStructure:
    """The residual stream's readers and writers of a transformer, as a model adapter declares them.

    Attributes:
        hidden_size: the residual width ``d``.
        embeddings: modules whose outputs enter the residual (rotated ``E ← EQ``).
        blocks: the decoder blocks, in order.
        final_norm: the norm before the head, or ``None``.
        head: the linears reading ``final_norm``'s output (``lm_head``; extra heads).
        head_dim: the attention head size (V/O rotation).
        num_heads: query heads per block.
        num_kv_heads: key/value heads per block (``< num_heads`` for grouped-query attention). Query head
            ``i`` reads kv head ``i // (num_heads // num_kv_heads)``, as transformers' ``repeat_kv``.

    Raises:
        RecipeError: a field has the wrong type, or the head counts do not divide.

    Example:
        >>> s = RotationStructure(8, ("emb",), (), "norm", ("head",), head_dim=4, num_heads=2, num_kv_heads=1)
        >>> s.norm_groups()
        [('norm', ('head',))]
    """

    hidden_size: int
    embeddings: tuple[str, ...]
    blocks: tuple[BlockStructure, ...]
    final_norm: str | None
    head: tuple[str, ...]
    head_dim: int
    num_heads: int
    num_kv_heads: int

    def __post_init__(self) -> None:
        _positive(self.hidden_size, "hidden_size")
        object.__setattr__(self, "embeddings", _names(self.embeddings, "embeddings"))
        if not isinstance(self.blocks, (tuple, list)) or not all(isinstance(b, BlockStructure) for b in self.blocks):
            raise RecipeError(f"blocks: {self.blocks!r} is invalid; give a tuple of BlockStructure")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "final_norm", _optional_name(self.final_norm, "final_norm"))
        object.__setattr__(self, "head", _names(self.head, "head"))
        for field in ("head_dim", "num_heads", "num_kv_heads"):
            _positive(getattr(self, field), field)
        if self.num_heads % self.num_kv_heads:
            raise RecipeError(
                f"num_kv_heads: {self.num_kv_heads} does not divide num_heads={self.num_heads}; "
                "grouped-query attention needs num_heads to be a multiple of num_kv_heads"
            )
        names = [*self.readers(), *self.writers(), *self.embeddings]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise RecipeError(
                f"{', '.join(repeated)} listed more than once among the readers, writers and embeddings; a "
                "module reads or writes the residual stream once (shared modules cannot be rotated)"
            )

    def readers(self) -> tuple[str, ...]:
        """Every linear reading the residual stream (through a norm): blocks' readers, then the head."""
        out = [name for b in self.blocks for name in (*b.attn_readers, *b.mlp_readers)]
        return (*out, *self.head)

    def writers(self) -> tuple[str, ...]:
        """Every linear writing the residual stream: each block's ``o_proj`` and MLP writers."""
        return tuple(name for b in self.blocks for name in (b.o_proj, *b.mlp_writers))

    def norm_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(norm, readers)`` for every declared norm, in model order."""
        groups: list[tuple[str, tuple[str, ...]]] = []
        for b in self.blocks:
            if b.attn_norm is not None:
                groups.append((b.attn_norm, b.attn_readers))
            if b.mlp_norm is not None:
                groups.append((b.mlp_norm, b.mlp_readers))
        if self.final_norm is not None:
            groups.append((self.final_norm, self.head))
        return groups


_LLAMA_LAYOUT = (
    "model.embed_tokens, model.layers[i].input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, "
    "mlp.{gate,up,down}_proj, model.norm, lm_head and a config with hidden_size, num_attention_heads, "
    "num_hidden_layers"
)


def _llama_error(model: nn.Module, problem: str) -> RecipeError:
    return RecipeError(
        f"llama_structure: {type(model).__name__} is not a Llama-family causal LM ({problem}); it expects the "
        f"layout of LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM ({_LLAMA_LAYOUT}). For other "
        "architectures declare a RotationStructure (or pass the structure function of the model's adapter)"
    )


# The children (with parameters) of a Llama-family decoder layer, its attention and its MLP: anything else
# (Gemma-2's sandwich norms, shared experts, ...) changes where the residual is read or written.
_LLAMA_CHILDREN = {
    "": ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"),
    "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _config_int(model: nn.Module, config: Any, name: str, default: int | None = None) -> int:
    value = getattr(config, name, None)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _llama_error(model, f"config.{name} is {value!r}, not a positive int")
    return value


def llama_structure(model: nn.Module) -> RotationStructure:
    """The :class:`RotationStructure` of a transformers Llama-family causal LM (Llama, Mistral, Qwen2, Qwen3, Gemma).

    Dense MLPs only (gate, up, down); a decoder layer, its attention or its MLP with any other module holding
    parameters (Gemma-2's extra norms, shared experts) is refused. Head size from ``config.head_dim`` or
    ``hidden_size // num_attention_heads``; kv heads from ``config.num_key_value_heads`` (default: the query
    heads).

    Raises:
        RecipeError: the model lacks one of the expected modules or config fields (the message lists the
            layout it expects).

    Example:
        >>> llama_structure(nn.Linear(4, 4))
        Traceback (most recent call last):
        ...
        polyquant.errors.RecipeError: llama_structure: Linear is not a Llama-family causal LM (no .config...
    """
    config = getattr(model, "config", None)
    if config is None:
        raise _llama_error(model, "no .config with the model's hyperparameters")
    hidden = _config_int(model, config, "hidden_size")
    heads = _config_int(model, config, "num_attention_heads")
    layers = _config_int(model, config, "num_hidden_layers")
    kv_heads = _config_int(model, config, "num_key_value_heads", heads)
    head_dim = _config_int(model, config, "head_dim", hidden // heads)
    modules = dict(model.named_modules())

    def need(name: str, kind: type[nn.Module] | None = None) -> str:
        module = modules.get(name)
        if module is None:
            raise _llama_error(model, f"no module {name!r}")
        if kind is not None and not isinstance(module, kind):
            raise _llama_error(model, f"{name!r} is a {type(module).__name__}, not a {kind.__name__}")
        return name

    need("model.embed_tokens", nn.Embedding)
    stack = modules.get("model.layers")
    if not isinstance(stack, nn.ModuleList) or len(stack) != layers:
        raise _llama_error(model, f"model.layers is not a ModuleList of config.num_hidden_layers={layers} layers")
    blocks = []
    for i in range(layers):
        p = f"model.layers.{i}"
        for parent, allowed in _LLAMA_CHILDREN.items():
            module = modules.get(f"{p}.{parent}" if parent else p)
            extra = [
                n
                for n, c in (module.named_children() if module is not None else ())
                if n not in allowed and _has_params(c)
            ]
            if extra:
                where = f"{p}.{parent}" if parent else p
                raise _llama_error(
                    model,
                    f"{where} has modules a Llama block does not have: {', '.join(extra)} (extra norms or experts)",
                )
        q, k, v, o = (need(f"{p}.self_attn.{x}_proj") for x in "qkvo")
        gate, up, down = (need(f"{p}.mlp.{x}_proj") for x in ("gate", "up", "down"))
        blocks.append(
            BlockStructure(
                attn_norm=need(f"{p}.input_layernorm"),
                attn_readers=(q, k, v),
                v_proj=v,
                o_proj=o,
                mlp_norm=need(f"{p}.post_attention_layernorm"),
                mlp_readers=(gate, up),
                mlp_writers=(down,),
            )
        )
    return RotationStructure(
        hidden_size=hidden,
        embeddings=("model.embed_tokens",),
        blocks=tuple(blocks),
        final_norm=need("model.norm"),
        head=(need("lm_head", nn.Linear),),
        head_dim=head_dim,
        num_heads=heads,
        num_kv_heads=kv_heads,
    )

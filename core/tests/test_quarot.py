"""QuaRot rotation of transformers: exact rewrites (check 2 of the document), outlier spreading, quantization,
the RoPE property behind where rotations may go (check 3), and the errors."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn

import polyquant
from polyquant.errors import FormatError, RecipeError
from polyquant.quantizers.protocol import ModelPreparer
from polyquant.transforms import (
    BlockStructure,
    OnlineHadamard,
    QuaRotTransform,
    RotationStructure,
    fuse_norms,
    fusion,
    insert_online_hadamard,
    llama_structure,
    online,
    quarot,
    random_orthogonal,
    rotate_model,
    rotate_residual,
    rotate_vo,
    rotation,
    structure,
    untie_embeddings,
)
from polyquant.transforms.quarot import derived_seed

transformers = pytest.importorskip("transformers")

VOCAB = 128


def _llama(
    intermediate: int = 160, kv_heads: int = 2, *, tied: bool = False, bias: bool = False, seed: int = 0
) -> nn.Module:
    """A random 2-layer Llama in float64 (hidden 64, 4 heads of 16) with trained-looking norm weights."""
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        attention_bias=bias,
        mlp_bias=bias,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.uniform_(0.5, 1.5)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.1)
    return model


IDS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.double()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------- check 2: exactness


@pytest.mark.parametrize(
    ("intermediate", "kv_heads", "bias", "kind", "online_kind"),
    [
        (160, 2, False, "auto", "hadamard"),  # GQA (2 query heads per kv head), 160 = 20·8
        (96, 4, True, "auto", "hadamard"),  # MHA with biases everywhere, 96 = 12·8
        (90, 1, False, "orthogonal", "orthogonal"),  # MQA, 90 has no Hadamard matrix: dense fallback
    ],
)
def test_full_rotation_preserves_logits(
    intermediate: int, kv_heads: int, bias: bool, kind: str, online_kind: str
) -> None:
    model = _llama(intermediate, kv_heads, bias=bias)
    before = _logits(model)
    report = rotate_model(model, llama_structure(model), seed=3, kind=kind)  # type: ignore[arg-type]
    # LlamaRMSNorm normalizes in float32 even for a float64 model, hence ~1e-7 rather than ~1e-15.
    assert _max_diff(_logits(model), before) < 1e-4
    assert report.residual_kind == ("orthogonal" if kind == "orthogonal" else "hadamard")
    assert report.hidden_size == 64 and report.head_dim == 16
    assert [f.form for f in report.fused_norms] == ["rms"] * 5
    assert report.vo_pairs == tuple(
        (f"model.layers.{i}.self_attn.v_proj", f"model.layers.{i}.self_attn.o_proj") for i in range(2)
    )
    assert [(s.name, s.size, s.kind) for s in report.online] == [
        (f"model.layers.{i}.mlp.down_proj", intermediate, online_kind) for i in range(2)
    ]
    assert isinstance(model.model.layers[0].mlp.down_proj, OnlineHadamard)
    assert all(norm.weight.eq(1).all() for norm in (model.model.norm, model.model.layers[1].input_layernorm))
    assert len(report.notes()) == 4 and report.to_dict()["online"][0]["kind"] == online_kind


def test_float64_norms_give_float64_exactness() -> None:
    """With a norm that computes in float64 the rewrite is exact to rounding (~1e-13), not just 1e-4."""
    model = _llama(160, 2)
    for parent, attr in [
        *((layer, a) for layer in model.model.layers for a in ("input_layernorm", "post_attention_layernorm")),
        (model.model, "norm"),
    ]:
        old = getattr(parent, attr)
        new = nn.RMSNorm(64, eps=old.variance_epsilon, dtype=torch.float64)
        with torch.no_grad():
            new.weight.copy_(old.weight)
        setattr(parent, attr, new)
    before = _logits(model)
    rotate_model(model, llama_structure(model), seed=0)
    assert _max_diff(_logits(model), before) < 1e-12


@pytest.mark.parametrize("step", ["untie", "fuse", "fuse+residual", "vo", "online"])
def test_each_step_alone_preserves_logits(step: str) -> None:
    model = _llama(160, 2, tied=step == "untie", bias=True)
    s = llama_structure(model)
    before = _logits(model)
    if step == "untie":
        assert untie_embeddings(model, s) == ("lm_head",)
    elif step.startswith("fuse"):
        fuse_norms(model, s)
        if step == "fuse+residual":
            rotate_residual(model, s, rotation(64, seed=5))
    elif step == "vo":
        assert len(rotate_vo(model, s, seed=1)) == 2
    else:
        for block in s.blocks:
            insert_online_hadamard(model, block.mlp_writers[0])
    assert _max_diff(_logits(model), before) < 1e-4


def test_gqa_query_heads_use_their_kv_heads_rotation() -> None:
    """Each kv head has its own rotation; o_proj's columns of query head i must use kv head i // 2's.

    The mapping is really exercised: rotating o_proj with the interleaved mapping (i % num_kv_heads), which
    is wrong for transformers' repeat_kv, changes the logits.
    """
    model = _llama(160, kv_heads=2)
    s = llama_structure(model)
    assert s.num_heads == 4 and s.num_kv_heads == 2
    rots = [rotation(16, derived_seed(0, "vo", 0, h)) for h in range(2)]
    assert not torch.allclose(rots[0].matrix(), rots[1].matrix())
    before = _logits(model)
    wrong = _llama(160, kv_heads=2)
    rotate_vo(model, s, seed=0)
    assert _max_diff(_logits(model), before) < 1e-4
    # The same V rotation with the wrong query-head → kv-head mapping on o_proj.
    attn = wrong.model.layers[0].self_attn
    with torch.no_grad():
        v = attn.v_proj.weight.reshape(2, 16, 64)
        attn.v_proj.weight.copy_(torch.stack([rots[h].apply(v[h], dim=0) for h in range(2)]).reshape(32, 64))
        o = attn.o_proj.weight.reshape(64, 4, 16)
        attn.o_proj.weight.copy_(torch.stack([rots[i % 2].apply(o[:, i], dim=-1) for i in range(4)], 1).reshape(64, 64))
    assert _max_diff(_logits(wrong), before) > 1e-3


def test_tied_embeddings_are_untied_and_logits_kept() -> None:
    model = _llama(160, 2, tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    before = _logits(model)
    report = rotate_model(model, llama_structure(model))
    assert report.untied == ("lm_head",)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is False
    assert _max_diff(_logits(model), before) < 1e-4


def test_gemma_style_norms_one_plus_weight() -> None:
    """Gemma's RMSNorm scales by (1 + w) and its embeddings by √d; llama_structure's names fit it."""
    config = transformers.GemmaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.GemmaForCausalLM(config).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "GemmaRMSNorm":
                module.weight.uniform_(-0.5, 0.5)
    before = _logits(model)
    report = rotate_model(model, llama_structure(model))
    assert {f.form for f in report.fused_norms} == {"rms+1"} and report.untied == ("lm_head",)
    assert bool(model.model.norm.weight.eq(0).all())
    assert _max_diff(_logits(model), before) < 1e-4


def _opt_structure(model: nn.Module) -> RotationStructure:
    p = "model.decoder"
    blocks = []
    for i in range(len(model.model.decoder.layers)):
        layer, attn = f"{p}.layers.{i}", f"{p}.layers.{i}.self_attn"
        blocks.append(
            BlockStructure(
                attn_norm=f"{layer}.self_attn_layer_norm",
                attn_readers=(f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"),
                v_proj=f"{attn}.v_proj",
                o_proj=f"{attn}.out_proj",
                mlp_norm=f"{layer}.final_layer_norm",
                mlp_readers=(f"{layer}.fc1",),
                mlp_writers=(f"{layer}.fc2",),
            )
        )
    return RotationStructure(
        hidden_size=64,
        embeddings=(f"{p}.embed_tokens", f"{p}.embed_positions"),
        blocks=tuple(blocks),
        final_norm=f"{p}.final_layer_norm",
        head=("lm_head",),
        head_dim=16,
        num_heads=4,
        num_kv_heads=4,
    )


def test_layernorm_model_is_centred_and_rotated_exactly() -> None:
    """OPT: LayerNorms with biases, learned positional embeddings, tied head, non-gated MLP (fc1/fc2)."""
    config = transformers.OPTConfig(
        hidden_size=64,
        ffn_dim=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        word_embed_proj_dim=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(config).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.1)
    before = _logits(model)
    report = rotate_model(model, _opt_structure(model), seed=2)
    assert report.centred and {f.form for f in report.fused_norms} == {"layer"}
    assert all(f.replaced for f in report.fused_norms)
    assert isinstance(model.model.decoder.final_layer_norm, nn.RMSNorm)
    assert model.lm_head.bias is not None  # the final LayerNorm's bias went into the head
    assert _max_diff(_logits(model), before) < 1e-10


class _ToyMoE(nn.Module):
    """Embedding → [RMSNorm → per-token "attention" v/o] → [RMSNorm → top-1 MoE of 3 SwiGLU experts] → head."""

    def __init__(self, d: int = 64, ffn: int = 96, experts: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.ln1, self.ln2, self.norm = nn.RMSNorm(d), nn.RMSNorm(d), nn.RMSNorm(d)
        self.v, self.o = nn.Linear(d, d // 2), nn.Linear(d, d)  # 4 query heads of 16 over 2 kv heads
        self.router = nn.Linear(d, experts)
        self.gate = nn.ModuleList(nn.Linear(d, ffn) for _ in range(experts))
        self.up = nn.ModuleList(nn.Linear(d, ffn) for _ in range(experts))
        self.down = nn.ModuleList(nn.Linear(ffn, d) for _ in range(experts))
        self.head = nn.Linear(d, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        v = self.v(self.ln1(x)).unflatten(-1, (2, 16))
        x = x + self.o(v.repeat_interleave(2, dim=-2).flatten(-2))  # query head i reads kv head i // 2
        h = self.ln2(x)
        probs = self.router(h).softmax(-1)
        chosen = probs * nn.functional.one_hot(probs.argmax(-1), probs.shape[-1])  # top-1, weighted by its prob
        experts = zip(self.gate, self.up, self.down, strict=True)
        outs = torch.stack([down(nn.functional.silu(gate(h)) * up(h)) for gate, up, down in experts], -2)
        x = x + (chosen[..., None] * outs).sum(-2)
        return self.head(self.norm(x))


def test_mixture_of_experts_router_and_every_expert_are_rotated() -> None:
    torch.manual_seed(0)
    model = _ToyMoE().double().eval()
    with torch.no_grad():
        for norm in (model.ln1, model.ln2, model.norm):
            norm.weight.uniform_(0.5, 1.5)
    experts = range(3)
    block = BlockStructure(
        attn_norm="ln1",
        attn_readers=("v",),
        v_proj="v",
        o_proj="o",
        mlp_norm="ln2",
        mlp_readers=("router", *(f"gate.{e}" for e in experts), *(f"up.{e}" for e in experts)),
        mlp_writers=tuple(f"down.{e}" for e in experts),
    )
    s = RotationStructure(64, ("emb",), (block,), "norm", ("head",), head_dim=16, num_heads=4, num_kv_heads=2)
    with torch.no_grad():
        before = model(IDS)
        routes = model.router(model.ln2(model.emb(IDS))).argmax(-1)
        assert len(routes.unique()) > 1  # the tokens really take different experts
        report = rotate_model(model, s, seed=7)
        after = model(IDS)
    assert [site.name for site in report.online] == ["down.0", "down.1", "down.2"]
    assert _max_diff(after, before) < 1e-10


# ------------------------------------------------------------------------------------------- outliers


def _max_over_rms(w: torch.Tensor) -> float:
    w = w.detach()
    return float(w.abs().max() / w.pow(2).mean().sqrt())


def test_outlier_channel_is_spread() -> None:
    """A 50× outlier residual channel: max/RMS of the embedding and of the residual readers drops."""
    model = _llama(160, 2)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 7] *= 50
        for layer in model.model.layers:
            layer.input_layernorm.weight[7] = 50.0  # fused into q/k/v: an outlier input column
    s = llama_structure(model)
    fuse_norms(model, s)
    q_proj = model.model.layers[0].self_attn.q_proj
    before = (_max_over_rms(model.model.embed_tokens.weight), _max_over_rms(q_proj.weight))
    rotate_residual(model, s, rotation(64, seed=0))
    after = (_max_over_rms(model.model.embed_tokens.weight), _max_over_rms(q_proj.weight))
    assert before[0] > 6.0 * after[0] and before[1] > 4.0 * after[1]


def test_quantize_after_rotation_quantizes_the_inner_down_proj() -> None:
    model = _llama(160, 2)
    rotated = _logits(model)
    QuaRotTransform(seed=0).prepare_model(model, [], {})
    recipe = {"weights": {"format": "int4", "group_size": 32, "symmetric": False}, "method": "rtn"}
    qmodel, report = polyquant.quantize(model, recipe, inplace=False, progress=False, strict=True)
    names = [row.name for row in report.rows]
    assert "model.layers.0.mlp.down_proj.linear" in names and "model.layers.1.mlp.down_proj.linear" in names
    assert isinstance(qmodel.model.layers[0].mlp.down_proj, OnlineHadamard)
    assert not isinstance(qmodel.model.layers[0].mlp.down_proj.linear, nn.Linear)  # swapped for a QLinear
    assert isinstance(model.model.layers[0].mlp.down_proj.linear, nn.Linear)  # inplace=False
    assert _relative(_logits(qmodel), rotated) < 0.3


@pytest.mark.parametrize(("group_size", "ratio"), [(0, 0.85), (32, 0.75)])
def test_rotation_lowers_int4_rtn_error_with_an_outlier_input_channel(group_size: int, ratio: float) -> None:
    """Every residual reader's weight has a 50× input column: int4 RTN loses much less after rotation.

    Measured (relative logit error, unrotated → rotated): per channel 0.259 → 0.188, groups of 32
    0.248 → 0.126; without the outlier both are about 0.12 (per channel) and 0.10 (groups of 32).
    """
    model = _llama(160, 2)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
                module.weight[:, 5] *= 50
    reference = _logits(model)
    recipe = {"weights": {"format": "int4", "group_size": group_size, "symmetric": False}, "method": "rtn"}
    plain, _ = polyquant.quantize(model, recipe, inplace=False, progress=False, strict=True)
    rotate_model(model, llama_structure(model), seed=0)
    rotated, _ = polyquant.quantize(model, recipe, inplace=False, progress=False, strict=True)
    error_plain = _relative(_logits(plain), reference)
    error_rotated = _relative(_logits(rotated), reference)
    assert error_rotated < ratio * error_plain


# ------------------------------------------------------------------------------------------- check 3: RoPE


def _rope(x: torch.Tensor, position: int, base: float = 10000.0) -> torch.Tensor:
    """Llama's RoPE (rotate_half convention) of a vector at ``position``."""
    d = x.shape[-1]
    angles = position * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = torch.cat([angles.cos(), angles.cos()]), torch.cat([angles.sin(), angles.sin()])
    half = torch.cat([-x[d // 2 :], x[: d // 2]])
    return x * cos + half * sin


def test_rope_commutes_with_rotations_applied_after_it_only() -> None:
    """Why q and k may only be rotated *after* RoPE (online), while V/O may be rotated offline.

    With ``R_m`` RoPE at position m and an orthogonal P, ``(P R_7 q)·(P R_3 k) = qᵀR_7ᵀPᵀP R_3 k`` is the
    original score exactly. Folding P into W_q and W_k instead gives ``(R_7 P q)·(R_3 P k)``, which differs
    because P does not commute with RoPE's plane rotations. V carries no RoPE, so its per-head rotation
    folds into v_proj and o_proj exactly (test_each_step_alone_preserves_logits[vo]).
    """
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    p = random_orthogonal(16, seed=4)
    score = _rope(q, 7) @ _rope(k, 3)
    assert math.isclose(float(_rope(q, 5) @ _rope(k, 1)), float(score), rel_tol=1e-12)  # relative positions
    after = (p @ _rope(q, 7)) @ (p @ _rope(k, 3))
    before = _rope(p @ q, 7) @ _rope(p @ k, 3)
    assert math.isclose(float(after), float(score), rel_tol=1e-12, abs_tol=1e-12)
    assert abs(float(before) - float(score)) > 1e-2 * float(q.norm() * k.norm())


# ------------------------------------------------------------------------------------------- errors


def test_llama_structure_rejects_other_models() -> None:
    with pytest.raises(RecipeError, match=r"Llama-family.*no \.config.*model\.embed_tokens"):
        llama_structure(nn.Sequential(nn.Linear(4, 4)))
    opt = transformers.OPTForCausalLM(
        transformers.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    )
    with pytest.raises(RecipeError, match=r"OPTForCausalLM is not a Llama-family causal LM"):
        llama_structure(opt)
    gemma2 = transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=64,
        )
    )
    with pytest.raises(RecipeError, match=r"pre_feedforward_layernorm"):
        llama_structure(gemma2)


def test_rotating_twice_or_out_of_order_is_refused() -> None:
    model = _llama(96, 2)
    s = llama_structure(model)
    with pytest.raises(RecipeError, match=r"not a weightless RMSNorm.*fuse_norms"):
        rotate_residual(model, s, rotation(64, seed=0))
    with pytest.raises(RecipeError, match=r"size 32, not hidden_size=64"):
        rotate_residual(model, s, rotation(32, seed=0))
    rotate_model(model, s)
    with pytest.raises(RecipeError, match=r"already has an online Hadamard"):
        rotate_model(model, llama_structure(model))
    tied = _llama(96, 2, tied=True)
    with pytest.raises(RecipeError, match=r"untie_embeddings"):
        fuse_norms(tied, llama_structure(tied))


class _ScaledTanhNorm(nn.Module):
    """Not a norm of a supported form: its weight cannot be folded exactly."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * self.weight


def test_unsupported_norm_is_refused_before_any_change() -> None:
    model = _llama(96, 2)
    model.model.layers[1].post_attention_layernorm = _ScaledTanhNorm(64)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RecipeError, match=r"post_attention_layernorm.*_ScaledTanhNorm.*cannot be folded"):
        rotate_model(model, llama_structure(model))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.Linear)


def test_structure_and_argument_errors() -> None:
    model = _llama(96, 2)
    s = llama_structure(model)
    with pytest.raises(RecipeError, match=r"'model\.layers\.9\.mlp\.up_proj' is not a submodule"):
        rotate_model(model, RotationStructure(**{**s.__dict__, "head": ("model.layers.9.mlp.up_proj",)}))
    with pytest.raises(RecipeError, match=r"num_kv_heads: 3 does not divide num_heads=4"):
        RotationStructure(**{**s.__dict__, "num_kv_heads": 3})
    with pytest.raises(RecipeError, match=r"listed more than once"):
        RotationStructure(**{**s.__dict__, "head": ("lm_head", "lm_head")})
    with pytest.raises(RecipeError, match=r"v_proj: 'v' is not among attn_readers"):
        BlockStructure("n", ("q",), "v", "o", None, (), ())
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RecipeError, match=r"V/O rotation: .* num_kv_heads·head_dim = 64"):
        rotate_model(model, RotationStructure(**{**s.__dict__, "num_kv_heads": 4}))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())  # checked before any change
    with pytest.raises(RecipeError, match=r"kind: 'fast' is invalid"):
        rotate_model(model, s, kind="fast")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match=r"seed: -1 is invalid"):
        rotate_model(model, s, seed=-1)
    odd = nn.ModuleDict({"emb": nn.Embedding(10, 90), "head": nn.Linear(90, 3)})
    odd_structure = RotationStructure(90, ("emb",), (), None, ("head",), head_dim=90, num_heads=1, num_kv_heads=1)
    with pytest.raises(FormatError, match=r"kind='hadamard'"):
        rotate_model(odd, odd_structure, kind="hadamard")
    with pytest.raises(FormatError, match=r"online Hadamard"):
        OnlineHadamard(nn.Linear(90, 4), kind="hadamard")


def test_quarot_transform_is_a_model_preparer() -> None:
    transform = QuaRotTransform(seed=1, rotate_vo=False)
    assert isinstance(transform, ModelPreparer) and transform.name == "quarot"
    model = _llama(96, 2)
    before = _logits(model)
    notes = transform.prepare_model(model, [], {})
    assert notes[0].startswith("quarot: residual rotation hadamard 64×64 (seed 1)")
    assert not any("V/O" in n for n in notes)
    assert _max_diff(_logits(model), before) < 1e-4


@pytest.mark.parametrize("module", [structure, fusion, online, quarot], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0

"""Shared fixtures of the core's tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch


@pytest.fixture
def tiny_llama() -> Callable[..., torch.nn.Module]:
    """A factory of small random transformers Llamas in eval mode (seeded; skips without transformers).

    ``tiny_llama(layers=3, hidden=64)``; any other keyword goes to ``LlamaConfig``.
    """
    transformers = pytest.importorskip("transformers")

    def build(
        *,
        hidden: int = 128,
        intermediate: int = 256,
        layers: int = 2,
        heads: int = 4,
        kv_heads: int = 2,
        vocab: int = 128,
        seed: int = 0,
        **config: Any,
    ) -> torch.nn.Module:
        cfg = transformers.LlamaConfig(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            vocab_size=vocab,
            **config,
        )
        torch.manual_seed(seed)
        model: torch.nn.Module = transformers.LlamaForCausalLM(cfg).eval()
        return model

    return build

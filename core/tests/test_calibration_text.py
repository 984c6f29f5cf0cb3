"""Text calibration through a real (locally built) Hugging Face tokenizer, the ``text`` source and the CLI."""

from __future__ import annotations

import pathlib

import pytest
import torch

import polyquant
from polyquant.calibration import load_calibration
from polyquant.calibration_text import text_windows, tokenize
from polyquant.errors import CalibrationError

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXT = " ".join(f"word{i % 37} token{i % 11}" for i in range(600))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A word-level tokenizer trained on TEXT and saved like a model directory (no hub access)."""
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(path)
    return path


def test_windows_are_seeded_and_in_range(tokenizer_dir: pathlib.Path) -> None:
    ids = tokenize(TEXT, str(tokenizer_dir))
    assert ids.numel() == 1200 and int(ids.max()) < 50
    a = list(text_windows(TEXT, str(tokenizer_dir), num_samples=5, seq_len=32, seed=3))
    b = list(text_windows(TEXT, str(tokenizer_dir), num_samples=5, seq_len=32, seed=3))
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    assert all(tuple(x["input_ids"].shape) == (1, 32) and bool(x["attention_mask"].all()) for x in a)
    windows = ["".join(map(str, w["input_ids"][0].tolist())) for w in a]
    joined = "".join(map(str, ids.tolist()))
    assert all(w in joined for w in windows), "each window is a contiguous slice of the tokenized text"


def test_text_source_feeds_gptq(tokenizer_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    data = load_calibration(f"text:{corpus}", tokenizer=str(tokenizer_dir), num_samples=8, seq_len=16)
    assert len(data) == 8 and "8 x 16 tokens" in data.description
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, vocab_size=64
    )
    model = transformers.LlamaForCausalLM(config).eval()
    recipe = {"weights": {"format": "int4", "group_size": 32, "symmetric": False}, "method": "gptq"}
    _, report = polyquant.quantize(model, recipe, calibration=data, progress=False)
    assert report.summary.modules_quantized == 7 and not report.summary.notes


def test_errors_are_clear(tokenizer_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    with pytest.raises(CalibrationError, match="needs a tokenizer"):
        load_calibration(f"text:{corpus}")
    with pytest.raises(CalibrationError, match="fewer than one window"):
        load_calibration(f"text:{corpus}", tokenizer=str(tokenizer_dir), seq_len=5000)
    with pytest.raises(CalibrationError, match="could not load the tokenizer"):
        load_calibration(f"text:{corpus}", tokenizer=str(tmp_path / "missing"))
    with pytest.raises(CalibrationError, match="no text file"):
        load_calibration(f"text:{tmp_path / 'nope.txt'}", tokenizer=str(tokenizer_dir))

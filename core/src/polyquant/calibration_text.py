"""Calibration data from text through a tokenizer: random fixed-length windows, GPTQ-style.

The text is tokenized once; ``num_samples`` windows of ``seq_len`` tokens are drawn at random offsets with
``seed`` (same seed, same windows), each yielded as ``{"input_ids": (1, seq_len), "attention_mask": ...}`` —
GPTQ's recipe is 128 windows of 2048 tokens. Any tokenizer works that, called on a string, returns a mapping
with ``input_ids`` (Hugging Face tokenizers do), or a list of ids; a string is loaded with
``transformers.AutoTokenizer.from_pretrained`` (a local directory, or a hub id where the network allows).

Registered as the calibration source ``text``: ``--calib text:corpus.txt`` with the tokenizer given as the
``tokenizer`` option (``load_calibration("text:corpus.txt", tokenizer="path/to/model")``).

Example:
    >>> ids = list(range(100))
    >>> tokenizer = lambda text: {"input_ids": [ord(c) for c in text]}
    >>> windows = list(text_windows("abcdefghij" * 10, tokenizer, num_samples=2, seq_len=8))
    >>> tuple(windows[0]["input_ids"].shape)
    (1, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from polyquant.calibration import CalibrationSet, ModelInput
from polyquant.errors import CalibrationError

__all__ = ["load_text", "text_windows", "tokenize"]


def _load_tokenizer(tokenizer: Any) -> Callable[[str], Any]:
    if isinstance(tokenizer, (str, Path)):
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is installed with every text plugin
            raise CalibrationError("a tokenizer given by name needs transformers: pip install transformers") from exc
        try:
            loaded: Callable[[str], Any] = AutoTokenizer.from_pretrained(str(tokenizer))
        except OSError as exc:
            raise CalibrationError(
                f"could not load the tokenizer {str(tokenizer)!r}: {exc}; pass a local model directory or a "
                "tokenizer object"
            ) from exc
        return loaded
    if not callable(tokenizer):
        raise CalibrationError(f"tokenizer must be callable or a path/hub id, got {type(tokenizer).__name__}")
    return tokenizer  # type: ignore[no-any-return]


def tokenize(text: str, tokenizer: Any) -> torch.Tensor:
    """The token ids of ``text`` as a 1-D ``long`` tensor.

    Example:
        >>> tokenize("hi", lambda s: [1, 2]).tolist()
        [1, 2]
    """
    encode = _load_tokenizer(tokenizer)
    encoded = encode(text)
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) or hasattr(encoded, "keys") else encoded
    tensor = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if tensor.numel() == 0:
        raise CalibrationError("the calibration text tokenized to no tokens; pass a non-empty text")
    return tensor


def text_windows(
    text: str, tokenizer: Any, *, num_samples: int = 128, seq_len: int = 2048, seed: int = 0
) -> Iterator[ModelInput]:
    """``num_samples`` random windows of ``seq_len`` tokens of ``text`` (see the module docstring).

    Raises:
        CalibrationError: bad sizes, or a text shorter than one window (the message gives its length).
    """
    if not isinstance(num_samples, int) or num_samples < 1 or not isinstance(seq_len, int) or seq_len < 1:
        raise CalibrationError(f"num_samples and seq_len must be positive integers, got {num_samples}, {seq_len}")
    ids = tokenize(text, tokenizer)
    if ids.numel() < seq_len:
        raise CalibrationError(
            f"the calibration text has {ids.numel()} tokens, fewer than one window of seq_len={seq_len}; "
            "use more text or a smaller seq_len"
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (num_samples,), generator=generator)
    for start in starts.tolist():
        window = ids[start : start + seq_len].unsqueeze(0)
        yield {"input_ids": window, "attention_mask": torch.ones_like(window)}


def load_text(
    path: str | Path,
    *,
    tokenizer: Any = None,
    num_samples: int = 128,
    seq_len: int = 2048,
    seed: int = 0,
    encoding: str = "utf-8",
) -> CalibrationSet:
    """Calibration windows from a text file (or every ``*.txt`` file of a directory, in sorted order).

    Example:
        >>> data = load_text("corpus.txt", tokenizer="path/to/model", num_samples=16)  # doctest: +SKIP
    """
    if tokenizer is None:
        raise CalibrationError(
            "text calibration needs a tokenizer: load_calibration('text:FILE', tokenizer='path/to/model') "
            "or a tokenizer object"
        )
    root = Path(path).expanduser()
    files = sorted(root.glob("*.txt")) if root.is_dir() else [root]
    if not files or not all(f.is_file() for f in files):
        raise CalibrationError(f"no text file at {root}; pass a .txt file or a directory of them")
    text = "\n\n".join(f.read_text(encoding=encoding) for f in files)
    encode = _load_tokenizer(tokenizer)
    windows = list(text_windows(text, encode, num_samples=num_samples, seq_len=seq_len, seed=seed))
    return CalibrationSet(
        lambda: iter(windows), f"text from {root}: {num_samples} x {seq_len} tokens", length=len(windows)
    )

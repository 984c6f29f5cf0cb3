"""Quality of every weight quantization method at 2, 3, 4 and 8 bits on a small *trained* language model.

The model is a byte-level transformers ``LlamaForCausalLM`` (4 layers, hidden 128) trained for a few hundred
steps on text that ships with Python itself (the standard library's own source files), so it has learned
real structure and its weights look trained (not random). Nothing is downloaded. The trained weights are
cached (safetensors) next to the output, so reruns skip training.

For every method (rtn, mse, hqq, gptq, awq) and every width (2, 3, 4, 8 bits: asymmetric integers, groups of
64 below 8 bits, per channel at 8 bits; the 28 decoder linears are quantized, the LM head and the embeddings
stay in full precision) the script quantizes a copy of the model and reports, on held-out text, the
perplexity and the relative logit error against the full-precision model, plus the ratio of each method's
logit error to RTN's at the same width. Calibration (gptq, awq): 32 training windows of 64 bytes.

Usage::

    python core/benchmarks/quality.py                 # prints the Markdown table
    python core/benchmarks/quality.py --out docs/quality-table.md
    nox -s quality
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pathlib
import sys
import time
import warnings

import torch
import transformers

import polyquant

METHODS = ("rtn", "mse", "hqq", "gptq", "awq")
BITS = (2, 3, 4, 8)
SEQ = 64


def corpus(max_bytes: int = 1_500_000) -> bytes:
    """The standard library's top-level Python sources, in sorted order (the same bytes for a given Python)."""
    root = pathlib.Path(os.__file__).parent
    data = bytearray()
    for path in sorted(root.glob("*.py")):
        data += path.read_bytes() + b"\n"
        if len(data) >= max_bytes:
            break
    return bytes(data[:max_bytes])


def build_model() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def windows(data: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, data.numel() - SEQ - 1, (count,), generator=generator)
    return torch.stack([data[s : s + SEQ] for s in starts.tolist()])


def train(model: torch.nn.Module, data: torch.Tensor, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        batch = windows(data, 32, gen)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.3f}", file=sys.stderr)
    model.eval()


def trained_model(cache: pathlib.Path, data: torch.Tensor, steps: int) -> transformers.LlamaForCausalLM:
    from safetensors.torch import load_file, save_file

    model = build_model()
    if cache.exists():
        model.load_state_dict(load_file(str(cache)))
        return model.eval()
    print(f"training the model ({steps} steps; cached in {cache})", file=sys.stderr)
    train(model, data, steps)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(cache)
    return model.eval()


def recipe(method: str, bits: int) -> dict[str, object]:
    group = 0 if bits == 8 else 64
    return {
        "name": f"int{bits}-{method}",
        "weights": {"format": f"int{bits}", "group_size": group, "symmetric": False},
        "method": method,
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, test: torch.Tensor, reference: torch.Tensor | None) -> tuple[float, float]:
    out = model(input_ids=test, labels=test)
    ppl = math.exp(float(out.loss))
    err = 0.0 if reference is None else float((out.logits - reference).norm() / reference.norm())
    return ppl, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps when no cached model exists")
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(".cache/quality-llama.safetensors"))
    parser.add_argument("--out", type=pathlib.Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    text = corpus()
    digest = hashlib.sha256(text).hexdigest()[:12]
    cache = args.cache.with_name(f"{args.cache.stem}-{digest}-{args.steps}{args.cache.suffix}")
    data = torch.tensor(list(text), dtype=torch.long)
    split = int(0.9 * data.numel())
    train_data, test_data = data[:split], data[split:]
    model = trained_model(cache, train_data, args.steps)
    gen = torch.Generator().manual_seed(1)
    test = windows(test_data, 64, gen)
    calib = {"input_ids": windows(train_data, 32, torch.Generator().manual_seed(2))}
    with torch.no_grad():
        reference = model(input_ids=test).logits
    fp_ppl, _ = evaluate(model, test, None)

    rows: list[tuple[int, str, float, float, float, float]] = []
    for bits in BITS:
        rtn_err = math.nan
        for method in METHODS:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qmodel, report = polyquant.quantize(
                    model, recipe(method, bits), calibration=calib, inplace=False, progress=False
                )
            seconds = time.perf_counter() - start
            if report.summary.modules_quantized != 28:
                raise SystemExit(
                    f"int{bits} {method}: {report.summary.modules_quantized} of 28 linears quantized: "
                    f"{[s.reason for s in report.skipped]}"
                )
            ppl, err = evaluate(qmodel, test, reference)
            if method == "rtn":
                rtn_err = err
            rows.append((bits, method, ppl, err, err / rtn_err, seconds))
            print(f"  int{bits} {method:5s} ppl {ppl:8.3f}  logit err {err:.4f}  ({seconds:.1f} s)", file=sys.stderr)

    lines = [
        f"Model: byte-level Llama, 4 layers, hidden 128, {sum(p.numel() for p in model.parameters()):,} parameters,",
        f"trained {args.steps} steps on Python {sys.version.split()[0]} standard-library sources; "
        f"test: 64 held-out windows of {SEQ} bytes. Full precision perplexity: **{fp_ppl:.3f}**.",
        "",
        "| bits | method | perplexity | Δ ppl vs fp | logit rel. error | error vs RTN | quantize s |",
        "|---|---|---|---|---|---|---|",
    ]
    for bits, method, ppl, err, ratio, seconds in rows:
        lines.append(
            f"| {bits} | {method} | {ppl:.3f} | {ppl - fp_ppl:+.3f} | {err:.4f} | {ratio:.2f}× | {seconds:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

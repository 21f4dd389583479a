"""Benchmark: how much watching a run in the browser slows its training, on this machine.

    R1WB_HOME=/path/with/cached/base .venv/bin/python bench/bench_watching.py [--seconds 20]

A long r1-zero GRPO stage (tiny preset, quick evals off) is started, and its step rate is
measured for ``--seconds`` each: unwatched, with the Live training page open in headless
Chromium (charts redrawn every 2 s, then every 15 s), with the Group inspector open (following
live), with the Runs page open, and unwatched again. Two worker settings, one after the other:

* **workbench default**: torch on every core, passive OpenMP waits (``backend.runner``);
* **one core, passive waits**: ``R1WB_TRAIN_THREADS=1``, leaving a core to the UI;
* **every core, spinning waits**: ``OMP_WAIT_POLICY=ACTIVE``, how OpenMP behaves when its
  threads keep spinning between the many tiny parallel regions of a small model.

Results go to docs/benchmarks.md between this benchmark's markers.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench.common import load, write_section  # noqa: E402

# (label, page, button to click there)
VIEWS = [("unwatched", None, None), ("Live training open", "training", None),
         ("Live training, charts every 15 s", "training", "15 s"),
         ("Group inspector open", "groups", None), ("Runs page open", "", None),
         ("unwatched again", None, None)]
VARIANTS = [("workbench default (every core, passive waits)", {}),
            ("one core, passive waits", {"R1WB_TRAIN_THREADS": "1"}),
            ("every core, spinning waits", {"OMP_WAIT_POLICY": "ACTIVE"}),
            ("every core, short spin", {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"})]


def measure(wb, variant_env: dict, port: int, seconds: float, browser) -> tuple[list, int]:
    saved = {k: os.environ.get(k) for k in variant_env}
    os.environ.update(variant_env)  # the runner passes its environment to the worker
    try:
        run = wb.create_run("r1-zero", "tiny", {"grpo.eval_every": "0", "grpo.steps": "5000"},
                            name="bench: watching cost")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    stage = next(s for s in wb.get_run(run.id).stages if s.kind == "grpo")
    while (s := wb.get_stage(stage.id)).status != "running" or s.step < 5:
        if s.status in ("failed", "stopped", "interrupted"):
            raise SystemExit(f"stage {stage.id} {s.status}: {s.error}")
        time.sleep(1)
    rates = []
    try:
        for label, path, click in VIEWS:
            page = None
            if path is not None:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/{path}?run={run.id}&stage={stage.id}")
                if click:
                    page.get_by_text(click, exact=True).click(timeout=60_000)
                time.sleep(5)  # let it load before counting
            first = wb.get_stage(stage.id).step
            time.sleep(seconds)
            rates.append((label, (wb.get_stage(stage.id).step - first) / seconds))
            print(f"  {label}: {rates[-1][1]:.2f} steps/s", flush=True)
            if page is not None:
                page.close()
    finally:
        wb.stop(stage.id)
        while wb.get_stage(stage.id).status not in ("stopped", "completed", "failed"):
            time.sleep(1)
    return rates, run.id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--keep-runs", action="store_true", help="do not delete the bench runs")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--only", type=int, nargs="*", default=None,
                    help="indexes of the variants to run (default: all)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from backend.api import Workbench
    from screenshots import CHROMIUM, free_port, serve

    wb = Workbench()
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load": load()}
    port = free_port()
    server = serve(port)
    results = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for i, (name, env) in enumerate(VARIANTS):
                if args.only is not None and i not in args.only:
                    continue
                print(f"{name}:", flush=True)
                results[name], run_id = measure(wb, env, port, args.seconds, browser)
                if not args.keep_runs:
                    wb.delete_run(run_id)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    head = "| worker setting | " + " | ".join(label for label, _, _ in VIEWS) + " |"
    rows = [f"| {name} | " + " | ".join(f"{rate:.2f}" for _, rate in rates) + " |"
            for name, rates in results.items()]
    body = "\n".join([
        f"Measured {info['date']} on {os.cpu_count()} CPUs, load average {info['load']} at "
        f"start. Reproduce: `.venv/bin/python bench/bench_watching.py` (with a cached tiny "
        f"base under `R1WB_HOME`). GRPO steps per second of a tiny r1-zero stage (quick evals "
        f"off), each over {args.seconds:.0f} s, while the named page is open in headless "
        f"Chromium (the Live training page and the Group inspector refresh every 2 s).",
        "", head, "|---|" + "---|" * len(VIEWS), *rows])
    print("\n" + body)
    if not args.no_docs and args.only is None:
        write_section("bench_watching", "## Training speed while watched (worker threads)",
                      body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

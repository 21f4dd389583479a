"""Benchmark: how much watching a run in the browser slows its training, on this machine.

    R1WB_HOME=/path/with/cached/base .venv/bin/python bench/bench_watching.py [--seconds 20]
        [--only 0] [--rounds 1] [--no-docs]

A long r1-zero GRPO stage (tiny preset, quick evals off) is started, and its step rate is
measured for ``--seconds`` each: unwatched, with the Live training page open in headless
Chromium (charts at the default redraw period, then every 2 s and every 5 s), with the Group
inspector open (following live), with the Stage page open, with the Runs page open, and
unwatched again. Beside each rate, the CPU the UI took meanwhile (the Streamlit server and the
browser, in cores): on a shared, noisy machine that is the steadier number, and it is what the
training loses. ``--rounds`` repeats the sequence and reports medians.

Four worker settings, one after the other (``--only`` picks some):

* **workbench default**: torch on every core, passive OpenMP waits (``backend.runner``);
* **one core, passive waits**: ``R1WB_TRAIN_THREADS=1``, leaving a core to the UI;
* **every core, spinning waits**: ``OMP_WAIT_POLICY=ACTIVE``, how OpenMP behaves when its
  threads keep spinning between the many tiny parallel regions of a small model;
* **every core, short spin**: libgomp's spin shortened (``GOMP_SPINCOUNT``).

Results go to docs/benchmarks.md between this benchmark's markers (only for a full run).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
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
VIEWS = [("unwatched", None, None),
         ("Live training open (charts every 10 s, the default)", "training", None),
         ("Live training, charts every 2 s", "training", "2 s"),
         ("Live training, charts every 5 s", "training", "5 s"),
         ("Group inspector open (following live)", "groups", None),
         ("Stage page open", "stage", None),
         ("Runs page open", "", None),
         ("unwatched again", None, None)]
VARIANTS = [("workbench default (every core, passive waits)", {}),
            ("one core, passive waits", {"R1WB_TRAIN_THREADS": "1"}),
            ("every core, spinning waits", {"OMP_WAIT_POLICY": "ACTIVE"}),
            ("every core, short spin", {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"})]


def cpu_seconds(processes) -> dict[int, float]:
    """User + system CPU seconds of each of ``processes`` still alive, by pid."""
    import psutil

    out = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
        except psutil.Error:
            pass
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two ``cpu_seconds`` readings by the processes in both."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def ui_processes(server_pid: int) -> list:
    """The Streamlit server and every browser process (children of this one)."""
    import psutil

    server = psutil.Process(server_pid)
    browser = [p for p in psutil.Process().children(recursive=True)
               if "chrom" in p.name().lower() or "headless" in p.name().lower()]
    return [server, *server.children(recursive=True), *browser]


def measure(wb, variant_env: dict, port: int, seconds: float, browser, server_pid: int,
            rounds: int) -> tuple[dict, int]:
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
    rates: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in VIEWS}
    try:
        for _ in range(rounds):
            for label, path, click in VIEWS:
                page = None
                if path is not None:
                    page = browser.new_page(viewport={"width": 1500, "height": 1000})
                    page.goto(f"http://127.0.0.1:{port}/{path}?run={run.id}&stage={stage.id}")
                    if click:
                        page.get_by_text(click, exact=True).click(timeout=60_000)
                    time.sleep(5)  # let it load before counting
                procs = ui_processes(server_pid)
                first, cpu0, t0 = wb.get_stage(stage.id).step, cpu_seconds(procs), time.time()
                time.sleep(seconds)
                last, cpu1, t1 = wb.get_stage(stage.id).step, cpu_seconds(procs), time.time()
                rates[label].append(((last - first) / (t1 - t0),
                                     cpu_used(cpu0, cpu1) / (t1 - t0)))
                print(f"  {label}: {rates[label][-1][0]:.2f} steps/s, UI {rates[label][-1][1]:.2f}"
                      f" cores", flush=True)
                if page is not None:
                    page.close()
    finally:
        wb.stop(stage.id)
        while wb.get_stage(stage.id).status not in ("stopped", "completed", "failed"):
            time.sleep(1)
    return {label: (statistics.median(r for r, _ in xs), statistics.median(c for _, c in xs))
            for label, xs in rates.items()}, run.id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the views; medians reported")
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
            # A first page load imports the app's modules in the server: not part of any view.
            warm = browser.new_page()
            warm.goto(f"http://127.0.0.1:{port}/")
            warm.get_by_text("Runs").first.wait_for(timeout=120_000)
            warm.close()
            for i, (name, env) in enumerate(VARIANTS):
                if args.only is not None and i not in args.only:
                    continue
                print(f"{name}:", flush=True)
                results[name], run_id = measure(wb, env, port, args.seconds, browser,
                                                server.pid, args.rounds)
                if not args.keep_runs:
                    wb.delete_run(run_id)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    body = render(results, info, args.seconds, args.rounds)
    print("\n" + body)
    if not args.no_docs:
        write_section("bench_watching", "## Training speed while watched (worker threads)",
                      body)
    return 0


def render(results: dict, info: dict, seconds: float, rounds: int) -> str:
    head = "| worker setting | " + " | ".join(label for label, _, _ in VIEWS) + " |"
    rows = []
    for name, by_view in results.items():
        base = statistics.mean([by_view["unwatched"][0], by_view["unwatched again"][0]])
        cells = []
        for label, path, _ in VIEWS:
            rate, cores = by_view[label]
            share = f"{rate / base:.0%}" if base > 0 else "n/a"  # a stalled baseline
            cells.append(f"{rate:.2f}" if path is None else
                         f"{rate:.2f} ({share}; UI {cores:.2f} cores)")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([
        f"Measured {info['date']} on {os.cpu_count()} CPUs, load average {info['load']} at "
        f"start. Reproduce: `.venv/bin/python bench/bench_watching.py --rounds "
        f"{rounds} --seconds {seconds:.0f}` (with a cached tiny base under "
        f"`R1WB_HOME`). GRPO steps per second of a tiny r1-zero stage (quick evals off), each "
        f"over {seconds:.0f} s"
        f"{f' (median of {rounds} rounds)' if rounds > 1 else ''}, while the named page is "
        f"open in headless Chromium; in brackets the rate as a share of the mean unwatched "
        f"rate, and the CPU the UI (Streamlit server + browser) took meanwhile.",
        "", head, "|---|" + "---|" * len(VIEWS), *rows])


if __name__ == "__main__":
    sys.exit(main())

"""The tiny preset's failure mode, and live steering rescuing it, measured.

    .venv/bin/python bench/collapse_rescue.py [--lr 5e-4] [--rescue-lr 3e-5]

Runs ``r1-zero --preset tiny`` twice with a too-high GRPO learning rate (quick evals every 10
steps): once left alone, once steered exactly as a user of the Live training page would: when
the quick held-out eval has fallen by 15 points from its peak (the page's collapse warning),
``Workbench.set_params(stage, {"learning_rate": rescue})`` is sent; the worker applies it at
the next step boundary. Writes a section of docs/results.md (between its markers) and
docs/img/collapse_rescue.png. Every number comes from the runs' stored metrics.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.api import Workbench  # noqa: E402

DOCS = ROOT / "docs"
START, END = "<!-- collapse_rescue:start -->", "<!-- collapse_rescue:end -->"
DROP = 0.15  # the Live training page's collapse threshold (pages/training.py COLLAPSE_DROP)


def grpo_stage(wb: Workbench, run_id: int):
    return next(s for s in wb.get_run(run_id).stages if s.kind == "grpo")


def follow(wb: Workbench, run_id: int, rescue_lr: float | None) -> dict:
    """Wait for the run to end; with ``rescue_lr``, steer once when the collapse shows."""
    sent = None
    while True:
        run = wb.get_run(run_id)
        stage = grpo_stage(wb, run_id)
        if rescue_lr is not None and sent is None and stage.status == "running":
            steps, acc = wb.metric_series(stage.id, "eval/accuracy")
            if len(acc) >= 2 and max(acc) - acc[-1] >= DROP - 1e-9:
                wb.set_params(stage.id, {"learning_rate": rescue_lr})
                sent = {"seen_at_step": steps[-1], "peak": max(acc), "at": acc[-1]}
                print(f"  run {run_id}: accuracy {max(acc):.0%} -> {acc[-1]:.0%} at step "
                      f"{steps[-1]}: learning_rate={rescue_lr:g} sent", flush=True)
        if run.status in ("completed", "failed", "stopped", "interrupted"):
            break
        time.sleep(1.0)
    if run.status != "completed":
        raise SystemExit(f"run {run_id} ended {run.status}: {wb.run_status(run_id)}")
    stage = grpo_stage(wb, run_id)
    applied = [c for c in wb.commands(stage.id) if c.applied_step is not None]
    if sent is not None:
        sent["applied_step"] = applied[-1].applied_step if applied else None
    ev = next(s for s in run.stages if s.kind == "evaluate").summary
    return {"run": run_id, "stage": stage.id, "sent": sent, "eval": ev,
            "acc": wb.metric_series(stage.id, "eval/accuracy"),
            "fmt": wb.metric_series(stage.id, "rewards/format/mean"),
            "think": wb.metric_series(stage.id, "eval/think_rate")}


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for key, label, color in (("alone", "left alone", "#d62728"),
                              ("rescued", "learning rate lowered live", "#2ca02c")):
        res = results[key]
        ax.plot(*res["acc"], marker="o", markersize=3, color=color,
                label=f"held-out accuracy, {label}")
        ax.plot(*res["fmt"], color=color, alpha=0.35, linewidth=1,
                label=f"format reward (train), {label}")
        if res["sent"] and res["sent"]["applied_step"] is not None:
            ax.axvline(res["sent"]["applied_step"], color=color, linestyle="--", linewidth=1)
            ax.annotate("learning_rate lowered", (res["sent"]["applied_step"], 0.5),
                        rotation=90, color=color, fontsize=8, ha="right")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Too-high learning rate: collapse with format intact, and a live rescue")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def section(results: dict, args) -> str:
    a, r = results["alone"], results["rescued"]
    s = r["sent"]

    def row(label: str, res: dict) -> str:
        e = res["eval"]
        return (f"| {label} (run #{res['run']}) | {e['base']['greedy_pass@1']:.1%} | "
                f"{max(res['acc'][1]):.1%} | {min(res['acc'][1][1:] or [0]):.1%} | "
                f"{e['final']['greedy_pass@1']:.1%} | {e['final']['think_rate']:.1%} |")

    steered = (f"Steered run: the quick eval showed {s['peak']:.0%} -> {s['at']:.0%} at step "
               f"{s['seen_at_step']}; `learning_rate={args.rescue_lr:g}` was sent then and the "
               f"worker applied it at step {s['applied_step']}." if s else
               "Steered run: the collapse never showed, so nothing was sent.")
    return f"""## Too-high learning rate: collapse, and a live rescue

Measured by `bench/collapse_rescue.py` (`r1-zero --preset tiny --set grpo.learning_rate=
{args.lr:g} --set grpo.eval_every=10`, the same seed twice). {steered}

| run | base greedy pass@1 | best quick eval | lowest quick eval after step 0 | final greedy pass@1 (500 held-out) | final `<think>` rate |
|---|---|---|---|---|---|
{row("lr " + format(args.lr, "g") + ", left alone", a)}
{row("lr " + format(args.lr, "g") + ", lowered live", r)}

![collapse and rescue](img/collapse_rescue.png)

What the user sees: on the Live training page the held-out accuracy curve falls while the
format reward stays high, and the page warns "policy collapse?"; the Group inspector shows
the same steps' groups well-formed (`<think>`/`<answer>` present) but wrong. The steering
marker on every curve shows where the lower learning rate took effect."""


def write_results(text: str) -> None:
    path = DOCS / "results.md"
    body = path.read_text() if path.exists() else "# Results\n"
    block = f"{START}\n{text}\n{END}"
    if START in body and END in body:
        head, rest = body.split(START, 1)
        body = head + block + rest.split(END, 1)[1]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=None)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--rescue-lr", type=float, default=3e-5)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--alone-run", type=int, default=None,
                    help="reuse a finished left-alone run instead of training it again")
    args = ap.parse_args()
    wb = Workbench(args.db)
    sets = {"grpo.learning_rate": args.lr, "grpo.eval_every": args.eval_every}
    results = {}
    if args.alone_run is not None:
        results["alone"] = follow(wb, args.alone_run, None)
    for key, rescue in (("alone", None), ("rescued", args.rescue_lr)):
        if key in results:
            continue
        run = wb.create_run("r1-zero", "tiny", dict(sets), name=f"collapse demo: {key}")
        print(f"run {run.id} ({key}) started", flush=True)
        results[key] = follow(wb, run.id, rescue)
        print(f"  final greedy pass@1 {results[key]['eval']['final']['greedy_pass@1']:.1%}",
              flush=True)
    plot(results, DOCS / "img" / "collapse_rescue.png")
    write_results(section(results, args))
    print(f"wrote {DOCS / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The seed's R1-Zero finding in miniature: run (or read) an r1-zero run and write
``docs/results.md`` with before/after numbers and the curves as a PNG.

    .venv/bin/python bench/r1_zero_results.py                 # runs r1-zero --preset tiny
    .venv/bin/python bench/r1_zero_results.py --run-id 3 --db sqlite:///workbench_data/workbench.db

Every number comes from the run's stored metrics and stage summaries.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.api import Workbench  # noqa: E402

DOCS = ROOT / "docs"


def _seconds(stage) -> float:
    if stage.started_at and stage.ended_at:
        return (stage.ended_at - stage.started_at).total_seconds()
    return float("nan")


def _run_seconds(run) -> float:
    starts = [s.started_at for s in run.stages if s.started_at]
    ends = [s.ended_at for s in run.stages if s.ended_at]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")


def plot(wb: Workbench, grpo_id: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("held-out accuracy (greedy, strict)", ["eval/accuracy", "eval/think_rate"],
         ["accuracy", "<think> used"]),
        ("reward by function (train batch mean)", ["rewards/accuracy/mean", "rewards/format/mean"],
         ["accuracy", "format"]),
        ("mean completion length (tokens)", ["completions/mean_length"], ["length"]),
        ("share of groups with zero reward spread", ["frac_reward_zero_std"], ["zero-std"]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, names, labels) in zip(axes.flat, panels):
        for name, label in zip(names, labels):
            steps, values = wb.metric_series(grpo_id, name)
            if steps:
                ax.plot(steps, values, label=label, marker="o" if name.startswith("eval") else None,
                        markersize=3)
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("R1-Zero on the tiny preset (2-core CPU)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def write(wb: Workbench, run_id: int) -> Path:
    run = wb.get_run(run_id)
    by_kind = {s.kind: s for s in run.stages}
    pre, grpo, ev = by_kind["pretrain"], by_kind["grpo"], by_kind["evaluate"]
    s = ev.summary
    base, final = s["base"], s["final"]
    png = DOCS / "img" / "r1_zero_curves.png"
    plot(wb, grpo.id, png)
    steps, lengths = wb.metric_series(grpo.id, "completions/mean_length")
    first = sum(lengths[:10]) / max(1, len(lengths[:10]))
    last = sum(lengths[-10:]) / max(1, len(lengths[-10:]))
    k = s["k"]
    rows = [
        ("greedy pass@1 (strict: answer inside `<answer>`)", "greedy_pass@1"),
        ("greedy, any final number (lenient)", "greedy_lenient"),
        (f"sampled pass@1 (mean of {k} at T={s.get('temperature', 0.7)}, top-p "
         f"{s.get('top_p', 1.0)})", "sampled_pass@1"),
        (f"cons@{k} (majority vote)", f"cons@{k}"),
        ("`<think>` used (greedy)", "think_rate"),
    ]
    table = "\n".join(f"| {label} | {base[key]:.1%} | {final[key]:.1%} | "
                      f"{100 * (final[key] - base[key]):+.1f} |" for label, key in rows)
    cfg = grpo.config
    text = f"""# Results: R1-Zero in miniature

Measured by `bench/r1_zero_results.py` on run #{run.id} (`python -m backend run --recipe r1-zero
--preset tiny`), {datetime.now():%Y-%m-%d}, on a shared 2-core CPU. Every number below is read
from the run's stored metrics and stage summaries.

Setup: base model = the tiny preset ({pre.summary.get('parameters', 0):,} parameters,
Qwen2-style, character tokenizer), pre-trained {pre.config['steps']} steps on synthetic
{pre.config['min_digits']}-{pre.config['max_digits']} digit addition where 30% of the texts
show worked reasoning in `<think>`. GRPO: TRL `GRPOTrainer`, {cfg['steps']} steps,
{cfg['batch_size'] // cfg['num_generations']} prompts x {cfg['num_generations']} completions
per step, lr {cfg['learning_rate']:g}, beta {cfg['beta']:g}, loss `{cfg['loss_type']}`,
rewards `{cfg['reward_funcs']}` weighted `{cfg['reward_weights']}`, max
{cfg['max_completion_length']} completion tokens; training prompts: a fixed pool of
{cfg.get('problem_pool', 0) or 'fresh'} distinct problems seen in epochs (so one problem's group can be
followed across steps in the Group inspector). Held-out: {s['problems']} problems never
trained on.

| held-out metric | base model | after R1-Zero GRPO | change (points) |
|---|---|---|---|
{table}

Mean completion length during GRPO: {first:.1f} tokens (first 10 steps) -> {last:.1f} tokens
(last 10 steps): the model's answers grow longer as it learns to think.

Wall time on this machine: pre-training {_seconds(pre):.0f} s
{'(reused from the cache)' if pre.summary.get('cached') else ''}, GRPO {_seconds(grpo):.0f} s,
evaluation {_seconds(ev):.0f} s; the whole run {_run_seconds(run):.0f} s from its first stage's
start to its last stage's end (target: <= 10 minutes).

![R1-Zero curves](img/r1_zero_curves.png)

Targets from the issue: >= +50 points greedy pass@1 on >= 200 held-out problems
({100 * (final['greedy_pass@1'] - base['greedy_pass@1']):+.1f} measured);
`<think>` in >= 95% of completions ({final['think_rate']:.1%} measured); mean completion length
rising ({first:.1f} -> {last:.1f}).

Caveat: within minutes most of the gain comes from the
model switching into its `<think>` mode on every problem, not from better reasoning inside it.
"""
    out = DOCS / "results.md"
    # This script owns the R1-Zero part at the top (no "## " heading in it); the sections other
    # benchmarks add below it ("## ..."), e.g. distillation and reflections, are kept.
    old = out.read_text() if out.exists() else ""
    rest = old[old.index("\n## "):] if "\n## " in old else ""
    out.write_text(text.rstrip("\n") + "\n" + rest)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", default=None)
    p.add_argument("--run-id", type=int, default=None)
    p.add_argument("--preset", default="tiny")
    args = p.parse_args()
    run_id = args.run_id
    if run_id is None:
        cmd = [sys.executable, "-m", "backend", "run", "--recipe", "r1-zero", "--preset",
               args.preset, "--wait"] + (["--db", args.db] if args.db else [])
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        print(done.stdout)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        run_id = int(done.stdout.split()[0])
    print(f"wrote {write(Workbench(args.db), run_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

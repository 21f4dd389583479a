"""Benchmark: what R1 Workbench's recording and per-step DB work cost a GRPO step.

    .venv/bin/python bench/bench_recording.py [--steps 60] [--rounds 3]

The same GRPO run (tiny preset model, 8 prompts x 8 generations = 64 completions per step,
40 completion tokens, lr 3e-5, beta 0, accuracy + 0.5 x format, the GRPOConfig of
``backend.stages.grpo.run``, one seed) is trained in this one process two ways:

* **bare**: ``trl.GRPOTrainer`` as TRL ships it;
* **workbench**: what a Workbench GRPO stage runs: ``RecordingGRPOTrainer`` with a
  ``GroupWriter`` recording every group and rollout into a fresh SQLite file from its
  background thread, plus the real per-step store traffic: a real ``StageContext`` (whose
  heartbeat thread writes every 2 s), ``attach_trainer`` (the stage's progress, commands and
  metrics callback, with the live-steering setters) and ``steer_metrics_callback`` (the
  stage's ``steer/*`` metrics row at every step begin), exactly as the GRPO stage wires them. The stage's periodic held-out eval is left out (it is a feature the user
  schedules, not recording overhead), as are checkpoints (``save_strategy="no"``).

The variants alternate (bare, workbench, bare, workbench, ...) for ``--rounds`` rounds, so the
machine's noise (a shared 2-core box) falls on both alike. A step's time is the period from one
``on_step_begin`` to the next, so it covers generation, scoring, the update, every callback and
logging; the first ``--skip`` steps of each run are warm-up and not counted. The workbench run's
time to drain the writer queue after ``train()`` is reported too. Target: workbench / bare
median step time <= 1.05. The run fails loudly if the workbench variant did not record every
step (64 rollouts each) or if the two variants did not train the same trajectory.

Model: the newest cached pre-trained tiny base under /tmp/wbtiny/models/tiny-base-*/ (realistic
completion lengths), else a randomly initialised ``TinyModelSpec()`` model; ``--model`` to pick.
Results are printed and written into docs/benchmarks.md between this benchmark's markers (the
rest of the file is left alone); ``--no-docs`` skips that.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import DOCS, load, pct, write_section  # noqa: E402
SECTION_HEADING = "## GRPO recording overhead (issue: R1-Zero)"
TARGET_RATIO = 1.05
CACHED_MODELS = "/tmp/wbtiny/models/tiny-base-*/"

PROMPTS_PER_STEP, GROUP = 8, 8
BATCH = PROMPTS_PER_STEP * GROUP
MAX_COMPLETION = 40
REWARDS, WEIGHTS = ("accuracy", "format"), (1.0, 0.5)
# Logged values compared between the two variants: same seed, same trajectory.
TRAJECTORY_KEYS = ("reward", "completions/mean_length", "loss")


# ------------------------------------------------------------------------------ setup
def pick_model(workdir: Path, requested: str | None, seed: int) -> tuple[str, str]:
    """(model folder, description). A cached model is copied so a concurrent rebuild of the
    cache cannot change it between variants."""
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer, count_parameters

    src = None
    if requested:
        src = Path(requested)
    else:
        found = [Path(p) for p in glob.glob(CACHED_MODELS) if (Path(p) / "config.json").exists()
                 and any(Path(p).glob("*.safetensors"))]
        if found:
            src = max(found, key=lambda p: p.stat().st_mtime)
    dst = workdir / "model"
    if src is not None:
        shutil.copytree(src, dst)
        from backend.models import load_model
        model, _ = load_model(str(dst))
        return str(dst), (f"pre-trained tiny base `{src.name}` ({count_parameters(model):,} "
                          f"parameters, hidden {model.config.hidden_size}, "
                          f"{model.config.num_hidden_layers} layers)")
    tok = build_tokenizer()
    spec = TinyModelSpec()
    model = build_tiny_model(spec, tok, seed=seed)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return str(dst), (f"untrained `TinyModelSpec()` (random init, {count_parameters(model):,} "
                      f"parameters, hidden {spec.hidden_size}, {spec.num_layers} layers; no "
                      f"cached pre-trained base found under {CACHED_MODELS})")


def make_dataset(tokenizer, steps: int, seed: int):
    from backend.prompts import resolve_format
    from backend.stages.grpo import train_dataset
    from backend.tasks.addition import AdditionTask

    problems = AdditionTask().train_problems(steps * PROMPTS_PER_STEP, seed=seed + 7)
    return train_dataset(resolve_format("auto", tokenizer), problems, "en")


def stage_config(steps: int, seed: int):
    from backend.stages.grpo import GRPOStageConfig

    return GRPOStageConfig.from_dict({
        "steps": steps, "batch_size": BATCH, "num_generations": GROUP,
        "max_completion_length": MAX_COMPLETION, "learning_rate": 3e-5, "beta": 0.0,
        "reward_funcs": list(REWARDS), "reward_weights": list(WEIGHTS),
        "eval_every": 0, "seed": seed,
    })


def grpo_args(cfg, output_dir: Path):
    """The GRPO stage's own GRPOConfig, with saving off."""
    from backend.stages.grpo import grpo_args as stage_args

    from transformers.trainer_utils import SaveStrategy

    args = stage_args(cfg, output_dir)
    args.save_strategy = SaveStrategy.NO
    return args


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Step k's time = on_step_begin of step k to on_step_begin of step k+1 (the last step
        ends at on_train_end); also keeps every logged dict for the trajectory check."""

        def __init__(self):
            self.begins: list[float] = []
            self.end: float | None = None
            self.logs: dict[int, dict] = {}

        def on_step_begin(self, args, state, control, **kw):
            self.begins.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "train_runtime" not in logs:
                self.logs[state.global_step] = dict(logs)

        def periods(self) -> list[float]:
            marks = self.begins + [self.end]
            return [b - a for a, b in zip(marks, marks[1:])]

    return StepTimer()


def timed(callback, acc: dict):
    """Wrap a callback's event methods so the time spent in them adds up in acc["s"]."""
    for name in ("on_train_begin", "on_step_begin", "on_step_end", "on_log", "on_save"):
        method = getattr(callback, name, None)
        if method is None:
            continue

        def wrapper(*a, _m=method, **kw):
            t = time.perf_counter()
            try:
                return _m(*a, **kw)
            finally:
                acc["s"] += time.perf_counter() - t

        setattr(callback, name, wrapper)
    return callback


def timed_writer(base):
    """The real GroupWriter, also measuring its thread's CPU time (its loop is unchanged)."""

    class TimedGroupWriter(base):
        cpu_s = 0.0

        def _loop(self) -> None:
            t = time.thread_time()
            try:
                super()._loop()
            finally:
                self.cpu_s = time.thread_time() - t

    return TimedGroupWriter


# ------------------------------------------------------------------------------ one run
def run_variant(variant: str, label: str, cfg, model_path: str, workdir: Path) -> dict:
    from trl import GRPOTrainer

    from backend.models import load_model
    from backend.rewards import build_reward_functions
    from backend.stages.common import seed_everything

    seed_everything(cfg.seed)
    model, tokenizer = load_model(model_path)
    dataset = make_dataset(tokenizer, cfg.steps, cfg.seed)
    args = grpo_args(cfg, workdir / f"out-{label}")
    funcs = build_reward_functions(cfg.reward_funcs, cfg.reward_options())
    timer = step_timer()
    log = open(workdir / f"{label}.log", "w")
    out: dict = {"variant": variant, "label": label}

    if variant == "bare":
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[timer])
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(log):
            trainer.train()
        out["train_s"] = time.perf_counter() - t0
        out["cpu_s"] = time.process_time() - cpu0
        out["drain_s"] = 0.0
    else:
        from backend.stages import STAGE_KINDS
        from backend.stages.context import StageContext, attach_trainer
        from backend.stages.grpo import (GroupWriter, _recording_trainer_class, grpo_setters,
                                         steer_metrics_callback)
        from storage import StageSpec, Store
        from storage import records as r
        from storage.store import now

        db = workdir / f"{label}.db"
        store = Store(f"sqlite:///{db}")
        run = store.create_run(label, "r1-zero", "tiny", {},
                               [StageSpec("grpo", "grpo", cfg.to_dict())])
        stage_id = run.stages[0].id
        store.update_stage(stage_id, output_dir=str(workdir / f"out-{label}"))
        store.transition(stage_id, [r.QUEUED], r.RUNNING, pid=os.getpid(), heartbeat_at=now(),
                         started_at=now())
        ctx = StageContext(store, store.get_stage(stage_id), store.get_run(run.id),
                           STAGE_KINDS["grpo"])
        cb_time = {"s": 0.0}
        trainer = _recording_trainer_class()(
            model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer])
        writer = timed_writer(GroupWriter)(store, stage_id)
        hand_off = {"s": 0.0}

        def on_groups(step, batch, _put=writer):
            t = time.perf_counter()
            _put(step, batch)
            hand_off["s"] += time.perf_counter() - t

        trainer.on_groups = on_groups
        attach_trainer(ctx, trainer, grpo_setters(trainer))
        trainer.add_callback(steer_metrics_callback(ctx, trainer))
        for callback in trainer.callback_handler.callbacks:  # time the stage's own callbacks
            if type(callback).__name__ in ("WorkbenchCallback", "SteerMetrics"):
                timed(callback, cb_time)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log):
                trainer.train()
        finally:
            t1 = time.perf_counter()
            writer.close()
            ctx.close()
        out["drain_s"] = time.perf_counter() - t1
        out["train_s"] = time.perf_counter() - t0
        out["cpu_s"] = time.process_time() - cpu0
        # Where the Workbench's own work went (seconds over the whole run): store callbacks
        # and the hand-off on the training thread; the writer thread's CPU time.
        out["callback_s"] = cb_time["s"]
        out["hand_off_s"] = hand_off["s"]
        out["writer_cpu_s"] = writer.cpu_s
        # The benchmark must not pass by recording nothing.
        steps = store.group_steps(stage_id)
        per_step = {s: sum(len(g.rollouts) for g in store.step_groups(stage_id, s))
                    for s in steps}
        out["group_steps"] = steps
        out["rollouts_per_step"] = per_step
        out["metric_rows"] = len(store.metrics(stage_id))
        out["db_bytes"] = sum(p.stat().st_size for p in workdir.glob(f"{label}.db*"))
        store.dispose()
    log.close()
    out["periods"] = timer.periods()
    out["logs"] = timer.logs
    out["steps_run"] = trainer.state.global_step
    del trainer, model
    return out


# ------------------------------------------------------------------------------ statistics
def check_recorded(res: dict, steps: int) -> list[str]:
    problems = []
    if res["group_steps"] != list(range(1, steps + 1)):
        problems.append(f"{res['label']}: recorded steps {res['group_steps'][:5]}... "
                        f"({len(res['group_steps'])}), expected 1..{steps}")
    bad = {s: n for s, n in res["rollouts_per_step"].items() if n != BATCH}
    if bad:
        problems.append(f"{res['label']}: steps with != {BATCH} rollouts: {bad}")
    return problems


def trajectory_diff(a: dict, b: dict) -> float:
    """Largest absolute difference of the compared logged values over all steps."""
    worst = 0.0
    for step, la in a["logs"].items():
        lb = b["logs"].get(step, {})
        for k in TRAJECTORY_KEYS:
            if k in la and k in lb:
                worst = max(worst, abs(float(la[k]) - float(lb[k])))
            elif k in la or k in lb:
                return float("inf")
    if set(a["logs"]) != set(b["logs"]):
        return float("inf")
    return worst


def machine_info() -> dict:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "trl": trl.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ------------------------------------------------------------------------------ report
def summarize(results: list[dict], rounds: int, skip: int) -> dict:
    by = {"bare": [], "workbench": []}
    per_round = []
    for rnd in range(rounds):
        pair = {}
        for res in results:
            if res["round"] == rnd:
                pair[res["variant"]] = statistics.median(res["periods"][skip:])
        per_round.append(pair)
    for res in results:
        by[res["variant"]].extend(res["periods"][skip:])
    ratios = [p["workbench"] / p["bare"] for p in per_round]
    med = {v: statistics.median(xs) for v, xs in by.items()}
    return {
        "pooled": by, "median": med, "p90": {v: pct(xs, 0.9) for v, xs in by.items()},
        "per_round": per_round, "round_ratios": ratios,
        "ratio_rounds": statistics.median(ratios), "ratio_pooled": med["workbench"] / med["bare"],
    }


def mean_ms(runs: list[dict], key: str, steps: int) -> float:
    return statistics.fmean(r[key] for r in runs) / steps * 1000


def render(s: dict, results: list[dict], info: dict, args, model_desc: str, traj: dict,
           loads: tuple[str, str], wall_s: float) -> str:
    wb = [r for r in results if r["variant"] == "workbench"]
    bare = [r for r in results if r["variant"] == "bare"]
    met = s["ratio_rounds"] <= TARGET_RATIO
    cmd = f".venv/bin/python bench/bench_recording.py --steps {args.steps} --rounds {args.rounds}"
    if args.skip != 3:
        cmd += f" --skip {args.skip}"
    lines = [
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), torch "
        f"{info['torch']} ({info['torch_threads']} threads), trl {info['trl']}, transformers "
        f"{info['transformers']}, Python {info['python']}, SQLite {info['sqlite']}, "
        f"{info['platform']}; load average {loads[0]} at start, {loads[1]} at end (1/5/15 "
        f"min); {wall_s / 60:.1f} min in all.",
        "",
        f"Reproduce: `{cmd}`",
        "",
        f"Run: {model_desc}; {PROMPTS_PER_STEP} prompts x {GROUP} generations = {BATCH} "
        f"completions per step, {MAX_COMPLETION} completion tokens, lr 3e-5 constant, beta 0, "
        f"loss dapo, rewards accuracy + format (weights 1.0, 0.5), gradient checkpointing off, "
        f"CPU, {args.steps} steps per run, {args.rounds} rounds of bare then workbench; "
        f"the first {args.skip} steps of each run are warm-up and not counted. Step time = "
        f"`on_step_begin` to the next `on_step_begin` (generation, rewards, update, callbacks, "
        f"logging).",
        "",
        "| variant | median step s | p90 step s | steps measured | train() s per run (incl. writer drain) |",
        "|---|---|---|---|---|",
    ]
    for v, rs in (("bare `trl.GRPOTrainer`", bare), ("workbench (record + store)", wb)):
        key = "bare" if v.startswith("bare") else "workbench"
        lines.append(
            f"| {v} | {s['median'][key]:.3f} | {s['p90'][key]:.3f} | {len(s['pooled'][key])} | "
            + ", ".join(f"{r['train_s']:.1f}" for r in rs) + " |")
    lines += [
        "",
        "| ratio workbench / bare | value | target | met |",
        "|---|---|---|---|",
        f"| median over rounds of per-round ratios of medians | **{s['ratio_rounds']:.3f}** | "
        f"<= {TARGET_RATIO:.2f} | {'yes' if met else '**NO**'} |",
        f"| ratio of pooled medians | {s['ratio_pooled']:.3f} | (info) | |",
        "",
        "Per round (median step s, bare / workbench, ratio): "
        + "; ".join(f"round {i + 1}: {p['bare']:.3f} / {p['workbench']:.3f}, {q:.3f}"
                    for i, (p, q) in enumerate(zip(s["per_round"], s["round_ratios"]))) + ".",
        "",
        f"Recording check: every workbench run recorded all {args.steps} steps with {BATCH} "
        f"rollouts each (" + ", ".join(
            f"{len(r['group_steps'])} steps / {sum(r['rollouts_per_step'].values()):,} rollouts"
            for r in wb) + f"); metric rows per run {wb[0]['metric_rows']:,}; database "
        f"{wb[0]['db_bytes'] / 1e6:.1f} MB per run; writer queue drained "
        + ", ".join(f"{r['drain_s'] * 1000:.0f}" for r in wb) + " ms after `train()`.",
        "",
        "Where the workbench's own time goes, per step (mean over its runs): store callbacks "
        f"on the training thread (heartbeat + `pending_commands` at step end, `add_metrics` at "
        f"log and step begin) {mean_ms(wb, 'callback_s', args.steps):.1f} ms; handing the batch "
        f"to the writer {mean_ms(wb, 'hand_off_s', args.steps):.2f} ms; writer thread CPU "
        f"(`RecordedBatch.to_groups` + `add_groups`) {mean_ms(wb, 'writer_cpu_s', args.steps):.1f} ms. "
        f"Process CPU per step: bare {mean_ms(bare, 'cpu_s', args.steps):.0f} ms, workbench "
        f"{mean_ms(wb, 'cpu_s', args.steps):.0f} ms.",
        "",
        "Same trajectory: " + (
            f"the logged {', '.join(TRAJECTORY_KEYS)} of every step agree between the two "
            f"variants (largest difference {traj['max']:.2g}), so both did the same work."
            if traj["max"] < 1e-4 else
            f"the logged {', '.join(TRAJECTORY_KEYS)} differ between variants by up to "
            f"{traj['max']:.3g}: the runs did not train identically, so compare with care."),
    ]
    return "\n".join(lines)


def write_docs(body: str) -> None:
    write_section("bench_recording", SECTION_HEADING, body)


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="GRPO steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (bare, workbench)")
    ap.add_argument("--skip", type=int, default=3, help="warm-up steps per run not counted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="model folder (default: cached tiny base)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where databases and logs go (default: a temp folder, removed after)")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.steps <= args.skip + 1:
        ap.error("--steps must exceed --skip + 1")

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    transformers.logging.set_verbosity_error()

    t_start, load_start = time.perf_counter(), load()
    own_tmp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_recording_")) if own_tmp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model_path, model_desc = pick_model(workdir, args.model, args.seed)
        cfg = stage_config(args.steps, args.seed)
        print(f"model: {model_desc}\nworkdir: {workdir}\nload average: {load_start}", flush=True)
        results = []
        for rnd in range(args.rounds):
            for variant in ("bare", "workbench"):
                label = f"{variant}-{rnd + 1}"
                res = run_variant(variant, label, cfg, model_path, workdir)
                res["round"] = rnd
                results.append(res)
                ps = res["periods"][args.skip:]
                print(f"round {rnd + 1} {variant:9s}: median step {statistics.median(ps):.3f} s "
                      f"(p90 {pct(ps, 0.9):.3f}), train() {res['train_s']:.1f} s"
                      + f", cpu {res['cpu_s']:.1f} s"
                      + (f", drain {res['drain_s'] * 1000:.0f} ms, recorded "
                         f"{len(res['group_steps'])} steps; per step: store callbacks "
                         f"{res['callback_s'] / args.steps * 1000:.1f} ms, writer thread cpu "
                         f"{res['writer_cpu_s'] / args.steps * 1000:.1f} ms"
                         if variant == "workbench" else "")
                      + f"  [load {load()}]", flush=True)
        problems = []
        for res in results:
            if res["steps_run"] != args.steps or len(res["periods"]) != args.steps:
                problems.append(f"{res['label']}: ran {res['steps_run']} steps, timed "
                                f"{len(res['periods'])}")
            if res["variant"] == "workbench":
                problems += check_recorded(res, args.steps)
        ref = results[0]
        traj = {"max": max(trajectory_diff(ref, r) for r in results[1:])}
        s = summarize(results, args.rounds, args.skip)
        info = machine_info()
        body = render(s, results, info, args, model_desc, traj, (load_start, load()),
                      time.perf_counter() - t_start)
        print("\n" + body)
        if problems:
            print("\nFAILED checks:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        if not args.no_docs:
            write_docs(body)
            print(f"\nwritten to {DOCS}")
        return 0 if s["ratio_rounds"] <= TARGET_RATIO else 2
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

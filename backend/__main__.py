"""Headless CLI: the same operations the UI uses.

    python -m backend run --recipe pretrain-base --preset tiny --wait
    python -m backend clone RUN_ID [--set key=value] [--name N] [--wait]
    python -m backend rerun STAGE_ID --set key=value     # fix a failed stage's config, run it again
    python -m backend status RUN_ID --json
    python -m backend pause|resume|stop|checkpoint STAGE_ID
    python -m backend set STAGE_ID key=value ... [--yes]
    python -m backend export-rollouts RUN_ID --out rollouts.jsonl
    python -m backend export-dataset DATASET_ID --out data.jsonl
    python -m backend runs

Every verb takes ``--db URL`` (default: the store the UI uses, ``R1WB_DB_URL`` or
``workbench_data/workbench.db``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--db", default=None, help="SQLAlchemy URL of the store")
        return sp

    sp = verb("run", "create and start a run from a recipe")
    sp.add_argument("--recipe", required=True)
    sp.add_argument("--preset", default="tiny")
    sp.add_argument("--name", default=None)
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (kind.key=value for one stage kind)")
    sp.add_argument("--wait", action="store_true", help="block until the pipeline ends")
    sp = verb("clone", "start a new run with the configs of an earlier one")
    sp.add_argument("run_id", type=int)
    sp.add_argument("--name", default=None)
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--wait", action="store_true", help="block until the pipeline ends")
    sp = verb("rerun", "change a failed/stopped stage's config and run it again")
    sp.add_argument("stage_id", type=int)
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    required=True)
    sp = verb("status", "a run's status")
    sp.add_argument("run_id", type=int)
    sp.add_argument("--json", action="store_true")
    verb("runs", "list runs")
    for name, help_ in (("pause", "pause a stage at its next step"),
                        ("resume", "resume a paused stage, or restart one from its checkpoint"),
                        ("stop", "save a checkpoint and stop a stage"),
                        ("checkpoint", "save a checkpoint at the next step and go on")):
        verb(name, help_).add_argument("stage_id", type=int)
    sp = verb("set", "change parameters of a running stage at its next step")
    sp.add_argument("stage_id", type=int)
    sp.add_argument("values", nargs="+", metavar="KEY=VALUE")
    sp.add_argument("--yes", action="store_true",
                    help="send a change even if it looks risky (e.g. a 10x learning rate)")
    sp = verb("export-rollouts", "write every rollout of a run as jsonl")
    sp.add_argument("run_id", type=int)
    sp.add_argument("--out", required=True)
    sp = verb("export-dataset", "write a dataset's kept rows as jsonl")
    sp.add_argument("dataset_id", type=int)
    sp.add_argument("--out", required=True)
    # Internal verbs used by the background processes.
    sp = verb("_pipeline", argparse.SUPPRESS)
    sp.add_argument("--run", type=int, required=True)
    sp = verb("_worker", argparse.SUPPRESS)
    sp.add_argument("--stage", type=int, required=True)
    return p


def _print_status(status: dict) -> None:
    print(f"run {status['run_id']}: {status['status']}")
    for s in status["stages"]:
        total = f"/{s['total_steps']}" if s["total_steps"] else ""
        print(f"  stage {s['id']} {s['kind']:<10} {s['status']:<12} step {s['step']}{total}")
        if s["error"]:
            print("    error: " + s["error"].splitlines()[0])


def _wait(wb, run_id: int) -> int:
    last_states, last_print = None, 0.0
    while True:
        status = wb.run_status(run_id)
        states = [s["status"] for s in status["stages"]]
        # Progress to stderr: on every status change, else every 10 s.
        if states != last_states or time.time() - last_print > 10:
            line = " | ".join(f"{s['kind']} {s['status']} {s['step']}/{s['total_steps'] or '?'}"
                              for s in status["stages"])
            print(line, file=sys.stderr, flush=True)
            last_states, last_print = states, time.time()
        if status["status"] in ("completed", "failed", "stopped", "interrupted"):
            break
        time.sleep(1.0)
    for s in status["stages"]:
        summary = s.get("summary") or {}
        if "base" in summary and "final" in summary:  # the evaluate stage: before / after
            base, final = summary["base"], summary["final"]
            print(f"stage {s['id']} ({s['kind']}): held-out greedy pass@1 "
                  f"{base['greedy_pass@1']:.1%} (base) -> {final['greedy_pass@1']:.1%} (final), "
                  f"{summary.get('gain_points', 0):+.1f} points on {summary.get('problems', '?')}"
                  f" problems; think used {base['think_rate']:.1%} -> {final['think_rate']:.1%}")
        elif "accuracy" in summary:
            print(f"stage {s['id']} ({s['kind']}): held-out accuracy {summary['accuracy']:.1%} "
                  f"(strict, greedy, {summary.get('problems', '?')} problems), "
                  f"lenient {summary.get('accuracy_lenient', 0):.1%}, "
                  f"think used {summary.get('think_rate', 0):.1%}")
        if s["error"]:
            print(f"stage {s['id']} ({s['kind']}) {s['status']}: {s['error']}", file=sys.stderr)
    print(f"run {run_id}: {status['status']}")
    return 0 if status["status"] == "completed" else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "_pipeline":
        from backend.runner import pipeline_main
        return pipeline_main(args.db, args.run)
    if args.verb == "_worker":
        from backend.worker import main as worker_main
        return worker_main(args.db, args.stage)

    from backend.api import ConfigError, StoreError, Workbench, WorkbenchError
    from backend.recipes import parse_sets

    try:
        wb = Workbench(args.db)
        if args.verb == "run":
            run = wb.create_run(args.recipe, args.preset, parse_sets(args.sets), name=args.name)
            print(run.id, flush=True)
            return _wait(wb, run.id) if args.wait else 0
        if args.verb == "clone":
            run = wb.clone_run(args.run_id, parse_sets(args.sets), name=args.name)
            print(run.id, flush=True)
            return _wait(wb, run.id) if args.wait else 0
        if args.verb == "rerun":
            print(wb.rerun_stage(args.stage_id, parse_sets(args.sets)))
            return 0
        if args.verb == "status":
            status = wb.run_status(args.run_id)
            if args.json:
                print(json.dumps(status, indent=1, default=str))
            else:
                _print_status(status)
            return 0
        if args.verb == "runs":
            for run in wb.list_runs():
                print(f"{run.id}\t{run.status}\t{run.recipe}\t{run.name}\t{run.created_at:%Y-%m-%d %H:%M}")
            return 0
        if args.verb in ("pause", "resume", "stop", "checkpoint"):
            print(getattr(wb, args.verb)(args.stage_id))
            return 0
        if args.verb == "set":
            values = parse_sets(args.values)
            _, risks = wb.check_params(args.stage_id, values)
            if risks and not args.yes:
                for risk in risks:
                    print(f"risky: {risk}", file=sys.stderr)
                print("nothing sent; add --yes to send it anyway", file=sys.stderr)
                return 2
            print(wb.set_params(args.stage_id, values))
            return 0
        if args.verb == "export-rollouts":
            n = wb.export_rollouts(args.run_id, args.out)
            print(f"wrote {n} rollouts to {args.out}")
            return 0
        if args.verb == "export-dataset":
            n = wb.export_dataset(args.dataset_id, args.out)
            print(f"wrote {n} rows to {args.out}")
            return 0
    except (ConfigError, StoreError, WorkbenchError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

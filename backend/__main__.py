"""Headless CLI: the same operations the UI uses.

    python -m backend run --recipe pretrain-base --preset tiny --wait
    python -m backend clone RUN_ID [--set key=value] [--name N] [--wait]
    python -m backend rerun STAGE_ID --set key=value     # fix a failed stage's config, run it again
    python -m backend status RUN_ID --json
    python -m backend pause|resume|stop|checkpoint STAGE_ID
    python -m backend resume STAGE_ID --lose-progress    # its newest checkpoint is not here
    python -m backend set STAGE_ID key=value ... [--yes]
    python -m backend export-rollouts RUN_ID --out rollouts.jsonl
    python -m backend runs
    python -m backend eval CHECKPOINT [--task NAME | --dataset PATH] [--k 8] [--temperature 0.6]
        [--top-p 0.95] [--few-shot N|0,4] [--problems N] [--json]   # evaluate any model folder

Curation (every action of the curation page, scriptable):

    python -m backend datasets [RUN_ID]
    python -m backend rows DATASET [--status S] [--where key=value|key=low..high]... [--search T] [--json]
    python -m backend review DATASET --accept|--reject|--pending [filters] [--yes]
    python -m backend edit ROW --completion TEXT [--expect-version N] [--author NAME]
    python -m backend undo DATASET
    python -m backend mark-ready DATASET [--unready]
    python -m backend snapshots [DATASET]
    python -m backend export-dataset DATASET --out PATH [--format jsonl|parquet|hf] [--snapshot ID]
    python -m backend import-dataset PATH --name N [--parent DATASET]

Every verb takes ``--db URL`` (default: the store the UI uses, ``R1WB_DB_URL`` or
``workbench_data/workbench.db``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


LOSE_PROGRESS_HELP = ("restart even though the stage's newest checkpoint is not on this "
                      "machine: from the newest one here, or the start (refused otherwise)")


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
    sp.add_argument("--lose-progress", action="store_true", help=LOSE_PROGRESS_HELP)
    sp = verb("status", "a run's status")
    sp.add_argument("run_id", type=int)
    sp.add_argument("--json", action="store_true")
    verb("runs", "list runs")
    for name, help_ in (("pause", "pause a stage at its next step"),
                        ("resume", "resume a paused stage, or restart one from its checkpoint"),
                        ("stop", "save a checkpoint and stop a stage"),
                        ("checkpoint", "save a checkpoint at the next step and go on")):
        sp = verb(name, help_)
        sp.add_argument("stage_id", type=int)
        if name == "resume":
            sp.add_argument("--lose-progress", action="store_true", help=LOSE_PROGRESS_HELP)
    sp = verb("set", "change parameters of a running stage at its next step")
    sp.add_argument("stage_id", type=int)
    sp.add_argument("values", nargs="+", metavar="KEY=VALUE")
    sp.add_argument("--yes", action="store_true",
                    help="send a change even if it looks risky (e.g. a 10x learning rate)")
    sp = verb("export-rollouts", "write every rollout of a run as jsonl")
    sp.add_argument("run_id", type=int)
    sp.add_argument("--out", required=True)
    sp = verb("eval", "evaluate a model folder the way the R1 paper reports it (a run with "
                      "one evaluate stage, shown on the Evaluation page)")
    sp.add_argument("checkpoint", help="HF model folder (a run's checkpoint or any model)")
    source = sp.add_mutually_exclusive_group()
    source.add_argument("--task", default=None,
                        help="synthetic problems: addition (default) or addition:MIN-MAX")
    source.add_argument("--dataset", default=None,
                        help="jsonl / parquet / csv / HF folder (its test split is scored)")
    sp.add_argument("--k", type=int, default=8, help="samples per problem (default 8)")
    sp.add_argument("--temperature", type=float, default=0.6)
    sp.add_argument("--top-p", type=float, default=0.95)
    sp.add_argument("--few-shot", default="0",
                    help="worked examples in the prompt; 0,4 scores both templates")
    sp.add_argument("--problems", type=int, default=None, help="held-out problems to score")
    sp.add_argument("--max-new-tokens", type=int, default=None)
    sp.add_argument("--backend", choices=("hf", "vllm"), default=None,
                    help="generation backend (default hf; vllm needs requirements-vllm.txt)")
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="any other evaluate setting (prompt_column=problem, ...)")
    sp.add_argument("--json", action="store_true", help="print the figures as JSON")
    _curation_verbs(verb)
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
            for s in status["stages"]:  # a stage waiting for review says what it waits for
                waiting_for = (s.get("summary") or {}).get("waiting_for_dataset")
                if s["status"] == "waiting" and waiting_for is not None:
                    print(f"stage {s['id']} waits for review of dataset {waiting_for}: "
                          f"python -m backend rows {waiting_for}; review ... --yes; "
                          f"mark-ready {waiting_for}", file=sys.stderr, flush=True)
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


def _eval(wb, args, parse_sets) -> int:
    """The ``eval`` verb: create the run, wait for it (progress on stderr), print figures."""
    run = wb.evaluate_checkpoint(
        args.checkpoint, task=args.task, dataset=args.dataset, k=args.k,
        temperature=args.temperature, top_p=args.top_p, few_shot=args.few_shot,
        problems=args.problems, max_new_tokens=args.max_new_tokens,
        sets={**parse_sets(args.sets),
              **({"generation_backend": args.backend} if args.backend else {})})
    print(f"evaluation run {run.id} started", file=sys.stderr, flush=True)
    last = None
    while True:
        stage = wb.run_status(run.id)["stages"][0]
        line = f"{stage['status']} {stage['step']}/{stage['total_steps'] or '?'}"
        if line != last:
            print(f"eval {line}", file=sys.stderr, flush=True)
            last = line
        if stage["status"] in ("completed", "failed", "stopped", "interrupted"):
            break
        time.sleep(1.0)
    report = wb.eval_report(run.id)
    if stage["status"] != "completed":
        print(f"error: evaluation {stage['status']}: {stage['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        k = report["k"]
        for template, m in report["templates"].items():
            print(f"{template}: greedy pass@1 {m['greedy_pass@1']:.1%}, pass@1 "
                  f"{m['pass@1']:.1%} (mean of {k}), cons@{k} {m['cons@k']:.1%}, pass@{k} "
                  f"{m['pass@k']:.1%}, format {m['format']:.1%}, language "
                  f"{m['language']:.1%}, reasoning {m['reasoning_chars']:.0f} chars")
        print(f"{report['n_problems']} problems of {report['dataset']} ({report['split']}); "
              f"run {run.id}, stage {report['stage_id']} (Evaluation page: ?stage="
              f"{report['stage_id']})")
    return 0


# ------------------------------------------------------------------------------ curation verbs
def _filter_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--status", action="append", default=[],
                    help="pending | accepted | rejected | edited (repeat for any of them)")
    sp.add_argument("--source", default=None, help="reasoning | non_reasoning | ...")
    sp.add_argument("--prompt", default=None, help="exactly this prompt (all its candidates)")
    sp.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                    help="a provenance field: key=value, key=a|b, key=low..high (inclusive, "
                         "either end optional); nested as rule_scores.accuracy=1")
    sp.add_argument("--search", default=None, help="keyword in prompt, completion or answer")
    sp.add_argument("--row", dest="row_ids", action="append", type=int, default=None,
                    metavar="ROW_ID", help="only these rows (repeat)")


def _curation_verbs(verb) -> None:
    sp = verb("datasets", "list datasets with their review queues")
    sp.add_argument("run_id", type=int, nargs="?")
    sp = verb("rows", "list a dataset's rows through filters")
    sp.add_argument("dataset_id", type=int)
    _filter_args(sp)
    sp.add_argument("--sort", default="row_index",
                    help="row_index | status | version | chars | any provenance field")
    sp.add_argument("--desc", action="store_true", help="sort descending")
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--json", action="store_true", help="one JSON object per row")
    sp = verb("review", "accept / reject every row a filter matches (asks for --yes)")
    sp.add_argument("dataset_id", type=int)
    action = sp.add_mutually_exclusive_group(required=True)
    for flag, status in (("--accept", "accepted"), ("--reject", "rejected"),
                         ("--pending", "pending")):
        action.add_argument(flag, dest="to_status", action="store_const", const=status)
    _filter_args(sp)
    sp.add_argument("--yes", action="store_true", help="apply (without it: only the count)")
    sp.add_argument("--author", default=None, help="recorded with the change (default: OS user)")
    sp = verb("edit", "edit a row's completion / prompt / answer in place")
    sp.add_argument("row_id", type=int)
    for field in ("completion", "prompt", "answer"):
        sp.add_argument(f"--{field}", default=None, metavar="TEXT",
                        help=f"new {field} ('-' reads it from stdin)")
    sp.add_argument("--expect-version", type=int, default=None, metavar="N",
                    help="refuse the edit if the row changed since version N")
    sp.add_argument("--author", default=None)
    sp = verb("undo", "undo a dataset's newest curation action")
    sp.add_argument("dataset_id", type=int)
    sp.add_argument("--author", default=None)
    sp = verb("mark-ready", "mark a dataset reviewed: a waiting SFT stage starts training")
    sp.add_argument("dataset_id", type=int)
    sp.add_argument("--unready", action="store_true", help="take the mark back")
    sp.add_argument("--author", default=None)
    sp = verb("snapshots", "list frozen training snapshots")
    sp.add_argument("dataset_id", type=int, nargs="?")
    sp = verb("export-dataset", "write a dataset's accepted rows (or a snapshot) with provenance")
    sp.add_argument("dataset_id", type=int)
    sp.add_argument("--out", required=True,
                    help="inside the data folder; a relative path goes to <data>/exports/")
    sp.add_argument("--format", default="jsonl", choices=("jsonl", "parquet", "hf"))
    sp.add_argument("--snapshot", default=None, help="a snapshot id or content-hash prefix")
    sp.add_argument("--status", default="accepted",
                    help="accepted (default) | pending | rejected | edited | all")
    sp = verb("import-dataset", "import a jsonl / parquet / HF folder as a new dataset")
    sp.add_argument("path")
    sp.add_argument("--name", required=True)
    sp.add_argument("--parent", type=int, default=None,
                    help="the dataset this file is a new version of")
    sp.add_argument("--allow-extra-columns", action="store_true",
                    help="keep unknown columns as provenance instead of refusing the file")


def _row_filter(wb, args):
    return wb.make_filter(status=args.status or None, source=args.source, prompt=args.prompt,
                          search=args.search, where=args.where, row_ids=args.row_ids)


def _one_line(text, width: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _curation(wb, args):
    """Run a curation verb; None when ``args.verb`` is not one."""
    if args.verb == "datasets":
        for ds in wb.datasets(args.run_id):
            q = wb.queue_counts(ds.id)
            print(f"{ds.id}	{ds.name}	{ds.kind}	run {ds.run_id or '-'}	{ds.size} rows	"
                  f"pending {q['pending']} accepted {q['accepted']} rejected {q['rejected']} "
                  f"edited {q['edited']}	{'ready' if ds.ready else 'in review'}")
        return 0
    if args.verb == "rows":
        rows = wb.curation_rows(args.dataset_id, _row_filter(wb, args), sort=args.sort,
                                descending=args.desc, limit=args.limit, offset=args.offset)
        for row in rows:
            if args.json:
                print(json.dumps({"id": row.id, "row_index": row.row_index, "status": row.status,
                                  "edited": row.edited, "version": row.version,
                                  "prompt": row.prompt, "completion": row.completion,
                                  "answer": row.answer, "source": row.source, "meta": row.meta},
                                 ensure_ascii=False, default=str))
            else:
                print(f"{row.id}	#{row.row_index}	{row.status}{'*' if row.edited else ''}	"
                      f"v{row.version}	{_one_line(row.prompt, 30)}	"
                      f"{_one_line(row.completion, 70)}")
        if not args.json:
            print(f"{len(rows)} rows", file=sys.stderr)
        return 0
    if args.verb == "review":
        flt = _row_filter(wb, args)
        preview = wb.bulk_review(args.dataset_id, flt, args.to_status, dry_run=True)
        print(preview.describe())
        if not args.yes:
            print("nothing changed; add --yes to apply", file=sys.stderr)
            return 2
        done = wb.bulk_review(args.dataset_id, flt, args.to_status, author=args.author)
        print(done.describe() + " (undo: python -m backend undo %d)" % args.dataset_id)
        return 0
    if args.verb == "edit":
        changes = {f: getattr(args, f) for f in ("completion", "prompt", "answer")
                   if getattr(args, f) is not None}
        if not changes:
            print("error: give --completion, --prompt or --answer", file=sys.stderr)
            return 2
        version = args.expect_version
        for field, value in changes.items():
            if value == "-":
                value = sys.stdin.read()
            row = wb.edit_row(args.row_id, field, value, expected_version=version,
                              author=args.author)
            version = None if version is None else row.version
        print(f"row {row.id} (#{row.row_index}) is now version {row.version}")
        return 0
    if args.verb == "undo":
        done = wb.undo(args.dataset_id, author=args.author)
        print(done or "nothing to undo")
        return 0
    if args.verb == "mark-ready":
        ds = wb.mark_ready(args.dataset_id, not args.unready, author=args.author)
        print(f"dataset {ds.id} ({ds.name}) is "
              + (f"ready ({wb.queue_counts(ds.id)['accepted']} accepted rows)" if ds.ready
                 else "back in review"))
        return 0
    if args.verb == "snapshots":
        for snap in wb.snapshots(args.dataset_id):
            print(f"{snap.id}	dataset {snap.dataset_id}	stage {snap.stage_id or '-'}	"
                  f"{snap.size} rows	{snap.content_hash}	{snap.created_at:%Y-%m-%d %H:%M}")
        return 0
    if args.verb == "export-dataset":
        status = None if args.status == "all" else args.status
        result = wb.export_dataset(args.dataset_id, args.out, fmt=args.format,
                                   snapshot=args.snapshot, status=status)
        print(f"wrote {result.rows} rows to {result.path}")
        return 0
    if args.verb == "import-dataset":
        ds = wb.import_dataset(args.path, args.name, parent=args.parent,
                               allow_extra=args.allow_extra_columns)
        print(f"{ds.id}	{ds.name}: {ds.size} rows imported"
              + (f" as a new version of dataset {ds.parent_id}" if ds.parent_id else ""))
        return 0
    return None


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
            print(wb.rerun_stage(args.stage_id, parse_sets(args.sets),
                                 lose_progress=args.lose_progress))
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
        if args.verb == "resume":
            print(wb.resume(args.stage_id, lose_progress=args.lose_progress))
            return 0
        if args.verb in ("pause", "stop", "checkpoint"):
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
        if args.verb == "eval":
            return _eval(wb, args, parse_sets)
        if args.verb == "export-rollouts":
            n = wb.export_rollouts(args.run_id, args.out)
            print(f"wrote {n} rollouts to {args.out}")
            return 0
        code = _curation(wb, args)
        if code is not None:
            return code
    except (ConfigError, StoreError, WorkbenchError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

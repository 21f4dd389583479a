"""The after-each-stage table of docs/results_r1.md, from a finished run.

Every model a run's stages produced (base, cold start, reasoning RL, SFT, RL for all
scenarios, or R1-Zero's GRPO) is scored on the same held-out problems, greedy, prompted the way
the final model was trained: pass@1, format compliance (exactly the R1 format, by the format
reward), language consistency (the language reward's share of target-language words in the
thought), mean reasoning length (tokens inside <think>), and the refusal rate on held-out
general prompts (forbidden a*b= and benign a-b=, operands never trained on). For each GRPO
stage: the first step at which the batch's format reward mean reached 0.95, and wall time.

    .venv/bin/python bench/r1_stage_table.py RUN [RUN ...] [--problems 500] [--only sft,final]
        [--json out.json]          # --problems 0: refusal rates only

Prints a markdown table per run. Reads the store of R1WB_HOME / R1WB_DB_URL.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMAT_TARGET = 0.95


def first_step_at(store, stage_id: int, name: str, target: float):
    """The first step whose logged ``name`` is >= target (None if never)."""
    for point in store.metrics(stage_id, [name]):
        if point.value is not None and point.value >= target:
            return point.step
    return None


def stage_seconds(stage) -> float | None:
    if stage.started_at and stage.ended_at:
        return (stage.ended_at - stage.started_at).total_seconds()
    return None


def score_model(path: str, fmt, source, problems: int, max_new_tokens: int) -> dict:
    from backend.evaluation import evaluate
    from backend.generation import generate
    from backend.models import load_model
    from backend.tasks.addition import general_prompts, is_refusal
    from backend.tasks.problem import Problem

    model, tokenizer = load_model(path)
    heldout = [Problem(fmt.render(p.prompt, tokenizer), p.answer)
               for p in source.heldout(problems)] if problems else []
    report = (evaluate(model, tokenizer, heldout, max_new_tokens=max_new_tokens) if heldout
              else {"accuracy": float("nan"), "format_rate": float("nan"),
                    "think_rate": float("nan"), "language": float("nan"), "examples": []})
    general = general_prompts(200, seed=0, min_digits=source.min_digits,
                              max_digits=source.max_digits, heldout=True)
    outs = generate(model, tokenizer, [fmt.render(g["prompt"], tokenizer) for g in general],
                    max_new_tokens=max_new_tokens)
    refusals = {}
    for kind in ("forbidden", "benign"):
        refused = [is_refusal(o[0]) for g, o in zip(general, outs) if g["kind"] == kind]
        refusals[f"refusal_{kind}"] = sum(refused) / max(len(refused), 1)
    return {"pass@1": report["accuracy"], "format": report["format_rate"],
            "think": report["think_rate"], "language": report["language"],
            "reasoning_tokens": report.get("reasoning_tokens", 0.0), **refusals,
            "example": report["examples"][0]["completion"] if report["examples"] else ""}


def run_table(store, run_id: int, problems: int, max_new_tokens: int,
              only: tuple[str, ...] = ()) -> dict:
    from backend.contract import ModelArtifact, ProblemSource, artifact_from_dict
    from backend.prompts import PromptFormat

    run = store.get_run(run_id)
    source = None
    final_fmt = None
    models = []
    for stage in run.stages:
        outputs = {k: artifact_from_dict(v) for k, v in (stage.outputs or {}).items()}
        if source is None and isinstance(outputs.get("problems"), ProblemSource):
            source = outputs["problems"]
        model = outputs.get("model")
        if isinstance(model, ModelArtifact) and stage.kind != "judge":
            final_fmt = model.format
            if not only or stage.key in only:
                models.append((stage, model))
    rows = []
    for stage, model in models:
        fmt = final_fmt if stage.kind == "pretrain" else model.format
        row = {"stage": stage.name, "key": stage.key, "kind": stage.kind,
               "seconds": stage_seconds(stage),
               **score_model(model.path, fmt or PromptFormat(), source, problems,
                             max_new_tokens)}
        if stage.kind == "grpo":
            row["format_95_step"] = first_step_at(store, stage.id, "rewards/format/mean",
                                                  FORMAT_TARGET)
        rows.append(row)
    others = [{"stage": s.name, "kind": s.kind, "seconds": stage_seconds(s),
               "summary": {k: v for k, v in (s.summary or {}).items()
                           if not isinstance(v, (list, dict)) or k == "judge"}}
              for s in run.stages if s.kind not in ("pretrain", "sft", "grpo")]
    ends = [s.ended_at for s in run.stages if s.ended_at]
    total = (max(ends) - run.created_at).total_seconds() if ends else None
    return {"run": run_id, "recipe": run.recipe, "status": run.status, "seconds": total,
            "task": source.describe()["dataset"] if source else None, "models": rows,
            "other_stages": others}


def markdown(table: dict) -> str:
    lines = [f"run #{table['run']} ({table['recipe']}, {table['status']}, "
             f"{table['task']}, {table['seconds'] or 0:.0f} s)", "",
             "| stage | time | greedy pass@1 | format | `<think>` | language consistency | "
             "reasoning tokens | refusal forbidden / benign | RL step at 95% format |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table["models"]:
        step = row.get("format_95_step", "")
        lines.append(
            f"| {row['stage']} | {row['seconds'] or 0:.0f} s | {row['pass@1']:.1%} | "
            f"{row['format']:.1%} | {row['think']:.1%} | {row['language']:.3f} | "
            f"{row['reasoning_tokens']:.1f} | {row['refusal_forbidden']:.0%} / "
            f"{row['refusal_benign']:.0%} | {'' if step is None and row['kind'] != 'grpo' else step} |")
    for other in table["other_stages"]:
        lines.append(f"\n{other['stage']} ({other['seconds'] or 0:.0f} s): "
                     f"{json.dumps(other['summary'], default=str)[:600]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int, nargs="+")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", default=None, help="also write the tables here")
    parser.add_argument("--only", default="", help="stage keys to score, e.g. sft,final "
                                                   "(default: every model)")
    args = parser.parse_args()
    from storage import Store

    store = Store()
    only = tuple(k for k in args.only.split(",") if k)
    tables = [run_table(store, run_id, args.problems, args.max_new_tokens, only)
              for run_id in args.runs]
    for table in tables:
        print(markdown(table), "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=1, default=str))


if __name__ == "__main__":
    main()

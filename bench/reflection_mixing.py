"""Findings (e) "aha" and R1's language mixing, in miniature: read finished r1-zero runs and
print the numbers docs/results.md and docs/results_r1.md quote.

    # (e) the reflection rate during R1-Zero GRPO (base corpus: 5% reflection traces)
    .venv/bin/python -m backend run --recipe r1-zero --preset tiny --wait
    .venv/bin/python bench/reflection_mixing.py RUN_ID

    # language mixing: the two-script base, R1-Zero without and with the language reward
    .venv/bin/python -m backend run --recipe r1-zero --preset tiny --set second_script_share=0.3 --wait
    .venv/bin/python -m backend run --recipe r1-zero --preset tiny --set second_script_share=0.3 \\
        --set grpo.reward_funcs=accuracy,format,language_consistency --set grpo.reward_weights=1,0.5,0.5 --wait
    .venv/bin/python bench/reflection_mixing.py RUN_A RUN_B

For each run: the GRPO stage's logged ``reflection_rate`` (and ``language_mixing_rate``),
mean of the first and of the last 10 steps (sampled at the stage's temperature); then the base
and the final model answer every held-out problem greedily, scored per target language:
accuracy (strict), <think> rate, reflection rate, and among answers with <think>: the
mixed-script CoT rate, the off-target CoT rate (language consistency < 1) and the mean language
consistency (digits count as the en script, as the task says). ``--json`` prints the same as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.api import Workbench  # noqa: E402


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def logged(wb: Workbench, stage_id: int, name: str, window: int = 10) -> dict:
    steps, values = wb.metric_series(stage_id, name)
    return {"first": _mean(values[:window]), "last": _mean(values[-window:]), "steps": len(steps)}


_SCORED: dict = {}  # two runs on one base score that base once


def greedy(model_path: str, problems, max_new_tokens: int, markers) -> dict:
    """Greedy answers to ``problems``, scored per target language (and ``all``)."""
    key = (model_path, len(problems), max_new_tokens, tuple(markers))
    if key not in _SCORED:
        _SCORED[key] = _greedy(model_path, problems, max_new_tokens, markers)
    return _SCORED[key]


def _greedy(model_path: str, problems, max_new_tokens: int, markers) -> dict:
    from backend.generation import generate
    from backend.models import load_model
    from backend.rewards import is_correct
    from backend.rewards.extract import split_think_answer
    from backend.rewards.language import language_consistency, mixes_scripts
    from backend.rewards.reflection import count_reflections

    model, tokenizer = load_model(model_path)
    model.eval()
    texts = [c[0] for c in generate(model, tokenizer, [p.prompt for p in problems],
                                    max_new_tokens=max_new_tokens)]
    rows = []
    for p, text in zip(problems, texts):
        think = split_think_answer(text)[0]
        language = p.meta.get("language", "en")
        consistency = language_consistency([p.prompt], [text], language=language,
                                           digit_language=p.meta.get("digit_language"))[0]
        rows.append({"language": language, "correct": bool(is_correct(text, p.answer)),
                     "think": think is not None,
                     "reflection": count_reflections(text, markers) > 0,
                     "mixed": think is not None and mixes_scripts(think),
                     "consistency": consistency})
    out = {}
    for language in ["all"] + sorted({r["language"] for r in rows}):
        part = [r for r in rows if language in ("all", r["language"])]
        out[language] = {
            "problems": len(part),
            "accuracy": _mean([r["correct"] for r in part]),
            "think_rate": _mean([r["think"] for r in part]),
            "reflection_rate": _mean([r["reflection"] for r in part]),
            # Language is a property of the chain of thought: among answers with <think>.
            "mixing_rate": _mean([r["mixed"] for r in part if r["think"]]),
            "off_target_rate": _mean([r["consistency"] < 1 for r in part if r["think"]]),
            "consistency": _mean([r["consistency"] for r in part if r["think"]]),
        }
    return out


def report(wb: Workbench, run_id: int) -> dict:
    from backend.contract import ProblemSource

    run = wb.get_run(run_id)
    grpo = next(s for s in run.stages if s.kind == "grpo")
    base = next(s for s in run.stages if s.kind == "pretrain")
    cfg = grpo.config
    source = ProblemSource.from_dict(grpo.outputs["problems"])
    problems = source.heldout()  # every held-out problem (500 on the tiny preset)
    markers = cfg.get("reflection_markers") or ["wait", "check:", "verify", "let me check"]
    n_tokens = cfg.get("max_completion_length", 40)
    seconds = {s.key: ((s.ended_at - s.started_at).total_seconds()
                       if s.started_at and s.ended_at else None) for s in run.stages}
    return {
        "run": run_id, "base_config": {k: base.config.get(k) for k in
                                       ("reflection_share", "second_script_share", "steps")},
        "grpo_config": {k: cfg.get(k) for k in ("steps", "reward_funcs", "reward_weights",
                                                "max_completion_length", "temperature")},
        "seconds": seconds,
        "train_reflection_rate": logged(wb, grpo.id, "reflection_rate"),
        "train_reflection_markers": logged(wb, grpo.id, "reflection_markers"),
        "train_mixing_rate": logged(wb, grpo.id, "language_mixing_rate"),
        "base": greedy(base.outputs["model"]["path"], problems, n_tokens, markers),
        "final": greedy(grpo.outputs["model"]["path"], problems, n_tokens, markers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_ids", type=int, nargs="+")
    parser.add_argument("--db", default=None, help="store URL (default: the data home's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wb = Workbench(args.db) if args.db else Workbench()
    reports = [report(wb, run_id) for run_id in args.run_ids]
    if args.json:
        print(json.dumps(reports, indent=1))
        return
    for r in reports:
        print(f"run {r['run']}: base {r['base_config']}, grpo {r['grpo_config']}, "
              f"seconds {r['seconds']}")
        for key in ("train_reflection_rate", "train_reflection_markers", "train_mixing_rate"):
            v = r[key]
            print(f"  {key}: first 10 steps {v['first']:.3f} -> last 10 {v['last']:.3f} "
                  f"({v['steps']} steps)")
        for language in r["final"]:
            b, f = r["base"][language], r["final"][language]
            print(f"  held-out greedy, target {language} ({f['problems']} problems):")
            for k in ("accuracy", "think_rate", "reflection_rate", "mixing_rate",
                      "off_target_rate", "consistency"):
                print(f"    {k:16s} base {b[k]:.3f} -> final {f[k]:.3f}")


if __name__ == "__main__":
    main()

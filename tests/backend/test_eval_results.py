"""Per-problem evaluation results: what the evaluate stage stores for every scored completion,
read back through the store and the API the Evaluation and Compare pages use. Completions are
written by hand and scored by the real scoring code (no model)."""
from __future__ import annotations

import pytest

from backend.api import Workbench
from backend.evaluation import score_completions
from backend.stages.evaluate import EvaluateConfig, _metrics, _sample_rows
from backend.tasks.problem import Problem
from storage.records import StageSpec


def tagged(answer: str) -> str:
    return f"<think>1+2</think><answer>{answer}</answer>"


PROBLEMS = [Problem("12+30=", "42"), Problem("5+5=", "10"), Problem("7+8=", "15")]
# k = 4 samples per problem, and the greedy answer
SAMPLED = [
    [tagged("42"), tagged("42.0"), tagged("41"), tagged("42")],  # majority right (3 votes)
    [tagged("11"), tagged("10"), tagged("11"), "no idea"],  # majority 11 wrong: failed
    [tagged("15"), tagged("15"), tagged("15"), tagged("15")],
]
GREEDY = [[tagged("42")], [tagged("11")], [tagged("15")]]


def finished_eval_stage(wb: Workbench, templates=("0-shot",)) -> int:
    """An evaluate stage stored as the stage stores its results (figures and samples)."""
    run = wb.store.create_run("eval", "evaluate", "tiny", {}, [
        StageSpec("evaluate", "evaluation", EvaluateConfig(k=4).to_dict(), "eval")])
    stage_id = run.stages[0].id
    models = {}
    for template in templates:
        greedy = score_completions(PROBLEMS, GREEDY, k=1)
        sampled = score_completions(PROBLEMS, SAMPLED, k=4)
        models.setdefault("final", {})[template] = {
            "model_path": "/m", "template": template, **_metrics(greedy, sampled, 4)}
        wb.store.add_eval_samples(stage_id, _sample_rows("final", template, PROBLEMS,
                                                         greedy, sampled))
    wb.store.update_stage(stage_id, status="completed", summary={
        "dataset": "synthetic addition (1-3 digits)", "split": "held-out", "problems": 3,
        "k": 4, "temperature": 0.6, "top_p": 0.95, "final": models["final"][templates[0]],
        "models": models})
    return stage_id


def test_every_sample_is_stored_with_answer_correctness_and_vote(db_url):
    wb = Workbench(db_url)
    stage_id = finished_eval_stage(wb)
    rows = wb.eval_samples(stage_id)
    assert len(rows) == 3 * (1 + 4)  # per problem: the greedy answer and k samples
    second = [s for s in rows if s.problem_index == 1]
    assert [(s.greedy, s.sample_index, s.extracted, s.correct, s.cluster) for s in second] == [
        (True, 0, "11", False, None),
        (False, 0, "11", False, 0), (False, 1, "10", True, 1), (False, 2, "11", False, 0),
        (False, 3, None, False, None)]
    assert second[4].completion == "no idea" and second[0].prompt == "5+5="
    assert second[0].reference == "10" and second[0].model == "final"


def test_failed_only_keeps_the_problems_whose_majority_is_wrong(db_url):
    wb = Workbench(db_url)
    stage_id = finished_eval_stage(wb)
    failed = wb.eval_samples(stage_id, failed_only=True)
    assert {s.problem_index for s in failed} == {1} and len(failed) == 5
    problems = wb.eval_problems(stage_id, "final", "0-shot")
    assert [(p["n_correct"], p["majority"], p["failed"]) for p in problems] == [
        (3, "42", False), (1, "11", True), (4, "15", False)]
    assert wb.eval_problems(stage_id, failed_only=True)[0]["votes"] == [
        {"cluster": 0, "answer": "11", "count": 2, "correct": False, "samples": [0, 2]},
        {"cluster": 1, "answer": "10", "count": 1, "correct": True, "samples": [1]}]


def test_eval_summary_per_model_and_template(db_url):
    wb = Workbench(db_url)
    stage_id = finished_eval_stage(wb, templates=("0-shot", "2-shot"))
    summary = wb.eval_summary(stage_id)
    assert list(summary) == ["final"] and list(summary["final"]) == ["0-shot", "2-shot"]
    m = summary["final"]["0-shot"]
    assert m["pass@1"] == pytest.approx((3 / 4 + 1 / 4 + 1) / 3)
    assert m["greedy_pass@1"] == pytest.approx(2 / 3)
    assert m["cons@k"] == pytest.approx(2 / 3)
    assert m["pass@k"] == 1.0  # every problem has a correct sample among its 4
    assert m["format"] == pytest.approx(11 / 12)  # "no idea" is the one unformatted sample
    assert (m["k"], m["n_problems"], m["top_p"]) == (4, 3, 0.95)
    assert "examples" not in m
    report = wb.eval_report(wb.get_stage(stage_id).run_id)
    assert {"pass@1", "greedy_pass@1", "cons@k", "pass@k", "k", "n_problems", "format",
            "dataset", "language", "reasoning_chars"} <= set(report)
    assert list(report["templates"]) == ["0-shot", "2-shot"]


def test_a_rerun_replaces_the_stored_samples(db_url):
    wb = Workbench(db_url)
    stage_id = finished_eval_stage(wb)
    wb.store.clear_eval_samples(stage_id)
    assert wb.eval_samples(stage_id) == []


def test_summaries_from_before_templates_still_read(db_url):
    # An evaluate stage finished by an older version has only base / final figures.
    wb = Workbench(db_url)
    run = wb.store.create_run("old", "r1-zero", "tiny", {}, [
        StageSpec("evaluate", "evaluation", EvaluateConfig().to_dict(), "eval")])
    wb.store.update_stage(run.stages[0].id, status="completed", summary={
        "k": 4, "problems": 500, "base": {"greedy_pass@1": 0.3}, "final": {"greedy_pass@1": 0.9}})
    summary = wb.eval_summary(run.stages[0].id)
    assert summary["final"]["0-shot"]["greedy_pass@1"] == 0.9
    assert summary["base"]["0-shot"]["n_problems"] == 500


def test_the_evaluate_recipe_asks_for_a_model_folder(db_url, tiny_model_dir):
    # The Runs page shows the recipe's form (defaults are not wiring-checked) ...
    wb = Workbench(db_url)
    [spec] = wb.default_stages("evaluate", "tiny")
    assert (spec.config["model_path"], spec.config["task"], spec.config["k"]) == ("", "addition", 4)
    # ... a run without a model is refused, naming the setting ...
    from backend.api import ConfigError
    with pytest.raises(ConfigError, match="evaluate.model_path"):
        wb.create_run("evaluate", "tiny", start=False)
    with pytest.raises(ConfigError, match="evaluate.model_path"):
        wb.create_run("evaluate", "tiny", stage_configs=[spec.config], start=False)
    # ... and the form's config with a model folder makes one.
    run = wb.create_run("evaluate", "tiny", start=False,
                        stage_configs=[{**spec.config, "model_path": tiny_model_dir}])
    assert run.stages[0].config["model_path"] == tiny_model_dir and run.stages[0].inputs == {}

"""The Evaluation page (AppTest) on an evaluate stage stored by hand the way the stage stores
it: the summary per model x template, the failed problems, and a failed problem's k samples
with their extracted answers, correctness and vote clusters. Nothing trains."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench
from tests.backend.test_eval_results import finished_eval_stage

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def stage_id(home, monkeypatch) -> int:
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return finished_eval_stage(Workbench(), templates=("0-shot", "2-shot"))


def page(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("pages/evaluation.py")
    return at.run()


def frames(at: AppTest):
    return [df.value for df in at.dataframe]


def test_summary_has_a_row_per_model_and_template(stage_id):
    at = page(stage=str(stage_id))
    assert not at.exception, at.exception
    summary = frames(at)[0]
    assert list(zip(summary["model"], summary["template"])) == [("final", "0-shot"),
                                                               ("final", "2-shot")]
    row = summary.iloc[0]
    assert row["greedy pass@1"] == "66.7%" and row["cons@4"] == "66.7%"
    assert row["pass@1 (mean of 4)"] == "66.7%" and row["pass@4"] == "100.0%"


def test_a_failed_problem_shows_its_samples_and_how_they_voted(stage_id):
    at = page(stage=str(stage_id))
    at.toggle(key="eval_failed").set_value(True).run()
    assert not at.exception, at.exception
    problems = frames(at)[1]
    assert list(problems["problem"]) == ["5+5="]  # the one problem whose majority was wrong
    assert problems.iloc[0]["majority"] == "11" and problems.iloc[0]["correct"] == "1/4"
    votes, samples = frames(at)[2], frames(at)[3]
    assert list(zip(votes["answer"], votes["count"], votes["correct"])) == [
        ("11", 2, False), ("10", 1, True), ("(no answer)", 1, False)]
    assert list(samples["sample"]) == ["greedy", "0", "1", "2", "3"]
    assert list(samples["extracted"])[1:] == ["11", "10", "11", "(no answer)"]
    assert list(samples["correct"])[1:] == [False, True, False, False]
    assert list(samples["vote"])[1:4] == [0, 1, 0]
    assert "failed by majority vote" in " ".join(m.value for m in at.markdown)


def test_without_results_yet_the_page_says_so(home, monkeypatch):
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    wb = Workbench()
    run = wb.create_run("r1-zero", "smoke", start=False)
    eval_stage = next(s for s in run.stages if s.kind == "evaluate")
    at = page(stage=str(eval_stage.id))
    assert not at.exception, at.exception
    assert "is queued" in at.warning[0].value

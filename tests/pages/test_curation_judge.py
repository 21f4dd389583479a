"""The Curation page's "Judge vs rule" section: the generative judge's verdicts against the
rule check, as a confusion matrix drawn from the verdicts stored with each row (AppTest)."""
from __future__ import annotations

import json

import pytest

from storage import Store
from tests.pages.test_curation_page import candidate, page

SECTION = "Judge vs rule"


@pytest.fixture
def store(home, monkeypatch) -> Store:
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


def judged_rows() -> list[dict]:
    """(rule, judge) per row: 5 both correct, 3 both wrong, 2 the judge wrongly accepts, 1 it
    wrongly rejects, 1 without a readable verdict, 1 never shown to the judge; and one
    non-reasoning row without either verdict."""
    plan = ([(True, "correct")] * 5 + [(False, "incorrect")] * 3 + [(False, "correct")] * 2
            + [(True, "incorrect")] + [(True, "unparsed")] + [(True, None)])
    rows = []
    for i, (rule, judge) in enumerate(plan):
        row = candidate(f"{i}+1=", 0, rule, judge=judge or "correct")
        if judge == "unparsed":
            row["meta"]["judge_correct"] = None
        if judge is None:
            row["meta"].update(judge_verdict=None, judge_correct=None, judge_rationale=None)
        rows.append(row)
    rows.append({"prompt": "9-2=", "completion": "<answer>7</answer>", "answer": "7",
                 "source": "non_reasoning", "status": "pending",
                 "meta": {"origin": "synthetic subtraction", "source_row": 0}})
    return rows


def open_section(dataset_id: int):
    at = page(dataset_id)
    at.session_state["section"] = SECTION
    return at.run()


def figure(at) -> dict:
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 1
    return charts[0]


def test_confusion_matrix_of_judge_and_rule_with_the_agreement(store):
    dataset = store.create_dataset("judged", "rejection", judged_rows())
    at = open_section(dataset)
    assert not at.exception
    # 8 agree of the 11 rows both scored with a verdict.
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Agreement"] == "72.7%"
    assert metrics["Judge says correct, rule says wrong"] == "2"
    assert metrics["Judge says wrong, rule says correct"] == "1"
    fig = figure(at)
    heat = fig["data"][0]
    assert heat["y"] == ["rule: correct", "rule: wrong"]
    assert heat["x"] == ["judge: correct", "judge: wrong", "judge: no verdict"]
    assert heat["z"] == [[5, 1, 1], [2, 3, 0]]
    assert "agree on 72.7% of 11 rows both scored" in fig["layout"]["title"]["text"]
    caption = "\n".join(c.value for c in at.caption)
    assert "1 judge answers had no readable verdict" in caption
    assert "1 rows were not shown to the judge" in caption
    # The rows of a disagreeing cell are listed, with the judge's rationale.
    # The rows of a cell are listed with the judge's rationale, a disagreement first.
    table = at.dataframe[0].value
    assert list(table["prompt"]) == ["10+1="]
    assert list(table["judge's rationale"]) == ["The final answer differs from the reference."]
    at.selectbox(key="judge_cell").set_value(("incorrect", "correct")).run()
    assert list(at.dataframe[0].value["prompt"]) == ["8+1=", "9+1="]


def test_the_matrix_follows_the_sidebar_filter(store):
    dataset = store.create_dataset("judged", "rejection", judged_rows())
    at = open_section(dataset)
    at.sidebar.selectbox(key=f"f_{dataset}_rule_correct").select(False).run()
    heat = figure(at)["data"][0]
    assert heat["y"][1] == "rule: wrong" and heat["z"] == [[0, 0], [2, 3]]
    assert {m.label: m.value for m in at.metric}["Agreement"] == "60.0%"


def test_a_dataset_without_judge_verdicts_says_why_there_is_no_matrix(store):
    rows = [candidate("3+4=", k, True) for k in range(3)]
    for row in rows:
        row["meta"].update(judge_verdict=None, judge_correct=None)
    dataset = store.create_dataset("rule only", "rejection", rows)
    at = open_section(dataset)
    assert not at.exception and not at.get("plotly_chart")
    assert "No row under the filter carries both a rule verdict" in at.info[0].value

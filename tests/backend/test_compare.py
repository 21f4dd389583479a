"""The Compare page's table and curves (backend.compare): which figures become columns and in
what order, which cells are marked best, what the CSV holds, the training-time axis. Tables of
cases, each with what it covers; nothing here trains."""
from __future__ import annotations

import io
import math
from datetime import datetime

import pandas as pd
import pytest

from backend.compare import (EvalEntry, build_table, eval_entries, metric_values,
                             wall_seconds)
from storage import records as r


# -------------------------------------------------------------------- one model's figures
@pytest.mark.parametrize("stored, expected", [
    # an older evaluation's cons@4 is the cons@k column
    ({"cons@4": 0.5}, {"cons@k": 0.5}),
    # both spellings stored (the newer evaluate stage): one column, the canonical key's value
    ({"cons@k": 0.6, "cons@8": 0.6}, {"cons@k": 0.6}),
    # sampled_pass@1 is pass@1; pass@8 is pass@k; pass@1 itself is not a pass@k
    ({"sampled_pass@1": 0.3, "pass@8": 0.9}, {"pass@1": 0.3, "pass@k": 0.9}),
    ({"pass@1": 0.25, "sampled_pass@1": 0.25}, {"pass@1": 0.25}),
    # "problems" (older summaries) is the n_problems column
    ({"problems": 500}, {"n_problems": 500.0}),
    # text, lists, booleans, NaN and settings are not figures of the model
    ({"model_path": "/m", "template": "0-shot", "examples": [1], "think_rate": 0.5,
      "flag": True, "language": math.nan, "temperature": 0.6, "top_p": 0.95},
     {"think_rate": 0.5}),
    # an unknown figure is kept as stored
    ({"refusal_rate": 0.1}, {"refusal_rate": 0.1}),
])
def test_metric_values(stored, expected):
    assert metric_values(stored) == expected


def entry(label: str, **metrics: float) -> EvalEntry:
    return EvalEntry(run_id=len(label), run_name="run", stage_id=10, stage_name="eval",
                     label=label, metrics=dict(metrics), dataset="synthetic · heldout")


# -------------------------------------------------------------------- the best of each column
@pytest.mark.parametrize("rows, column, best", [
    # higher is better for a pass rate
    ([{"greedy_pass@1": 0.5}, {"greedy_pass@1": 0.7}], "greedy_pass@1", {1}),
    # a tie marks every row that holds the best value
    ([{"cons@k": 0.8}, {"cons@k": 0.8}, {"cons@k": 0.2}], "cons@k", {0, 1}),
    # every model alike: nothing stands out, nothing marked
    ([{"format": 0.9}, {"format": 0.9}], "format", None),
    # a model without the figure is skipped, not counted as zero
    ([{"pass@k": 0.4}, {}, {"pass@k": 0.9}], "pass@k", {2}),
    # only one model has it: nothing to compare, nothing marked
    ([{"format": 0.9}, {}], "format", None),
    # lengths and settings are not ranked
    ([{"reasoning_chars": 10.0}, {"reasoning_chars": 30.0}], "reasoning_chars", None),
    ([{"k": 4.0}, {"k": 8.0}], "k", None),
    # an unknown figure's direction is not guessed
    ([{"refusal_rate": 0.1}, {"refusal_rate": 0.3}], "refusal_rate", None),
])
def test_best_per_column(rows, column, best):
    table = build_table([entry(f"m{i}", **row) for i, row in enumerate(rows)])
    assert table.best.get(column) == best


def test_known_figures_come_first_in_the_papers_order():
    table = build_table([entry("a", zeta=1.0, format=0.5, k=4.0, **{"greedy_pass@1": 0.4}),
                         entry("b", **{"cons@k": 0.6, "pass@1": 0.5, "alpha": 2.0})])
    assert [c.name for c in table.columns] == ["greedy_pass@1", "pass@1", "cons@k", "format",
                                               "k", "alpha", "zeta"]
    labels = {c.name: c.label for c in table.columns}
    assert labels["cons@k"] == "cons@k" and labels["alpha"] == "alpha"
    assert [c.share for c in table.columns] == [True, True, True, True, False, False, False]


def test_csv_has_a_row_per_model_and_the_stored_numbers():
    table = build_table([entry("base", **{"greedy_pass@1": 0.25, "cons@k": 0.5}),
                         entry("final", **{"greedy_pass@1": 0.875})])
    frame = pd.read_csv(io.StringIO(table.csv()))
    assert list(frame.columns) == ["model", "run_id", "stage_id", "dataset", "greedy_pass@1",
                                   "cons@k"]
    assert list(frame["model"]) == ["#4 run · base", "#5 run · final"]
    assert list(frame["greedy_pass@1"]) == [0.25, 0.875]  # 0-1 shares, as stored
    assert frame["cons@k"].isna().tolist() == [False, True]  # a missing figure stays empty


# -------------------------------------------------------------------- which stages are read
def stage(stage_id: int, kind: str, name: str, outputs: dict | None = None) -> r.Stage:
    return r.Stage(id=stage_id, run_id=1, position=stage_id, kind=kind, name=name,
                   status=r.COMPLETED, config={}, step=0, total_steps=None, pid=None, host=None,
                   heartbeat_at=None, started_at=None, ended_at=None, attempt_started_step=0,
                   attempt_started_at=None, error=None, log_path=None, output_dir=None,
                   outputs=outputs or {}, summary={})


def test_eval_entries_read_every_model_and_template_of_evaluation_stages():
    run = r.Run(id=7, name="distill", recipe="distill", preset="tiny", config={},
                created_at=datetime(2026, 12, 1), runner_pid=None, stages=[
                    stage(1, "grpo", "GRPO"),  # trains: not a row of the table
                    stage(2, "evaluate", "held-out evaluation"),
                    stage(3, "custom", "scored elsewhere",
                          {"results": {"type": "eval_results", "summary": {}}}),
                ])
    results = {
        2: {"final": {"0-shot": {"greedy_pass@1": 0.9, "dataset": "synthetic", "split": "heldout"},
                      "4-shot": {"greedy_pass@1": 0.8}},
            "base": {"0-shot": {"greedy_pass@1": 0.3}, "4-shot": {"greedy_pass@1": 0.2}}},
        3: {"student": {"0-shot": {"pass@1": 0.4}}},
    }
    asked = []

    def results_of(stage_id):
        asked.append(stage_id)
        return results[stage_id]

    found = eval_entries([run], results_of)
    assert asked == [2, 3]
    assert [(e.stage_id, e.label) for e in found] == [
        (2, "final · 0-shot"), (2, "final · 4-shot"), (2, "base · 0-shot"), (2, "base · 4-shot"),
        (3, "student")]  # one template: the model's name alone
    assert found[0].dataset == "synthetic · heldout"
    # Two evaluation stages in one run (recipe distill) each have a "final": names say which.
    assert found[0].name == "#7 distill · held-out evaluation · final · 0-shot"
    assert found[-1].name == "#7 distill · scored elsewhere · student"
    # One evaluation stage: the run and the model are enough.
    run.stages = run.stages[:2]
    assert eval_entries([run], results_of)[0].name == "#7 distill · final · 0-shot"


# -------------------------------------------------------------------- the training-time axis
@pytest.mark.parametrize("steps, logged, expected", [
    # logged every step: the running sum
    ([1, 2, 3], ([1, 2, 3], [0.5, 0.5, 1.0]), [0.5, 1.0, 2.0]),
    # logged every 2 steps (a window's mean per step): 2 steps x 0.5 s, then 2 x 1.0 s
    ([2, 4], ([2, 4], [0.5, 1.0]), [1.0, 3.0]),
    # a curve point between two logs and one past the last: the next rate carries on
    ([2, 3, 4, 6], ([2, 4], [0.5, 1.0]), [1.0, 2.0, 3.0, 5.0]),
    # a point before the first log: its share of the first window
    ([1, 2], ([2], [0.5]), [0.5, 1.0]),
])
def test_wall_seconds(steps, logged, expected):
    assert wall_seconds(steps, logged) == pytest.approx(expected)


def test_no_step_times_no_time_axis():
    assert wall_seconds([1, 2], ([], [])) is None

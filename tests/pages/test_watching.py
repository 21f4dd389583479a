"""Watching is nearly free: the live pages ask one cheap question per refresh
(``Workbench.stage_version``) and rebuild their figures only when the answer changed. The
browser side is measured by bench/bench_watching.py; here, that the server does no work when
nothing changed and does it again as soon as something did."""
from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench
from storage import Store
from storage.records import Group, Rollout, StageSpec
from storage.store import now

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def store(home, monkeypatch) -> Store:
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


@pytest.fixture
def stage(store) -> tuple[int, int]:
    config = next(s for s in Workbench.default_stages("r1-zero", "smoke") if s.kind == "grpo")
    run = store.create_run("watched", "r1-zero", "smoke", {"sets": {}},
                           [StageSpec("grpo", "R1-Zero GRPO", dict(config.config))])
    stage_id = run.stages[0].id
    # This test process stands in for the worker, so the reaper sees it alive.
    store.update_stage(stage_id, status="running", step=3, total_steps=50, pid=os.getpid(),
                       host=socket.gethostname(), started_at=now() - timedelta(seconds=9),
                       heartbeat_at=now(), attempt_started_step=0,
                       attempt_started_at=now() - timedelta(seconds=9))
    for step in (1, 2, 3):
        store.add_metrics(stage_id, step, {"reward": 0.1 * step, "rewards/accuracy/mean": 0.1,
                                           "rewards/format/mean": 0.9})
    return run.id, stage_id


def test_stage_version_changes_with_each_kind_of_change(store, stage):
    _, stage_id = stage
    seen = [store.stage_version(stage_id)]

    def changed(field: str) -> None:
        now_ = store.stage_version(stage_id)
        assert now_ != seen[-1] and getattr(now_, field) != getattr(seen[-1], field), field
        seen.append(now_)

    assert store.stage_version(stage_id) == seen[0]  # asking twice changes nothing
    store.add_metrics(stage_id, 4, {"eval/accuracy": 0.5})
    changed("metric_rows")
    store.add_groups(stage_id, 4, [Group(4, 0, "1+1=", "2", 1.0, 0.0, [
        Rollout(0, "<answer>2</answer>", {"accuracy": 1.0}, 1.0, 0.0, 3, False)])])
    changed("group_step")
    cmd = store.add_command(stage_id, "set", {"temperature": 0.7})
    changed("commands")
    store.mark_command_applied(cmd, 4, "temperature = 0.7")
    changed("commands_applied")
    store.add_event(store.get_stage(stage_id).run_id, "something happened")
    changed("event_id")
    store.heartbeat(stage_id, step=5)
    changed("step")
    store.transition(stage_id, ["running"], "paused")
    changed("status")
    with pytest.raises(KeyError):
        store.stage_version(10_000)


def test_live_training_rebuilds_its_charts_only_when_the_data_changed(stage, store,
                                                                       monkeypatch):
    run_id, stage_id = stage
    reads = []
    real = Workbench.metric_table
    monkeypatch.setattr(Workbench, "metric_table",
                        lambda self, *a, **k: reads.append(a) or real(self, *a, **k))
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({"run": str(run_id), "stage": str(stage_id)})
    at.switch_page("pages/training.py").run()
    first = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(first) == 10 and len(reads) == 1
    at.run()  # a refresh with nothing new: the same figures, no query for them
    assert [c.proto.spec for c in at.get("plotly_chart")] == first and len(reads) == 1
    store.add_metrics(stage_id, 4, {"reward": 0.9})  # the next step arrives
    at.run()
    assert len(reads) == 2
    assert [c.proto.spec for c in at.get("plotly_chart")] != first


@pytest.mark.parametrize("last_step, status, right_end", [
    (3, "running", 10), (11, "running", 15), (16, "running", 20), (31, "running", 50),
    (101, "running", 150),
    (31, "completed", 31),  # a finished stage's curves fill the width
])
def test_x_range_grows_in_steps_so_charts_without_new_data_stay_unchanged(
        stage, store, last_step, status, right_end):
    # While a stage runs, the charts share an x range that grows 10, 15, 20, 30, 50, 75,
    # 100 ...: a chart whose own data did not change (held-out accuracy between evals, the
    # learning rate) is re-sent unchanged, which the browser redraws cheaply.
    run_id, stage_id = stage
    store.add_metrics(stage_id, last_step, {"reward": 0.5})
    store.update_stage(stage_id, status=status)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({"run": str(run_id), "stage": str(stage_id)})
    at.switch_page("pages/training.py").run()
    ranges = [json.loads(c.proto.spec)["layout"]["xaxis"]["range"]
              for c in at.get("plotly_chart")]
    assert len(ranges) == 10
    assert all(r == pytest.approx([-0.02 * right_end, right_end * 1.02 + 0.5]) for r in ranges)

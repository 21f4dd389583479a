"""Fixing a run that failed: clone it with a corrected config, or re-run the failed stage with
one; a config that cannot work is refused by the CLI before anything is created; progress
counts work steps only."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from backend.api import Workbench
from backend.progress import stage_progress
from backend.runner import start_pipeline
from backend.stages.grpo import GRPOStageConfig
from storage import StageSpec
from tests.conftest import ROOT, wait_for


def _failing_run(wb: Workbench, model_dir: str, data) -> int:
    """A GRPO stage on a dataset whose prompt column is named differently: it fails when it
    reads the data, as a real user's first try often does."""
    data.write_text('{"problem": "1+1=", "answer": "2"}\n{"problem": "2+3=", "answer": "5"}\n')
    values = {"model_path": model_dir, "dataset": str(data), "steps": 2, "batch_size": 8,
              "num_generations": 4, "max_completion_length": 8, "eval_every": 0,
              "eval_problems": 1}
    spec = StageSpec("grpo", "R1-Zero GRPO", GRPOStageConfig.from_dict(values).to_dict(),
                     key="grpo")
    run = wb.store.create_run("first try", "r1-zero", "smoke", {}, [spec])
    start_pipeline(wb.store, run.id)
    wait_for(lambda: wb.get_run(run.id).status == "failed", 180, what="the stage to fail")
    return run.id


def _ended(wb: Workbench, run_id: int) -> str:
    return wait_for(lambda: (s := wb.get_run(run_id).status) in ("completed", "failed") and s,
                    300, what="the run to end")


def test_clone_a_failed_run_with_the_fixed_column_and_it_completes(db_url, tiny_model_dir,
                                                                    tmp_path):
    wb = Workbench(db_url)
    failed = _failing_run(wb, tiny_model_dir, tmp_path / "data.jsonl")
    assert "prompt_column" in wb.get_run(failed).stages[0].error.splitlines()[0]

    clone = wb.clone_run(failed, {"grpo.prompt_column": "problem"})
    assert clone.name == "first try (clone of #1)"
    assert clone.stages[0].config["prompt_column"] == "problem"
    assert clone.stages[0].config["dataset"] == str(tmp_path / "data.jsonl")  # the rest kept
    assert _ended(wb, clone.id) == "completed"
    assert wb.get_run(failed).status == "failed"  # the original is left as it was


def test_rerun_the_failed_stage_with_a_corrected_config(db_url, tiny_model_dir, tmp_path):
    wb = Workbench(db_url)
    run_id = _failing_run(wb, tiny_model_dir, tmp_path / "data.jsonl")
    stage_id = wb.get_run(run_id).stages[0].id
    with pytest.raises(Exception, match="learning_rate=5 is out of range"):
        wb.rerun_stage(stage_id, {"learning_rate": "5"})  # validated before anything changes
    wb.rerun_stage(stage_id, {"prompt_column": "problem"})
    assert _ended(wb, run_id) == "completed"
    assert any("config changed: prompt_column=problem" in e.message for e in wb.events(run_id))


def test_cli_refuses_a_config_that_cannot_work_and_creates_nothing(home, db_url):
    done = subprocess.run([sys.executable, "-m", "backend", "run", "--recipe", "r1-zero",
                           "--preset", "smoke", "--set", "grpo.dataset=/no/such.jsonl"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    assert "/no/such.jsonl does not exist" in done.stderr
    assert Workbench(db_url).list_runs() == []


def _stage(**kw):
    base = dict(status="running", total_steps=100, step=0, attempt_started_step=0,
                attempt_started_at=None, heartbeat_at=None, started_at=None, ended_at=None)
    return SimpleNamespace(**{**base, **kw})


T0 = datetime(2026, 12, 1, 12, 0, 0)


@pytest.mark.parametrize("stage, expected", [
    # setup still running: the worker has not reported its first step
    (_stage(), "step 0/100 · starting…"),
    # two steps timed are too few for an estimate
    (_stage(step=2, attempt_started_at=T0, heartbeat_at=T0 + timedelta(seconds=2)),
     "step 2/100 · estimating…"),
    # 10 steps in 10 s since the attempt's clock started: 90 steps left = 1m 30s; the 3 min
    # of setup before the clock started do not count
    (_stage(step=10, started_at=T0 - timedelta(minutes=3), attempt_started_at=T0,
            heartbeat_at=T0 + timedelta(seconds=10)), "step 10/100 · 1m 30s left"),
    # a resumed stage counts only this attempt's steps (50 -> 60 in 20 s: 40 steps = 80 s)
    (_stage(step=60, attempt_started_step=50, attempt_started_at=T0,
            heartbeat_at=T0 + timedelta(seconds=20)), "step 60/100 · 1m 20s left"),
    (_stage(status="completed", step=100, started_at=T0, ended_at=T0 + timedelta(seconds=75)),
     "step 100/100 · done in 1m 15s"),
    (_stage(status="paused", step=40), "step 40/100 · paused"),
])
def test_progress_text(stage, expected):
    now = stage.heartbeat_at or T0
    assert stage_progress(stage, now)[1] == expected

"""Real background processes on a real SQLite file: kill -9, pause/resume/stop, resume from
a checkpoint. What a user would notice: the stage's status, its step, its metrics, its
checkpoints, and that a resumed stage finishes."""
from __future__ import annotations

import os
import signal
import time

import pytest

from backend.api import Workbench, WorkbenchError
from tests.conftest import wait_for

# A pre-training stage small enough for seconds per hundred steps, long enough to interrupt.
LONG_PRETRAIN = {"steps": "300", "save_steps": "25", "eval_problems": "20",
                 "use_cache": "false"}


def _stage(wb: Workbench, run_id: int):
    return wb.get_run(run_id).stages[0]


def _start(wb: Workbench, **sets) -> int:
    run = wb.create_run("pretrain-base", "smoke", {**LONG_PRETRAIN, **sets})
    wait_for(lambda: _stage(wb, run.id).status == "running", 60, what="the stage to start")
    return run.id


def test_kill_9_marks_interrupted_keeps_metrics_and_resume_completes(db_url):
    wb = Workbench(db_url)
    run_id = _start(wb)
    stage = wait_for(lambda: (s := _stage(wb, run_id)).checkpoint and s.step >= 40 and s,
                     120, what="a checkpoint and 40 steps")
    metrics_before = wb.metrics(stage.id, ["loss"])
    assert metrics_before, "loss is logged every 10 steps"

    os.kill(stage.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: _stage(wb, run_id).status == "interrupted", 15,
             what="the stage to be marked interrupted")
    assert time.time() - killed_at <= 15
    interrupted = _stage(wb, run_id)
    assert "died" in interrupted.error or "killed" in interrupted.error
    # Every metric written before the kill is still there.
    after = {(m.step, m.value) for m in wb.metrics(stage.id, ["loss"])}
    assert {(m.step, m.value) for m in metrics_before} <= after

    checkpoint_step = int(interrupted.checkpoint.rsplit("-", 1)[1])
    message = wb.resume(stage.id)
    assert f"step {checkpoint_step}" in message
    wait_for(lambda: wb.get_run(run_id).status == "completed", 400, what="the resumed run")
    done = _stage(wb, run_id)
    assert done.step == 300
    assert done.summary["problems"] == 20  # the held-out evaluation ran at the end
    steps = [m.step for m in wb.metrics(stage.id, ["loss"])]
    assert steps == sorted(set(steps)), "a replayed step must not be recorded twice"
    assert steps[-1] == 300
    log = wb.log_tail(stage.id, 400)
    assert f"resuming from {interrupted.checkpoint}" in log


def test_dead_worker_and_dead_runner_are_noticed_by_readers(db_url):
    """Even with no pipeline runner left to notice, any reader marks the stage interrupted."""
    wb = Workbench(db_url)
    run_id = _start(wb)
    run = wb.get_run(run_id)
    os.kill(run.runner_pid, signal.SIGKILL)
    os.kill(run.stages[0].pid, signal.SIGKILL)
    wait_for(lambda: _stage(wb, run_id).status == "interrupted", 15,
             what="a reader to mark the stage interrupted")


def test_pause_resume_stop_and_resume_from_checkpoint(db_url):
    wb = Workbench(db_url)
    run_id = _start(wb)
    stage_id = _stage(wb, run_id).id
    wait_for(lambda: _stage(wb, run_id).step >= 5, 60, what="some steps")

    assert "next step" in wb.pause(stage_id)
    wait_for(lambda: _stage(wb, run_id).status == "paused", 20, what="pause")
    paused_step = _stage(wb, run_id).step
    time.sleep(3)
    assert _stage(wb, run_id).step == paused_step, "a paused stage does not advance"
    assert _stage(wb, run_id).status == "paused", "a paused stage keeps its heartbeat"
    pause_cmd = wb.commands(stage_id)[0]
    assert pause_cmd.kind == "pause" and pause_cmd.applied_step == paused_step

    wb.resume(stage_id)
    wait_for(lambda: _stage(wb, run_id).step > paused_step, 30, what="progress after resume")

    wb.stop(stage_id)
    stopped = wait_for(lambda: (s := _stage(wb, run_id)).status == "stopped" and s, 30,
                       what="stop")
    stop_cmd = [c for c in wb.commands(stage_id) if c.kind == "stop"][0]
    # Stop saves a checkpoint at the step where it took effect.
    assert stopped.checkpoint.endswith(f"checkpoint-{stop_cmd.applied_step}")
    with pytest.raises(WorkbenchError):
        wb.pause(stage_id)  # nothing to pause

    wb.resume(stage_id)
    wait_for(lambda: wb.get_run(run_id).status == "completed", 400, what="completion")
    events = [e.message for e in wb.events(run_id)]
    assert any("resumed from step" in m for m in events)

"""Resuming a stage whose newest checkpoint is not on this machine (a run started on another
machine sharing the store, or a deleted folder): refused with the missing folder named, unless
the user accepts the loss (``--lose-progress``); then the restart is recorded as a warning. The
store is filled directly and the runner is not started: nothing trains here."""
from __future__ import annotations

import pytest

from backend.__main__ import main
from backend.api import MissingCheckpointError, Workbench
from storage import Store


@pytest.fixture
def started(home, monkeypatch) -> list[int]:
    """Runs whose pipeline the code under test started (recorded, not started)."""
    calls: list[int] = []
    monkeypatch.setattr("backend.runner.start_pipeline",
                        lambda store, run_id: calls.append(run_id) or 0)
    return calls


def stopped_stage(store: Store, tmp_path, present: tuple[int, ...], missing: tuple[int, ...]):
    """A stopped pre-training stage at step 60 with metrics every 10 steps and trainer checkpoints at
    ``present`` steps (their folders exist) and ``missing`` steps (folders elsewhere)."""
    run = store.create_run("pretrain run", "pretrain-base", "smoke", {"sets": {}},
                           Workbench.default_stages("pretrain-base", "smoke"))
    run_id, stage_id = run.id, run.stages[0].id
    store.update_stage(stage_id, status="stopped", step=60, total_steps=100)
    for step in range(10, 61, 10):
        store.add_metrics(stage_id, step, {"loss": 1.0 / step})
    for step in present:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        store.add_checkpoint(stage_id, step, str(folder))
    for step in missing:
        store.add_checkpoint(stage_id, step, f"/elsewhere/run-1/checkpoint-{step}")
    return run_id, stage_id


def loss_steps(wb: Workbench, stage_id: int) -> list[int]:
    return [m.step for m in wb.metrics(stage_id, ["loss"])]


def test_a_missing_newest_checkpoint_refuses_the_resume_and_changes_nothing(home, started,
                                                                             tmp_path):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(), missing=(50,))
    with pytest.raises(MissingCheckpointError) as refused:
        wb.resume(stage_id)
    message = str(refused.value)
    assert "/elsewhere/run-1/checkpoint-50 does not exist" in message
    assert "go back to the start and lose 50 steps" in message
    assert "--lose-progress" in message
    stage = wb.get_stage(stage_id)
    assert (stage.status, stage.step) == ("stopped", 60)
    assert loss_steps(wb, stage_id) == [10, 20, 30, 40, 50, 60]  # nothing purged
    assert started == []


def test_the_loss_accepted_restarts_from_the_start_with_a_warning_event(home, started,
                                                                         tmp_path):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(), missing=(50,))
    assert wb.resume(stage_id, lose_progress=True) == "restarting from the start"
    stage = wb.get_stage(stage_id)
    assert (stage.status, stage.step) == ("queued", 0)
    assert loss_steps(wb, stage_id) == []
    assert started == [run_id]
    (warning,) = [e for e in wb.events(run_id) if e.level == "warning"]
    assert ("restarted from the start, losing 50 steps: its checkpoint at step 50 is not on"
            in warning.message)
    assert "/elsewhere/run-1/checkpoint-50" in warning.message
    # The missing checkpoint belongs to the steps given up: a later resume does not ask again.
    assert wb.resume_point(stage_id).missing == ()


def test_an_older_checkpoint_here_is_where_the_accepted_restart_goes_back_to(home, started,
                                                                             tmp_path):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(20,), missing=(40, 50))
    with pytest.raises(MissingCheckpointError,
                       match="go back to checkpoint at step 20 and lose 30 steps"):
        wb.resume(stage_id)
    assert wb.resume(stage_id, lose_progress=True) == "restarting from checkpoint at step 20"
    assert wb.get_stage(stage_id).step == 20
    assert loss_steps(wb, stage_id) == [10, 20]
    assert [c.step for c in wb.store.checkpoints(stage_id)] == [20]


def test_every_checkpoint_here_resumes_from_the_newest_as_before(home, started, tmp_path):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(25, 50), missing=())
    assert wb.resume(stage_id) == "restarting from checkpoint at step 50"
    assert loss_steps(wb, stage_id) == [10, 20, 30, 40, 50]
    assert not [e for e in wb.events(run_id) if e.level == "warning"]


def test_a_stage_that_never_saved_a_checkpoint_restarts_without_asking(home, started, tmp_path):
    wb = Workbench()
    _, stage_id = stopped_stage(wb.store, tmp_path, present=(), missing=())
    assert wb.resume(stage_id) == "restarting from the start"


def test_rerun_with_a_new_config_is_refused_before_the_config_changes(home, started, tmp_path):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(), missing=(50,))
    before = wb.get_stage(stage_id).config
    with pytest.raises(MissingCheckpointError, match="Not re-run: .*checkpoint-50 does not"):
        wb.rerun_stage(stage_id, {"learning_rate": "2e-4"})
    assert wb.get_stage(stage_id).config == before
    assert started == []
    wb.rerun_stage(stage_id, {"learning_rate": "2e-4"}, lose_progress=True)
    assert wb.get_stage(stage_id).config["learning_rate"] == pytest.approx(2e-4)
    assert started == [run_id]


def test_cli_resume_says_why_and_restarts_only_with_lose_progress(home, started, tmp_path,
                                                                  capsys):
    wb = Workbench()
    run_id, stage_id = stopped_stage(wb.store, tmp_path, present=(), missing=(50,))
    assert main(["resume", str(stage_id)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Not resumed: ")
    assert "/elsewhere/run-1/checkpoint-50 does not exist" in err
    assert wb.get_stage(stage_id).status == "stopped"
    assert main(["resume", str(stage_id), "--lose-progress"]) == 0
    assert capsys.readouterr().out.strip() == "restarting from the start"
    assert wb.get_stage(stage_id).status == "queued"

"""The Stage page's live steering form and "Checkpoint now" button, for every stage kind with
live parameters, driven through AppTest against a store the tests fill directly (this test
process stands in for the worker: nothing trains, nothing is started)."""
from __future__ import annotations

import html
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench, WorkbenchError
from backend.stages import STAGE_KINDS
from storage import Store
from storage.records import StageSpec
from storage.store import now

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def store(home, monkeypatch) -> Store:
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


def one_stage_run(store: Store, kind: str, **fields) -> tuple[int, int]:
    """A run with one stage of ``kind`` carrying the r1 recipe's smoke config for that kind."""
    config = next(s for s in Workbench.default_stages("r1", "smoke") if s.kind == kind).config
    run = store.create_run(f"{kind} run", "r1", "smoke", {"sets": {}},
                           [StageSpec(kind, f"my {kind}", dict(config))])
    stage_id = run.stages[0].id
    if fields:
        store.update_stage(stage_id, **fields)
    return run.id, stage_id


def running(**extra) -> dict:
    # This test process stands in for the worker, so the runner's reaper sees it alive.
    return dict(status="running", step=6, total_steps=60, pid=os.getpid(),
                host=socket.gethostname(), started_at=now() - timedelta(seconds=30),
                heartbeat_at=now(), attempt_started_step=0,
                attempt_started_at=now() - timedelta(seconds=30), **extra)


def stage_page(run_id: int, stage_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["run"] = str(run_id)
    at.query_params["stage"] = str(stage_id)
    at.switch_page("pages/stage.py")
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def number_input(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def apply_button(at: AppTest):
    return next(b for b in at.button if b.label == "Apply at next step")


def footer(at: AppTest) -> str:
    """The line under the live numbers (checkpoint, and the newest checkpoint request)."""
    panel = next(m.value for m in at.markdown if 'class="wb-progress"' in m.value)
    return html.unescape(re.sub(r"<[^>]+>", " ", panel))


def config_value(kind: str, name: str) -> float:
    return next(s for s in Workbench.default_stages("r1", "smoke") if s.kind == kind).config[name]


# -- the form ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sft", "judge", "reward_model", "pretrain"])
def test_a_trainer_stage_gets_a_learning_rate_form_from_its_declaration(store, kind):
    run_id, stage_id = one_stage_run(store, kind, **running())
    at = stage_page(run_id, stage_id)
    assert not at.exception
    assert [n.label for n in at.number_input] == ["Learning rate"]  # what the kind declares
    field = number_input(at, "Learning rate")
    assert field.value == pytest.approx(config_value(kind, "learning_rate"))
    declared = STAGE_KINDS[kind].live_param("learning_rate")
    assert declared.help in field.help and declared.bounds() in field.help
    assert not field.disabled and not apply_button(at).disabled


def test_a_rejection_stage_steers_its_sampling_temperature(store):
    run_id, stage_id = one_stage_run(store, "rejection", **running())
    at = stage_page(run_id, stage_id)
    assert [n.label for n in at.number_input] == ["Temperature"]
    assert number_input(at, "Temperature").value == pytest.approx(
        config_value("rejection", "temperature"))


def test_the_form_shows_the_value_the_stage_runs_with_after_a_live_change(store):
    run_id, stage_id = one_stage_run(store, "sft", **running(params={"learning_rate": 2e-4}))
    at = stage_page(run_id, stage_id)
    assert number_input(at, "Learning rate").value == pytest.approx(2e-4)


def test_a_paused_stage_can_be_steered_before_it_resumes(store):
    run_id, stage_id = one_stage_run(store, "sft", **(running() | {"status": "paused"}))
    at = stage_page(run_id, stage_id)
    assert not apply_button(at).disabled
    number_input(at, "Learning rate").set_value(2 * config_value("sft", "learning_rate"))
    apply_button(at).click()
    at.run()
    assert [c.kind for c in store.commands(stage_id)] == ["set"]


def test_an_sft_stage_waiting_for_review_can_be_steered_before_training_starts(store):
    # Its worker is alive and stores the change; training starts with it (tests/backend
    # test_sft: a learning rate set while waiting is used from the first step).
    run_id, stage_id = one_stage_run(store, "sft", **(running() | {"status": "waiting",
                                                                  "step": 0}))
    at = stage_page(run_id, stage_id)
    assert not at.exception
    assert not apply_button(at).disabled
    assert "takes effect when training starts" in texts(at.caption)
    wanted = 2 * config_value("sft", "learning_rate")
    number_input(at, "Learning rate").set_value(wanted)
    apply_button(at).click()
    at.run()
    (cmd,) = store.commands(stage_id)
    assert cmd.kind == "set" and cmd.payload == {"learning_rate": pytest.approx(wanted)}


def test_a_changed_value_is_sent_as_one_set_command(store):
    run_id, stage_id = one_stage_run(store, "judge", **running())
    at = stage_page(run_id, stage_id)
    wanted = 2 * config_value("judge", "learning_rate")
    number_input(at, "Learning rate").set_value(wanted)
    apply_button(at).click()
    at.run()
    (cmd,) = store.commands(stage_id)
    assert cmd.kind == "set" and cmd.payload == {"learning_rate": pytest.approx(wanted)}
    assert "applied at the next step boundary" in texts(at.success)


@pytest.mark.parametrize("value, message", [
    (0.0, "Not sent: learning_rate=0 is out of range: > 0 and <= 1"),
    (5.0, "Not sent: learning_rate=5 is out of range: > 0 and <= 1"),
])
def test_a_bad_value_is_refused_with_the_message_and_nothing_is_sent(store, value, message):
    run_id, stage_id = one_stage_run(store, "sft", **running())
    at = stage_page(run_id, stage_id)
    number_input(at, "Learning rate").set_value(value)
    apply_button(at).click()
    at.run()
    assert message in texts(at.error)
    assert store.commands(stage_id) == []


def test_a_risky_value_waits_for_the_confirmation(store):
    run_id, stage_id = one_stage_run(store, "sft", **running())
    at = stage_page(run_id, stage_id)
    tenfold = 10 * config_value("sft", "learning_rate")
    number_input(at, "Learning rate").set_value(tenfold)
    apply_button(at).click()
    at.run()
    assert "a much higher rate can collapse the policy" in texts(at.warning)
    assert store.commands(stage_id) == []  # not before the confirmation
    at.button(key=f"steer_confirm_{stage_id}").click().run()
    (cmd,) = store.commands(stage_id)
    assert cmd.payload == {"learning_rate": pytest.approx(tenfold)}


def test_a_risky_value_can_be_cancelled(store):
    run_id, stage_id = one_stage_run(store, "sft", **running())
    at = stage_page(run_id, stage_id)
    number_input(at, "Learning rate").set_value(10 * config_value("sft", "learning_rate"))
    apply_button(at).click()
    at.run()
    at.button(key=f"steer_cancel_{stage_id}").click().run()
    assert "may hurt the run" not in texts(at.warning)
    assert store.commands(stage_id) == []


@pytest.mark.parametrize("kind, fields", [
    ("sft", dict(status="completed", step=60, total_steps=60)),  # finished: nothing to steer
    ("evaluate", {}),  # declares no live parameters
])
def test_no_form_when_there_is_nothing_to_steer(store, kind, fields):
    run_id, stage_id = one_stage_run(store, kind, **(running() | fields))
    at = stage_page(run_id, stage_id)
    assert not at.exception
    assert not [b for b in at.button if b.label == "Apply at next step"]
    assert not at.number_input


# -- checkpoint now ------------------------------------------------------------------------
def test_checkpoint_now_creates_the_command_and_shows_how_far_it_got(store, tmp_path):
    run_id, stage_id = one_stage_run(store, "sft", **running())
    old = tmp_path / "checkpoint-3"  # saved before the request: it does not answer it
    store.add_checkpoint(stage_id, 3, str(old))
    at = stage_page(run_id, stage_id)
    at.button(key="checkpoint").click().run()
    (cmd,) = store.commands(stage_id)
    assert cmd.kind == "checkpoint"
    assert "checkpoint requested" in texts(at.toast)
    assert "checkpoint requested -> waiting for the next step boundary" in footer(at)

    # The worker applies it at step 7, then the Trainer saves there.
    store.mark_command_applied(cmd.id, 7, "checkpoint requested")
    at.run()
    assert "applied at step 7 -> saving" in footer(at)
    saved = tmp_path / "checkpoint-7"
    store.add_checkpoint(stage_id, 7, str(saved))
    at.run()
    assert f"applied at step 7 -> saved at step 7: {saved}" in footer(at)


@pytest.mark.parametrize("kind, fields, reason", [
    ("sft", dict(status="paused"), "Only a running stage can save a checkpoint now (this one "
                                   "is paused)"),
    ("sft", dict(status="completed", step=60, total_steps=60),
     "Only a running stage can save a checkpoint now (this one is completed)"),
    ("evaluate", {}, "Stages of kind evaluate save no checkpoints"),
])
def test_checkpoint_now_is_disabled_with_the_reason(store, kind, fields, reason):
    run_id, stage_id = one_stage_run(store, kind, **(running() | fields))
    at = stage_page(run_id, stage_id)
    button = at.button(key="checkpoint")
    assert button.disabled
    assert reason in button.help


def test_the_api_refuses_a_checkpoint_of_a_stage_that_saves_none(store):
    _, stage_id = one_stage_run(store, "evaluate", **running())
    with pytest.raises(WorkbenchError, match="saves no checkpoints"):
        Workbench().checkpoint(stage_id)
    assert store.commands(stage_id) == []

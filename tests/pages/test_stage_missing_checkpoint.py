"""The Stage page of a stopped stage whose newest checkpoint is not on this machine: it says
so, names the folder, refuses a plain resume and restarts only when asked to give up the steps
(the same rules as ``Workbench.resume``, tests/backend/test_resume_missing_checkpoint.py)."""
from __future__ import annotations

import pytest

from backend.api import Workbench
from storage import Store
from tests.pages.test_pages import stage_page, started, texts  # noqa: F401  (a fixture)

MISSING = "/elsewhere/run-1/stage-0-pretrain/checkpoint-50"


@pytest.fixture
def stopped(started) -> tuple[Store, int, int]:
    """A stopped pre-training stage at step 60 whose only checkpoint (step 50) was saved on
    another machine."""
    store = Store()
    run = store.create_run("pretrain run", "pretrain-base", "smoke", {"sets": {}},
                           Workbench.default_stages("pretrain-base", "smoke"))
    stage_id = run.stages[0].id
    store.update_stage(stage_id, status="stopped", step=60, total_steps=100)
    store.add_checkpoint(stage_id, 50, MISSING)
    return store, run.id, stage_id


def test_the_page_names_the_missing_folder_and_resume_is_refused(stopped, started):
    store, run_id, stage_id = stopped
    at = stage_page(run_id, stage_id)
    assert not at.exception
    warning = texts(at.warning)
    assert f"{MISSING} does not exist" in warning and "lose 50 steps" in warning
    at.button(key="resume_checkpoint").click().run()
    assert "Not resumed: " in texts(at.toast)
    assert store.get_stage(stage_id).status == "stopped" and started == []


def test_restart_anyway_restarts_from_the_start_and_the_warning_event_shows(stopped, started):
    store, run_id, stage_id = stopped
    at = stage_page(run_id, stage_id)
    at.button(key=f"lose_progress_{stage_id}").click().run()
    assert "restarting from the start" in texts(at.toast)
    assert store.get_stage(stage_id).status == "queued" and started == [run_id]
    events = "\n".join(at.dataframe[-1].value["message"])
    assert "losing 50 steps: its checkpoint at step 50 is not on" in events
    assert MISSING in events
    assert not [b for b in at.button if b.key == f"lose_progress_{stage_id}"]


def test_a_rerun_with_a_new_config_needs_the_box_ticked(stopped, started):
    store, run_id, stage_id = stopped
    at = stage_page(run_id, stage_id)
    editor = at.data_editor[0]
    row = list(editor.value["setting"]).index("learning_rate")
    at.session_state[editor.key] = {"edited_rows": {row: {"value": "2e-4"}},
                                    "added_rows": [], "deleted_rows": []}
    submit = next(b for b in at.button if b.label == "Re-run with this config")
    submit.click().run()
    assert "Not re-run: " in texts(at.error)
    assert started == []
    at.checkbox(key=f"rerun_lose_progress_{stage_id}_0").check()
    next(b for b in at.button if b.label == "Re-run with this config").click().run()
    assert store.get_stage(stage_id).config["learning_rate"] == pytest.approx(2e-4)
    assert started == [run_id]

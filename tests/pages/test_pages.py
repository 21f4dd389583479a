"""The Runs and Stage pages, driven through Streamlit's AppTest against a store that the tests
fill directly (no training, no background processes: ``start_pipeline`` is replaced)."""
from __future__ import annotations

import html
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench
from pages.common import default_stage
from storage import Store
from storage.store import now
from tests.pages.imports import training_libs_imported

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TRACEBACK = ("FloatingPointError: loss is nan at step 17: lower learning_rate\n\n"
             "Traceback (most recent call last):\n"
             '  File "backend/stages/pretrain.py", line 120, in run\n'
             "    trainer.train()\n"
             "FloatingPointError: loss is nan at step 17: lower learning_rate")


@pytest.fixture
def started(home, monkeypatch) -> list[int]:
    """A fresh data home (conftest's ``home``); runs the pages create are recorded instead
    of started."""
    calls: list[int] = []
    monkeypatch.setattr("backend.runner.start_pipeline",
                        lambda store, run_id: calls.append(run_id) or 0)
    return calls


@pytest.fixture
def store(started) -> Store:
    return Store()


def make_run(store: Store, name: str = "demo", **stage_fields) -> tuple[int, int]:
    """A one-stage pretrain run whose stage row carries ``stage_fields``."""
    specs = Workbench.default_stages("pretrain-base", "smoke")
    run = store.create_run(name, "pretrain-base", "smoke", {"sets": {}}, specs)
    stage_id = run.stages[0].id
    if stage_fields:
        store.update_stage(stage_id, **stage_fields)
    return run.id, stage_id


def running(**extra) -> dict:
    # This test process stands in for the worker, so the runner's reaper sees it alive.
    return dict(status="running", step=120, total_steps=800, pid=os.getpid(),
                host=socket.gethostname(), started_at=now() - timedelta(seconds=60),
                heartbeat_at=now(), attempt_started_step=0,
                attempt_started_at=now() - timedelta(seconds=60), **extra)


def runs_page() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()


def stage_page(run_id: int, stage_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["run"] = str(run_id)
    if stage_id is not None:
        at.query_params["stage"] = str(stage_id)
    at.switch_page("pages/stage.py")
    return at.run()


def progress_text(at: AppTest) -> str:
    """The text above the stage's progress bar."""
    bar = next(m.value for m in at.markdown if 'class="wb-progress"' in m.value)
    return html.unescape(re.search(r'margin-bottom:.3rem">(.*?)</div>', bar).group(1))


def tiles(at: AppTest) -> dict[str, str]:
    """The live numbers of a stage (label -> shown value)."""
    bar = next(m.value for m in at.markdown if 'class="wb-progress"' in m.value)
    return {html.unescape(label): html.unescape(value) for label, value in
            re.findall(r'data-label="([^"]*)" data-value="([^"]*)"', bar)}


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def edit(at: AppTest, setting: str, value: str) -> None:
    """Type ``value`` into the stage-config editor row of ``setting``."""
    editor = at.data_editor[0]
    row = list(editor.value["setting"]).index(setting)
    at.session_state[editor.key] = {"edited_rows": {row: {"value": value}},
                                    "added_rows": [], "deleted_rows": []}


# -- Runs page -------------------------------------------------------------------------------
def test_runs_table_shows_each_run_with_status_progress_and_accuracy(store):
    make_run(store, "baseline", status="completed", step=40, total_steps=40,
             summary={"accuracy": 0.25, "problems": 50})
    make_run(store, "diverged", status="failed", step=17, total_steps=40, error=TRACEBACK)
    at = runs_page()
    assert not at.exception
    table = at.dataframe[0].value
    rows = table.set_index("name")
    assert list(table["name"]) == ["diverged", "baseline"]  # newest first
    assert rows.loc["baseline", "status"] == "✅ completed"
    assert rows.loc["diverged", "status"] == "❌ failed"
    assert rows.loc["baseline", "accuracy"] == pytest.approx(25.0)
    assert rows.loc["diverged", "stages"].endswith("pretrain 17/40")
    assert rows.loc["diverged", "progress"] == pytest.approx(17 / 40)


def test_empty_store_says_how_to_start(store):
    at = runs_page()
    assert "No runs yet" in texts(at.info)


def test_new_run_with_a_bad_setting_is_refused_and_creates_nothing(store, started):
    at = runs_page()
    edit(at, "steps", "0")
    at.button[0].click().run()  # the form's "Start run"
    assert "steps must be > 0, got 0" in texts(at.error)
    assert not at.success
    assert store.list_runs() == [] and started == []


def test_new_run_with_a_valid_form_is_created_and_started(store, started):
    at = runs_page()
    at.selectbox(key="new_preset").select("smoke").run()
    at.text_input(key="new_name").input("short pretrain")
    edit(at, "steps", "12")
    at.button[0].click().run()
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    assert f"Run #{run.id} started" in texts(at.success)
    assert run.name == "short pretrain" and run.preset == "smoke"
    assert run.stages[0].config["steps"] == 12          # the edit, as an int
    assert run.stages[0].config["hidden_size"] == 32    # the smoke preset's value, untouched
    assert started == [run.id]


def test_delete_asks_for_confirmation_then_removes_the_run(store):
    keep, _ = make_run(store, "keep me", status="completed", step=40, total_steps=40)
    doomed, _ = make_run(store, "delete me", status="completed", step=40, total_steps=40)
    at = runs_page()
    at.session_state["runs_table_0"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="ask_delete").click().run()
    assert "delete me" in texts(at.warning)
    assert {r.id for r in store.list_runs()} == {keep, doomed}  # nothing gone yet
    at.button(key="confirm_delete_yes").click().run()
    assert [r.id for r in store.list_runs()] == [keep]
    assert f"Run #{doomed} deleted" in texts(at.toast)
    assert list(at.dataframe[0].value["name"]) == ["keep me"]


def test_delete_can_be_cancelled(store):
    run_id, _ = make_run(store, "survivor")
    at = runs_page()
    at.session_state["runs_table_0"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="ask_delete").click().run()
    at.button(key="confirm_delete_no").click().run()
    assert not at.warning
    assert [r.id for r in store.list_runs()] == [run_id]


# -- Stage page ------------------------------------------------------------------------------
def test_running_stage_shows_progress_eta_numbers_and_live_controls(store):
    run_id, stage_id = make_run(store, **running())
    store.add_metrics(stage_id, 10, {"loss": 2.9, "learning_rate": 1e-3})
    store.add_metrics(stage_id, 20, {"loss": 2.5, "learning_rate": 2e-3})
    at = stage_page(run_id)
    assert not at.exception
    shown = progress_text(at)
    assert shown.startswith("step 120/800 · ") and shown.endswith(" left")
    metrics = tiles(at)
    assert metrics["Step"] == "120" and metrics["Total steps"] == "800"
    assert metrics["PID"] == str(os.getpid())
    enabled = {key: not at.button(key=key).disabled
               for key in ("pause", "resume", "stop", "resume_checkpoint")}
    assert enabled == {"pause": True, "resume": False, "stop": True, "resume_checkpoint": False}
    assert at.multiselect(key=f"metrics_{stage_id}").value == ["loss"]
    assert at.get("plotly_chart")


def test_clicking_pause_writes_a_pause_command(store):
    run_id, stage_id = make_run(store, **running())
    at = stage_page(run_id, stage_id)
    at.button(key="pause").click().run()
    assert [c.kind for c in store.commands(stage_id)] == ["pause"]
    assert "pause requested" in texts(at.toast)


def test_failed_stage_shows_its_error_in_full_and_offers_only_a_restart(store):
    run_id, stage_id = make_run(store, status="failed", step=17, total_steps=40,
                                error=TRACEBACK)
    at = stage_page(run_id)
    assert "FloatingPointError: loss is nan at step 17" in texts(at.error)
    assert TRACEBACK in texts(at.code)
    assert progress_text(at) == "step 17/40 · failed"
    enabled = {key: not at.button(key=key).disabled
               for key in ("pause", "resume", "stop", "resume_checkpoint")}
    assert enabled == {"pause": False, "resume": False, "stop": False, "resume_checkpoint": True}


def test_completed_stage_shows_heldout_accuracy(store):
    run_id, _ = make_run(store, status="completed", step=40, total_steps=40,
                         started_at=now() - timedelta(seconds=75), ended_at=now(),
                         summary={"accuracy": 0.25, "accuracy_lenient": 0.5, "problems": 50})
    at = stage_page(run_id)
    metrics = tiles(at)
    assert metrics["Held-out accuracy"] == "25.0%"
    assert metrics["Lenient accuracy"] == "50.0%"
    assert progress_text(at) == "step 40/40 · done in 1m 15s"


def test_stage_page_opens_on_the_newest_run_without_query_params(store):
    make_run(store, "older")
    newest, stage_id = make_run(store, "newer", **running())
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/stage.py").run()
    assert at.selectbox[0].value == newest
    assert at.selectbox[1].value == stage_id
    assert at.query_params == {"run": str(newest), "stage": str(stage_id)}


def test_pages_never_import_training_libraries(store):
    # The UI never trains: rendering both pages must not pull in torch / transformers / trl.
    run_id, stage_id = make_run(store, **running())
    store.add_metrics(stage_id, 10, {"loss": 2.9})
    out = training_libs_imported(run_id, ['pages/stage.py'])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- helpers ---------------------------------------------------------------------------------
class FakeStage:
    def __init__(self, status="running", step=0, total_steps=None, attempt_started_step=0,
                 started_at=None, heartbeat_at=None, ended_at=None, id=1):
        self.__dict__.update(locals())


@pytest.mark.parametrize("statuses, expected", [
    (["completed", "running", "queued"], 1),    # the active stage
    (["completed", "failed", "queued"], 1),     # else the one that needs attention
    (["completed", "completed", "queued"], 1),  # else the newest that ran
    (["queued", "queued"], 0),                  # else the first
])
def test_default_stage(statuses, expected):
    stages = [FakeStage(status=s, id=i) for i, s in enumerate(statuses)]
    assert default_stage(stages).id == expected

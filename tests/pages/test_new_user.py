"""The R1-Zero slice as a new user finds it (issue 7): run results, clone and re-run, the
evaluation table, a deleted run in another tab, downloads, the stage log. AppTest against a
store the tests fill directly; nothing trains, nothing starts (``start_pipeline`` replaced)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench
from storage import Store
from storage.records import Group, Rollout
from tests.pages.test_pages import TRACEBACK, edit, make_run, stage_page, texts
from tests.pages.test_training_groups import grpo_run, page, running

APP = str(Path(__file__).resolve().parents[2] / "app.py")

# What an evaluate stage writes (backend/stages/evaluate.py), from a real tiny run.
EVAL_SUMMARY = {
    "dataset": "synthetic arithmetic", "split": "heldout", "problems": 64, "k": 4,
    "temperature": 0.7, "accuracy": 0.922, "think_rate": 0.98, "gain_points": 60.6,
    "base": {"greedy_pass@1": 0.316, "sampled_pass@1": 0.25, "cons@4": 0.3,
             "greedy_lenient": 0.4, "think_rate": 0.1},
    "final": {"greedy_pass@1": 0.922, "sampled_pass@1": 0.85, "cons@4": 0.9,
              "greedy_lenient": 0.93, "think_rate": 0.98,
              "examples": [{"prompt": "3+4=", "completion": "<answer>7</answer>",
                            "correct": True}]},
}


@pytest.fixture
def started(home, monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr("backend.runner.start_pipeline",
                        lambda store, run_id: calls.append(run_id) or 0)
    return calls


@pytest.fixture
def store(started) -> Store:
    return Store()


def r1_zero_run(store: Store, name: str, statuses: tuple[str, str, str],
                grpo_summary: dict | None = None, eval_summary: dict | None = None) -> int:
    specs = Workbench.default_stages("r1-zero", "smoke")
    run = store.create_run(name, "r1-zero", "smoke", {"sets": {}}, specs)
    for stage, status in zip(run.stages, statuses):
        store.update_stage(stage.id, status=status)
    grpo, evaluate = run.stages[1], run.stages[2]
    if grpo_summary:
        store.update_stage(grpo.id, summary=grpo_summary)
    if eval_summary:
        store.update_stage(evaluate.id, summary=eval_summary)
    return run.id


def runs_page(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


# -- Runs page ---------------------------------------------------------------------------------
def test_a_run_shows_its_own_evaluation_result_and_a_failed_run_none(store):
    r1_zero_run(store, "finished", ("completed", "completed", "completed"),
                grpo_summary={"accuracy": 0.5}, eval_summary=EVAL_SUMMARY)
    # Failed in GRPO: its evaluate stage never ran; the base model's 31.6% is not its result.
    r1_zero_run(store, "failed", ("completed", "failed", "queued"),
                grpo_summary={"accuracy": 0.316})
    rows = runs_page().dataframe[0].value.set_index("name")
    assert rows.loc["finished", "accuracy"] == pytest.approx(92.2)
    assert rows.loc["failed", "accuracy"] is None or rows.loc["failed", "accuracy"] != \
        rows.loc["failed", "accuracy"]  # NaN: shown as "–"


def test_the_recipe_box_opens_on_r1_zero(store):
    assert runs_page().selectbox(key="new_recipe").value == "r1-zero"


def test_clone_a_failed_run_with_a_fixed_config_starts_one_run(store, started):
    run_id, _ = make_run(store, "diverged", status="failed", step=17, total_steps=40,
                         error=TRACEBACK)
    at = runs_page(clone_of=run_id)
    assert "loss is nan at step 17" in texts(at.caption)  # why it stopped, above the editor
    edit(at, "learning_rate", "0.0001")
    button(at, "Start clone").click().run()
    assert not at.exception and not at.error, texts(at.error)
    new = [run for run in store.list_runs() if run.id != run_id]
    assert len(new) == 1 and started == [new[0].id]
    assert new[0].stages[0].config["learning_rate"] == pytest.approx(1e-4)
    assert new[0].name == f"diverged (clone of #{run_id})"
    assert f"Run #{new[0].id} started" in texts(at.success)


def test_clone_with_a_bad_value_is_refused_and_creates_nothing(store, started):
    run_id, _ = make_run(store, "diverged", status="failed", error=TRACEBACK)
    at = runs_page(clone_of=run_id)
    edit(at, "learning_rate", "-1")
    button(at, "Start clone").click().run()
    assert "Run not created" in texts(at.error)
    assert len(store.list_runs()) == 1 and started == []


def test_one_click_starts_one_run(store, started):
    at = runs_page()
    at.selectbox(key="new_recipe").select("pretrain-base").run()
    at.selectbox(key="new_preset").select("smoke").run()
    button(at, "Start run").click().run()
    (run,) = store.list_runs()
    assert started == [run.id]
    assert f"Run #{run.id} started" in texts(at.success)
    assert "Start run" in [b.label for b in at.button]  # a fresh, empty form for the next run
    # The same form, drawn again, does not start the run again on a rerun.
    at.run()
    assert len(store.list_runs()) == 1


# -- Stage page --------------------------------------------------------------------------------
def test_fix_config_and_rerun_a_failed_stage(store, started):
    run_id, stage_id = make_run(store, status="failed", step=17, total_steps=40,
                                error=TRACEBACK)
    at = stage_page(run_id)
    editor = at.data_editor(key=f"rerun_config_{stage_id}_0")
    row = list(editor.value["setting"]).index("learning_rate")
    at.session_state[editor.key] = {"edited_rows": {row: {"value": "0.0001"}},
                                    "added_rows": [], "deleted_rows": []}
    button(at, "Re-run with this config").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert store.get_stage(stage_id).config["learning_rate"] == pytest.approx(1e-4)
    assert started == [run_id]
    assert "learning_rate=0.0001" in texts(at.toast)


def test_rerun_with_a_bad_value_says_why(store, started):
    run_id, stage_id = make_run(store, status="failed", error=TRACEBACK)
    at = stage_page(run_id)
    editor = at.data_editor(key=f"rerun_config_{stage_id}_0")
    row = list(editor.value["setting"]).index("learning_rate")
    at.session_state[editor.key] = {"edited_rows": {row: {"value": "-1"}},
                                    "added_rows": [], "deleted_rows": []}
    button(at, "Re-run with this config").click().run()
    assert "Not re-run" in texts(at.error) and started == []


def test_rerun_form_draws_named_choices_as_select_boxes(store, started):
    """The re-run form draws a stage's settings as the New run form does: a failed GRPO
    stage re-run on 2 processes by choosing the launcher, not by typing it in the table."""
    specs = Workbench.default_stages("r1-zero", "smoke")
    run = store.create_run("mp", "r1-zero", "smoke", {"sets": {}}, specs)
    grpo = next(s for s in run.stages if s.kind == "grpo")
    store.update_stage(grpo.id, status="failed", error=TRACEBACK)
    at = stage_page(run.id, grpo.id)
    key = f"rerun_config_{grpo.id}_0"
    assert "launcher" not in list(at.data_editor(key=key).value["setting"])
    assert at.selectbox(key=f"{key}_generation_backend").value == "hf"
    at.selectbox(key=f"{key}_launcher").select("accelerate").run()
    at.number_input(key=f"{key}_num_processes").set_value(2).run()
    code = "\n".join(c.value for c in at.code if "-m backend _worker" in c.value)
    assert "--num_processes 2" in code and code.endswith(f"--stage {grpo.id}")  # its own id
    button(at, "Re-run with this config").click().run()
    assert not at.exception and not at.error, texts(at.error)
    config = store.get_stage(grpo.id).config
    assert (config["launcher"], config["num_processes"]) == ("accelerate", 2)
    assert started == [run.id]
    assert "launcher=accelerate" in texts(at.toast)


def test_evaluate_stage_shows_the_base_to_final_table(store):
    run_id = r1_zero_run(store, "finished", ("completed", "completed", "completed"),
                         eval_summary=EVAL_SUMMARY)
    evaluate = store.get_run(run_id).stages[2]
    at = stage_page(run_id, evaluate.id)
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    rows = table.set_index("metric")
    assert rows.loc["greedy pass@1", "base"] == "31.6%"
    assert rows.loc["greedy pass@1", "final"] == "92.2%"
    assert rows.loc["greedy pass@1", "gain (points)"] == "+60.6"
    assert rows.loc["cons@4 (majority of 4 samples)", "final"] == "90.0%"
    assert rows.loc["uses <think>", "final"] == "98.0%"
    assert "64 held-out problems of `synthetic arithmetic`" in texts(at.caption)
    assert "Held-out examples, final model (1)" in [e.label for e in at.expander]


TRL_LINE = ("{'loss': 0.0123, 'grad_norm': 0.5, 'learning_rate': 3e-05, 'reward': 1.25, "
            "'reward_std': 0.4, 'kl': 0.0, 'entropy': 0.9, 'clip_ratio/low_mean': 0.0, "
            "'epoch': 0.5}")


def test_stage_log_shows_trl_dicts_as_short_lines(store, monkeypatch):
    run_id, stage_id = make_run(store, status="completed", step=40, total_steps=40)
    monkeypatch.setattr(Workbench, "log_tail",
                        lambda self, sid, lines=60: "starting\n" + TRL_LINE + "\n")
    at = stage_page(run_id)
    log = texts(at.code)
    assert "epoch 0.5 · loss 0.0123 · reward 1.25" in log
    assert "{'loss'" not in log and "starting" in log


# -- a run deleted in another tab --------------------------------------------------------------
@pytest.mark.parametrize("name", ["training", "stage", "groups"])
def test_a_deleted_run_shows_a_message_and_a_link_back(store, name):
    run_id, stage_id = grpo_run(store, **running())
    at = page(name, run_id, stage_id)
    assert not at.exception
    store.delete_run(run_id)  # another tab (or the CLI) deleted it
    at.run()
    assert not at.exception
    assert f"Run {run_id} was deleted." in texts(at.warning)
    assert "Apply at next step" not in [b.label for b in at.button]


# -- downloads ---------------------------------------------------------------------------------
def test_downloads_have_the_cli_exports_content(store, tmp_path):
    run_id, stage_id = grpo_run(store, status="completed", step=1, total_steps=1)
    store.add_groups(stage_id, 1, [Group(1, 0, "2+2?", "4", 0.5, 0.5, [
        Rollout(0, "<answer>4</answer>", {"accuracy": 1.0}, 1.0, 0.5, 5, False),
        Rollout(1, "<answer>5</answer>", {"accuracy": 0.0}, 0.0, -0.5, 5, False)])])
    wb = Workbench()
    out = tmp_path / "rollouts.jsonl"
    assert wb.export_rollouts(run_id, str(out)) == 2
    rows = wb.rollout_rows(run_id, stage_id)
    assert wb.export_bytes(rows, "jsonl") == out.read_bytes()
    assert [json.loads(line)["completion"] for line in out.read_text().splitlines()] == [
        "<answer>4</answer>", "<answer>5</answer>"]
    assert wb.export_bytes(rows, "csv").startswith(b"run_id,stage_id,step")
    assert wb.export_bytes(rows, "parquet")[:4] == b"PAR1"


# -- Live training before its stage starts ---------------------------------------------------
def test_live_training_says_what_runs_before_grpo_starts(store):
    import os
    import socket
    from datetime import timedelta

    from storage.store import now

    run_id = r1_zero_run(store, "fresh", ("queued", "queued", "queued"))
    pretrain = store.get_run(run_id).stages[0]
    store.update_stage(pretrain.id, status="running", step=30, total_steps=120,
                       pid=os.getpid(), host=socket.gethostname(), heartbeat_at=now(),
                       started_at=now() - timedelta(seconds=30), attempt_started_step=0)
    at = page("training", run_id)
    note = texts(at.info)
    assert "Queued behind stage 1 of 3" in note and "(pretrain) is running" in note
    assert "step 30/120" in note


# -- Group inspector ---------------------------------------------------------------------------
def test_inspector_downloads_the_steps_groups_and_keeps_the_history_whole(store):
    from tests.pages.test_training_groups import groups

    run_id, stage_id = grpo_run(store, status="completed", step=2, total_steps=2)
    store.add_groups(stage_id, 1, groups(1))
    store.add_groups(stage_id, 2, groups(2))
    at = page("groups", run_id, stage_id)
    assert not at.exception
    download = at.get("download_button")
    assert len(download) == 1 and "Download step 2 (jsonl)" in str(download[0].proto)
    wb = Workbench()
    rows = [json.loads(line) for line in
            wb.export_bytes(wb.rollout_rows(run_id, stage_id, 2), "jsonl").splitlines()]
    assert {r["step"] for r in rows} == {2} and len(rows) == 16
    # The same rows as the whole run's export (the CLI's), in the same order.
    assert wb.rollout_rows(run_id, stage_id, 2) == [
        r for r in wb.rollout_rows(run_id) if r["step"] == 2]
    # Follow a prompt: the history table shows every column, the page scrolls to it.
    button(at, "Follow this prompt across steps").click().run()
    history = next(d.value for d in at.dataframe if "no answer" in d.value.columns)
    assert list(history["step"]) == [1, 2]
    assert any("scrollIntoView" in str(getattr(e, "proto", "")) for e in at.get("iframe"))


# -- a toast when a run ends -----------------------------------------------------------------
@pytest.mark.parametrize("name,status,toast", [
    ("runs", "completed", "finished"), ("stage", "failed", "failed"),
    ("training", "completed", "finished")])
def test_a_toast_when_a_run_ends_while_the_app_is_open(store, name, status, toast):
    run_id = r1_zero_run(store, "tiny", ("completed", "completed", "running"))
    at = page(name, run_id)
    assert f"Run #{run_id}" not in texts(at.toast)
    store.update_stage(store.get_run(run_id).stages[2].id, status=status)
    at.run()
    assert f"Run #{run_id} (tiny) {toast}" in texts(at.toast)
    at.run()  # said once
    assert f"Run #{run_id} (tiny)" not in texts(at.toast)

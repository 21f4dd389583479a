"""The SFT stage: cold-start examples, completion-only loss, and SFT on curated data that waits
in "waiting" until the dataset is marked ready, then trains on a frozen snapshot.

The stage tests run real worker processes on an untrained tiny model for a few steps (slow:
tens of seconds each); the example and config tests need no model.
"""
from __future__ import annotations

import os
import re
import signal

import pytest

from backend import runner
from backend.api import Workbench
from backend.contract import DatasetArtifact, ProblemSource
from backend.stages.common import ConfigError
from backend.stages.sft import SFTStageConfig
from backend.tasks.addition import AdditionTask, worked_solution
from storage import ACCEPTED, PENDING, REJECTED, StageSpec
from tests.conftest import wait_for

COLD_START = re.compile(r"<think>(.*)</think>(.*)<answer>(.*)</answer>")


# ------------------------------------------------------------------------------ examples
@pytest.mark.parametrize("digits", [(1, 2), (1, 3), (3, 5)])
def test_cold_start_examples_reason_summarise_and_answer(digits):
    task = AdditionTask(min_digits=digits[0], max_digits=digits[1], heldout_size=50)
    examples = task.cold_start_examples(200, seed=3)
    assert len(examples) == 200
    assert len({e["prompt"] for e in examples}) == 200  # distinct problems
    held = {p.prompt for p in task.heldout()}
    for e in examples:
        a, b = (int(x) for x in e["prompt"].rstrip("=").split("+"))
        think, summary, answer = COLD_START.fullmatch(e["completion"]).groups()
        assert think == worked_solution(a, b)  # the worked column sums
        assert summary == f"={a + b}"  # the readable summary states the result
        assert answer == e["answer"] == str(a + b)
        assert e["prompt"] not in held
    assert task.cold_start_examples(200, seed=3) == examples  # reproducible
    assert task.cold_start_examples(200, seed=4) != examples


def test_cold_start_examples_are_spelled_in_the_tiny_vocabulary():
    from backend.models import build_tokenizer

    tok = build_tokenizer()
    for e in AdditionTask().cold_start_examples(50, seed=0):
        ids = tok(e["prompt"] + e["completion"], add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == e["prompt"] + e["completion"]


@pytest.mark.parametrize("values,message", [
    ({"batch_size": 0}, "batch_size"),
    ({"steps": 0, "epochs": 0}, "epochs"),
    ({"examples": 0}, "examples"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"prompt_template": "no placeholder"}, "prompt_template"),
    ({"min_digits": 4, "max_digits": 2}, "min_digits"),
    ({"auto_accept": "maybe"}, "auto_accept"),
    ({"epoch": 1}, "unknown setting"),
    ({"model_path": "/no/such/model"}, "model_path: /no/such/model does not exist"),
    ({"dataset": "/no/such/file.jsonl"}, "dataset: /no/such/file.jsonl does not exist"),
])
def test_bad_config_is_refused_with_the_setting_named(values, message):
    with pytest.raises(ConfigError, match=message):
        SFTStageConfig.from_dict(values)


def test_cold_start_from_a_file(tmp_path):
    from backend.stages.sft import _cold_start_rows
    from backend.tasks.loaders import DatasetError

    path = tmp_path / "cot.jsonl"
    path.write_text('{"question": "2+2=", "solution": "<think>2+2=4</think>4<answer>4</answer>"'
                    ', "answer": 4}\n', encoding="utf-8")
    cfg = SFTStageConfig(dataset=str(path), prompt_column="question",
                         completion_column="solution")
    (row,) = _cold_start_rows(cfg, None)
    assert (row["prompt"], row["answer"], row["status"]) == ("2+2=", "4", ACCEPTED)
    assert row["completion"] == "<think>2+2=4</think>4<answer>4</answer>"
    assert row["meta"] == {"file": str(path), "file_row": 0}
    with pytest.raises(DatasetError, match="set sft.completion_column="):
        _cold_start_rows(SFTStageConfig(dataset=str(path), prompt_column="question"), None)


@pytest.mark.parametrize("steps,epochs,rows,batch,expected", [
    (0, 3.0, 300, 16, 57), (0, 1.0, 10, 16, 1), (25, 3.0, 300, 16, 25)])
def test_steps_from_epochs(steps, epochs, rows, batch, expected):
    cfg = SFTStageConfig(steps=steps, epochs=epochs, batch_size=batch)
    assert cfg.total_steps(rows) == expected


def test_loss_covers_the_completion_only(tiny_model_dir, tmp_path):
    from trl import SFTTrainer

    from backend.models import load_model
    from backend.prompts import PromptFormat
    from backend.stages.sft import _train_dataset, sft_args
    from storage import SnapshotRow

    model, tok = load_model(tiny_model_dir)
    row = SnapshotRow(position=0, row_id=1, prompt="12+5=", answer="17", source="x", meta={},
                      completion="<think>2+5+0=7,1+0+0=1</think>12+5=17<answer>17</answer>")
    trainer = SFTTrainer(model=model, args=sft_args(SFTStageConfig(steps=1), tmp_path, 1),
                         train_dataset=_train_dataset([row], PromptFormat()),
                         processing_class=tok)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    prompt_len = len(tok("12+5=", add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len  # no loss on the prompt
    assert labels[prompt_len:] == ids[prompt_len:]  # loss on every completion token
    assert ids[-1] == tok.eos_token_id  # EOS included: the model learns to stop
    assert tok.decode(ids[prompt_len:-1]) == row.completion


# ------------------------------------------------------------------------------ stages
def _cfg(tiny_model_dir: str, **values) -> dict:
    base = {"model_path": tiny_model_dir, "steps": 4, "batch_size": 4, "save_steps": 2,
            "examples": 24, "eval_problems": 5, "max_new_tokens": 8}
    return SFTStageConfig.from_dict({**base, **values}).to_dict()


def _stage(wb: Workbench, run_id: int, key: str = "sft"):
    return next(s for s in wb.get_run(run_id).stages if s.key == key)


def _finished(wb, run_id, key="sft"):
    stage = _stage(wb, run_id, key)
    return stage if stage.status in ("completed", "failed", "stopped", "interrupted") else None


def _curated_rows(heldout_prompt: str) -> list[dict]:
    rows = []
    for i, (a, b) in enumerate([(12, 5), (31, 44), (7, 8), (50, 25), (9, 90), (23, 23)]):
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b), "source": "reasoning",
                     "completion": f"<think>{worked_solution(a, b)}</think>{a}+{b}={a + b}"
                                   f"<answer>{a + b}</answer>",
                     "status": PENDING, "meta": {"rollout": i, "step": 10, "length": 30 + i}})
    rows.append({"prompt": heldout_prompt, "completion": "<answer>0</answer>", "answer": "0",
                 "source": "reasoning", "status": PENDING, "meta": {"rollout": 9}})
    return rows


def _curated_run(wb: Workbench, tiny_model_dir: str, **values):
    """A run whose first stage (a stand-in for rejection sampling) has completed with a
    dataset of pending candidates; its SFT stage is wired to that dataset."""
    problems = ProblemSource(kind="synthetic", min_digits=1, max_digits=2, heldout_size=20)
    heldout_prompt = problems.heldout()[0].prompt
    ds = wb.store.create_dataset("rs", "rejection", _curated_rows(heldout_prompt))
    run = wb.store.create_run("curated sft", "custom", "tiny", {}, [
        StageSpec("pretrain", "rejection sampling (stand-in)", {}, key="rs"),
        StageSpec("sft", "SFT", _cfg(tiny_model_dir, **values), key="sft",
                  inputs={"dataset": "rs.dataset", "problems": "rs.problems"}),
    ])
    rs = run.stages[0]
    wb.store.update_stage(rs.id, outputs={"dataset": DatasetArtifact(dataset_id=ds).to_dict(),
                                          "problems": problems.to_dict()})
    assert wb.store.transition(rs.id, ["queued"], "completed")
    runner.start_pipeline(wb.store, run.id)
    return run.id, ds, heldout_prompt


@pytest.mark.slow
def test_cold_start_on_the_tiny_task_produces_a_model(db_url, tiny_model_dir):
    from backend.models import load_model

    wb = Workbench(db_url)
    run = wb.store.create_run("cold", "custom", "tiny", {}, [
        StageSpec("sft", "cold start", _cfg(tiny_model_dir), key="sft")])
    runner.start_pipeline(wb.store, run.id)
    stage = wait_for(lambda: _finished(wb, run.id), 240, what="the cold-start stage")
    assert stage.status == "completed", stage.error
    assert stage.step == 4
    # the examples it trained on are a stored dataset, frozen in a snapshot with its hash
    (snap,) = wb.snapshots(stage_id=stage.id)
    assert stage.summary["snapshot_hash"] == snap.content_hash
    assert stage.outputs["dataset"] == {"type": "dataset", "dataset_id": snap.dataset_id,
                                        "snapshot": snap.content_hash}
    rows = wb.snapshot_rows(snap.id)
    assert len(rows) == 24 and all(COLD_START.fullmatch(r.completion) for r in rows)
    assert wb.get_dataset(snap.dataset_id).kind == "cold_start"
    # a model that loads, prompted the way its input was
    model_out = stage.outputs["model"]
    assert model_out["prompt_format"] == {"style": "plain", "template": "{prompt}"}
    load_model(model_out["path"])
    # loss and token accuracy were logged live, every step
    names = set(wb.metric_names(stage.id))
    assert {"loss", "mean_token_accuracy", "learning_rate"} <= names
    assert [m.step for m in wb.metrics(stage.id, ["loss"])] == [1, 2, 3, 4]
    assert stage.summary["problems"] == 5 and "accuracy" in stage.summary


@pytest.mark.slow
def test_sft_waits_for_review_then_trains_on_a_frozen_snapshot(db_url, tiny_model_dir):
    wb = Workbench(db_url)
    run_id, ds, heldout_prompt = _curated_run(wb, tiny_model_dir)
    stage = wait_for(lambda: (s := _stage(wb, run_id)).status == "waiting" and s, 120,
                     what="the SFT stage to wait for review")
    assert wb.get_run(run_id).status == "waiting"
    assert stage.summary["waiting_for_dataset"] == ds
    # alive while waiting: the heartbeat moves and the reaper leaves it alone
    beat = stage.heartbeat_at
    wait_for(lambda: _stage(wb, run_id).heartbeat_at > beat, 10, what="a heartbeat")
    assert runner.reap(wb.store) == []

    # pause holds the wait, resume goes back to waiting
    wb.pause(stage.id)
    wait_for(lambda: _stage(wb, run_id).status == "paused", 20, what="paused while waiting")
    wb.resume(stage.id)
    wait_for(lambda: _stage(wb, run_id).status == "waiting", 20, what="waiting again")
    # a learning rate set while waiting is used from the first step
    wb.set_params(stage.id, {"learning_rate": 2e-3})
    wait_for(lambda: wb.commands(stage.id)[-1].applied_at, 20, what="the change applied")
    assert wb.commands(stage.id)[-1].error is None

    # the reviewer accepts the candidates of non-held-out prompts, rejects one, edits one
    rows = wb.curation_rows(ds)
    wb.bulk_review(ds, wb.make_filter(where=["step=10"]), ACCEPTED, author="reviewer")
    wb.review_row(rows[2].id, REJECTED, author="reviewer")
    edited = wb.edit_row(rows[1].id, "completion", "<think>edited</think><answer>75</answer>",
                         expected_version=wb.get_row(rows[1].id).version, author="reviewer")
    # a held-out prompt that slipped into the accepted rows is never trained on
    wb.review_row(rows[6].id, ACCEPTED)
    accepted_at_ready = [r for r in wb.curation_rows(ds, wb.make_filter(status=ACCEPTED))
                         if r.prompt != heldout_prompt]
    wb.mark_ready(ds, author="reviewer")

    done = wait_for(lambda: _finished(wb, run_id), 240, what="SFT to finish")
    assert done.status == "completed", done.error
    (snap,) = wb.snapshots(stage_id=done.id)
    frozen = wb.snapshot_rows(snap.id)
    assert [(r.row_id, r.completion) for r in frozen] == [
        (r.id, r.completion) for r in accepted_at_ready]
    assert edited.completion in [r.completion for r in frozen]
    assert heldout_prompt not in [r.prompt for r in frozen]
    assert wb.get_row(rows[6].id).status == REJECTED  # recorded, with the stage as author
    assert done.summary["snapshot_hash"] == snap.content_hash
    assert done.outputs["dataset"]["snapshot"] == snap.content_hash
    status = wb.run_status(run_id)
    assert status["stages"][1]["summary"]["snapshot_hash"] == snap.content_hash
    # the linear schedule runs from the new rate: the rate logged at step k is the one after
    # k-1 of its 4 decay steps (the Trainer logs the scheduler's last rate, so step 1 still
    # shows the rate the scheduler was built with)
    lr = {m.step: m.value for m in wb.metrics(done.id, ["learning_rate"])}
    assert [lr[k] / (1 - (k - 1) / 4) for k in (2, 3, 4)] == pytest.approx([2e-3] * 3)

    # a later edit changes the dataset, never what the finished stage trained on
    wb.edit_row(frozen[0].row_id, "completion", "changed after training", expected_version=None)
    wb.bulk_review(ds, None, REJECTED)
    assert wb.snapshot_rows(snap.id) == frozen
    assert wb.snapshots(stage_id=done.id)[0].content_hash == snap.content_hash


@pytest.mark.slow
def test_a_killed_or_stopped_wait_resumes_waiting_and_a_ui_restart_loses_nothing(
        db_url, tiny_model_dir):
    wb = Workbench(db_url)
    run_id, ds, _ = _curated_run(wb, tiny_model_dir)
    stage = wait_for(lambda: (s := _stage(wb, run_id)).status == "waiting" and s, 120,
                     what="waiting")
    # the review goes on meanwhile
    wb.bulk_review(ds, wb.make_filter(where=["step=10"]), ACCEPTED)

    os.kill(stage.pid, signal.SIGKILL)
    wait_for(lambda: _stage(wb, run_id).status == "interrupted", 20, what="interrupted")
    wb.resume(stage.id)
    wait_for(lambda: _stage(wb, run_id).status == "waiting", 120, what="waiting after resume")

    wb.stop(stage.id)
    wait_for(lambda: _stage(wb, run_id).status == "stopped", 20, what="stopped while waiting")
    wb.resume(stage.id)
    wait_for(lambda: _stage(wb, run_id).status == "waiting", 120, what="waiting after stop")

    # a fresh API object (a restarted UI) sees the wait and ends it
    restarted = Workbench(db_url)
    assert _stage(restarted, run_id).status == "waiting"
    assert restarted.queue_counts(ds)[ACCEPTED] == 6  # no review lost either
    restarted.mark_ready(ds)
    done = wait_for(lambda: _finished(restarted, run_id), 240, what="SFT to finish")
    assert done.status == "completed", done.error
    assert len(restarted.snapshots(stage_id=done.id)) == 1
    assert restarted.snapshots(stage_id=done.id)[0].size == 6


@pytest.mark.slow
def test_auto_accept_trains_without_waiting(db_url, tiny_model_dir):
    wb = Workbench(db_url)
    run_id, ds, heldout_prompt = _curated_run(wb, tiny_model_dir, auto_accept="true")
    done = wait_for(lambda: _finished(wb, run_id), 240, what="SFT to finish")
    assert done.status == "completed", done.error
    history = wb.curation_history(ds)
    assert any(a.author.startswith("auto_accept") and a.rows == 7 for a in history)
    (snap,) = wb.snapshots(stage_id=done.id)
    assert snap.size == 6  # every candidate but the held-out prompt
    assert wb.get_dataset(ds).ready
    statuses = [e.message for e in wb.events(run_id, done.id)]
    assert not any("waiting for review" in m for m in statuses)


@pytest.mark.slow
def test_an_empty_accepted_set_fails_clearly_and_goes_back_to_review(db_url, tiny_model_dir):
    wb = Workbench(db_url)
    run_id, ds, _ = _curated_run(wb, tiny_model_dir)
    wait_for(lambda: _stage(wb, run_id).status == "waiting", 120, what="waiting")
    wb.bulk_review(ds, None, REJECTED)
    wb.mark_ready(ds)
    failed = wait_for(lambda: _finished(wb, run_id), 60, what="the stage to fail")
    assert failed.status == "failed"
    assert f"dataset {ds} has no accepted rows" in failed.error.splitlines()[0]
    assert wb.get_dataset(ds).ready is False  # back in review
    assert wb.queue_counts(ds)[REJECTED] == 7  # nothing lost


def test_cold_start_generated_examples_avoid_the_wired_problems_heldout():
    problems = ProblemSource(kind="synthetic", min_digits=1, max_digits=2, heldout_size=200)
    held = {p.prompt for p in problems.heldout()}
    examples = problems._task().cold_start_examples(300, seed=0)
    assert not held & {e["prompt"] for e in examples}

"""``train_and_save``: the tail every Trainer stage shares (train with resume, stop, save the
final model and tokenizer, record them). Driven with a stand-in trainer that writes files the
way a Trainer does, so the rule is checked in milliseconds; the stage tests (sft, judge,
reward_model) run it on real TRL trainers."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from backend.stages import STAGE_KINDS
from backend.stages.context import StageContext, StageStopped, train_and_save
from storage import Store
from storage.records import StageSpec


class Tokenizer:
    def save_pretrained(self, path: str) -> None:
        Path(path, "tokenizer.json").write_text("{}")


class FakeTrainer:
    """Trains ``steps`` steps; ``stop_at`` makes the user's stop arrive during training (as
    ``attach_trainer``'s callback would set it); ``fail`` raises inside train()."""

    def __init__(self, ctx: StageContext, steps: int, stop_at: Optional[int] = None,
                 fail: bool = False):
        self.ctx, self.steps, self.stop_at, self.fail = ctx, steps, stop_at, fail
        self.state = SimpleNamespace(global_step=0)
        self.processing_class = Tokenizer()
        self.resumed_from = "not called"

    def train(self, resume_from_checkpoint=None):
        self.resumed_from = resume_from_checkpoint
        if self.fail:
            raise FloatingPointError("loss is nan")
        self.state.global_step = self.stop_at or self.steps
        if self.stop_at:
            self.ctx.stop_requested = True

    def save_model(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        Path(path, "model.safetensors").write_bytes(b"weights")


@pytest.fixture
def ctx(home, tmp_path):
    store = Store()
    run = store.create_run("t", "test", "smoke", {}, [StageSpec("sft", "SFT", {}, key="sft")])
    stage_id = run.stages[0].id
    store.update_stage(stage_id, output_dir=str(tmp_path / "out"))
    context = StageContext(store, store.get_stage(stage_id), store.get_run(run.id),
                           STAGE_KINDS["sft"])
    yield context
    context.close()


def test_a_finished_training_saves_model_tokenizer_and_files_and_records_the_final_step(ctx):
    trainer = FakeTrainer(ctx, steps=12)
    final = train_and_save(ctx, trainer, files={"judge.json": '{"template": "t"}'})
    assert final == ctx.output_dir / "final"
    assert sorted(p.name for p in final.iterdir()) == ["judge.json", "model.safetensors",
                                                      "tokenizer.json"]
    (ckpt,) = ctx.store.checkpoints(ctx.stage.id)
    assert (ckpt.kind, ckpt.step, ckpt.path) == ("final", 12, str(final))
    assert trainer.resumed_from is None  # a first attempt starts from scratch


def test_a_stopped_training_raises_and_writes_nothing_final(ctx):
    closed = []
    with pytest.raises(StageStopped):
        train_and_save(ctx, FakeTrainer(ctx, steps=12, stop_at=5),
                       after_train=lambda: closed.append(True))
    assert not (ctx.output_dir / "final").exists()
    assert ctx.store.checkpoints(ctx.stage.id) == []
    assert closed == [True]


def test_a_resumed_stage_trains_from_its_newest_checkpoint(ctx, tmp_path):
    ckpt = tmp_path / "out" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    ctx.store.add_checkpoint(ctx.stage.id, 4, str(ckpt))
    resumed = StageContext(ctx.store, ctx.store.get_stage(ctx.stage.id), ctx.run, ctx.kind)
    try:
        trainer = FakeTrainer(resumed, steps=8)
        train_and_save(resumed, trainer, final_dir=tmp_path / "elsewhere")
    finally:
        resumed.close()
    assert trainer.resumed_from == str(ckpt)
    assert [(c.kind, c.step) for c in ctx.store.checkpoints(ctx.stage.id)] == [
        ("trainer", 4), ("final", 8)]
    assert (tmp_path / "elsewhere" / "model.safetensors").is_file()


def test_a_failing_training_still_runs_after_train_and_records_nothing(ctx):
    closed = []
    with pytest.raises(FloatingPointError):
        train_and_save(ctx, FakeTrainer(ctx, steps=3, fail=True),
                       after_train=lambda: closed.append(True))
    assert closed == [True]
    assert ctx.store.checkpoints(ctx.stage.id) == []


@pytest.mark.slow  # about a minute on a loaded 2-core machine (the tiny model, TRL setup)
def test_checkpoint_now_on_a_real_sft_stage_saves_at_the_step_it_was_applied(
        home, tiny_model_dir, tmp_path):
    """The whole checkpoint-now path on TRL's SFTTrainer, in this process: the command is
    applied at the first step boundary, the Trainer saves a full checkpoint there, and
    ``Workbench.checkpoint_request`` follows it to the saved folder; training goes on to its
    final model."""
    from backend.api import Workbench
    from backend.stages.sft import SFTStageConfig

    wb = Workbench()
    config = SFTStageConfig.from_dict({"model_path": tiny_model_dir, "steps": 3,
                                       "batch_size": 2, "save_steps": 1000, "examples": 8,
                                       "eval_problems": 0}).to_dict()
    run = wb.store.create_run("t", "test", "smoke", {}, [StageSpec("sft", "SFT", config)])
    stage_id = run.stages[0].id
    wb.store.update_stage(stage_id, output_dir=str(tmp_path / "out"))
    wb.store.add_command(stage_id, "checkpoint")
    context = StageContext(wb.store, wb.store.get_stage(stage_id), wb.store.get_run(run.id),
                           STAGE_KINDS["sft"])
    try:
        context._tick()  # fetch the command now, so it is applied at step 1 (not racing)
        STAGE_KINDS["sft"].run(context)
    finally:
        context.close()
    request = wb.checkpoint_request(stage_id)
    assert (request.applied_step, request.saved_step) == (1, 1)
    assert request.saved_path == str(tmp_path / "out" / "checkpoint-1")
    assert (Path(request.saved_path) / "optimizer.pt").is_file()  # resumable, not weights only
    assert request.describe().endswith(f"saved at step 1: {request.saved_path}")
    saved = [(c.kind, c.step) for c in wb.store.checkpoints(stage_id)]
    assert saved[0] == ("trainer", 1) and saved[-1] == ("final", 3)  # (and the Trainer's own at 3)

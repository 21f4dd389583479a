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

"""The GRPO stage: every group recorded with TRL's own advantages; live steering applied at
the step boundary where it was picked up; export gives every rollout."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from backend.api import Workbench
from backend.runner import start_pipeline
from backend.stages.grpo import GroupWriter, GRPOStageConfig, _recording_trainer_class
from storage import Store, StageSpec
from tests.conftest import ROOT, wait_for


def _grpo_spec(model_dir: str, **overrides) -> StageSpec:
    values = {"model_path": model_dir, "steps": 4, "batch_size": 16, "num_generations": 4,
              "max_completion_length": 16, "eval_every": 0, "save_steps": 100, "seed": 3,
              **overrides}
    return StageSpec("grpo", "grpo", GRPOStageConfig.from_dict(values).to_dict())


def test_stored_advantages_equal_trls_own(tiny_model_dir, db_url):
    """Run TRL's trainer in-process for a fixed seed; what the store holds for each rollout
    must equal what TRL itself logged (its `_logs["advantages"]`), in the same order."""
    from datasets import Dataset
    from trl import GRPOConfig

    from backend.models import load_model
    from backend.rewards import REWARD_FUNCTIONS
    from backend.tasks.addition import AdditionTask

    store = Store(db_url)
    stage_id = store.create_run("t", "r1-zero", "smoke", {}, [_grpo_spec(tiny_model_dir)]).stages[0].id
    model, tok = load_model(tiny_model_dir)
    problems = AdditionTask().train_problems(32, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems],
                              "answer": [p.answer for p in problems]})
    args = GRPOConfig(output_dir=str(ROOT / "workbench_data" / "_t"), max_steps=2,
                      per_device_train_batch_size=16, num_generations=4, steps_per_generation=1,
                      max_completion_length=12, report_to="none", seed=7, use_cpu=True,
                      gradient_checkpointing=False, save_strategy="no", logging_steps=1,
                      reward_weights=[1.0, 0.5], disable_tqdm=True)
    trainer = _recording_trainer_class()(
        model=model, reward_funcs=[REWARD_FUNCTIONS["accuracy"], REWARD_FUNCTIONS["tag_count"]],
        args=args, train_dataset=data, processing_class=tok)
    writer = GroupWriter(store, stage_id)
    trainer.on_groups = writer
    from transformers import TrainerCallback

    trl_logged: dict[int, list[float]] = {}

    class Snapshot(TrainerCallback):  # TRL keeps only the latest batch: copy it every step
        def on_step_end(self, args, state, control, **kw):
            trl_logged[state.global_step] = list(trainer._logs["advantages"])

    trainer.add_callback(Snapshot())
    trainer.train()
    writer.close()

    assert store.group_steps(stage_id) == [1, 2]
    for step in (1, 2):
        stored = [ro.advantage for g in store.step_groups(stage_id, step) for ro in g.rollouts]
        assert len(stored) == 16
        assert stored == pytest.approx(trl_logged[step], abs=1e-6)
        assert any(abs(a) > 0.1 for a in stored), "a step with some learning signal"
    stored = [ro for step in (1, 2) for g in store.step_groups(stage_id, step) for ro in g.rollouts]
    # And the recorded parts add up as TRL sums them: total = 1.0 x accuracy + 0.5 x tag_count.
    for ro in stored:
        assert ro.reward == pytest.approx(ro.rewards["accuracy"] + 0.5 * ro.rewards["tag_count"])
    for g in store.step_groups(stage_id, 2):
        rewards = [ro.reward for ro in g.rollouts]
        mean = sum(rewards) / len(rewards)
        assert g.reward_mean == pytest.approx(mean, abs=1e-6)
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / (len(rewards) - 1))
        assert g.reward_std == pytest.approx(std, abs=1e-5)
        assert sum(ro.advantage for ro in g.rollouts) == pytest.approx(0.0, abs=1e-4)


def test_steering_change_applies_at_the_next_step(tiny_model_dir, db_url):
    """A live temperature change is picked up at a step boundary; the steps after it run with
    the new value, the steps before it with the old one."""
    wb = Workbench(db_url)
    store = wb.store
    run = store.create_run("steer", "r1-zero", "smoke", {},
                           [_grpo_spec(tiny_model_dir, steps=40, temperature=1.0)])
    stage_id = run.stages[0].id
    start_pipeline(store, run.id)
    wait_for(lambda: wb.get_stage(stage_id).step >= 3, 180, what="3 GRPO steps")
    wb.set_params(stage_id, {"temperature": 0.5, "reward_weights": "1.0,0.25"})
    wait_for(lambda: wb.get_run(run.id).status == "completed", 400, what="completion")

    cmd = [c for c in wb.commands(stage_id) if c.kind == "set"][0]
    assert cmd.applied_step is not None and 3 <= cmd.applied_step < 40
    assert "temperature = 0.5" in cmd.result and "format 0.25" in cmd.result
    steps, temps = wb.metric_series(stage_id, "steer/temperature")
    by_step = dict(zip(steps, temps))
    assert all(by_step[s] == 1.0 for s in steps if s <= cmd.applied_step)
    assert all(by_step[s] == 0.5 for s in steps if s > cmd.applied_step)
    weights = dict(zip(*wb.metric_series(stage_id, "steer/weight/format")))
    assert weights[cmd.applied_step + 1] == 0.25
    # The recorded totals use the new weight from the next step on.
    for g in wb.step_groups(stage_id, cmd.applied_step + 1):
        for ro in g.rollouts:
            assert ro.reward == pytest.approx(ro.rewards["accuracy"] + 0.25 * ro.rewards["format"])
    assert any("temperature = 0.5" in e.message for e in wb.events(run.id))


@pytest.mark.slow
def test_r1_zero_smoke_from_the_cli(home, tmp_path):
    """`run --recipe r1-zero --wait` runs pretrain -> GRPO -> evaluate, and export-rollouts
    gives every rollout with its group, rewards and advantage."""
    cli = [sys.executable, "-m", "backend"]
    done = subprocess.run(cli + ["run", "--recipe", "r1-zero", "--preset", "smoke", "--wait"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = int(done.stdout.split()[0])
    assert "held-out accuracy" in done.stdout
    status = json.loads(subprocess.run(cli + ["status", str(run_id), "--json"], cwd=ROOT,
                                       capture_output=True, text=True, check=True).stdout)
    assert status["status"] == "completed"
    assert [s["kind"] for s in status["stages"]] == ["pretrain", "grpo", "evaluate"]
    assert set(status["stages"][0]) >= {"id", "kind", "status", "step", "total_steps", "pid",
                                        "checkpoint", "error"}
    evaluation = status["stages"][2]["summary"]
    assert {"base", "final"} <= set(evaluation)

    out = tmp_path / "rollouts.jsonl"
    subprocess.run(cli + ["export-rollouts", str(run_id), "--out", str(out)], cwd=ROOT, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 * 16  # smoke: 6 steps x 16 completions
    first = rows[0]
    assert set(first) >= {"run_id", "stage_id", "step", "group_id", "prompt", "completion",
                          "rewards", "reward", "advantage"}
    assert set(first["rewards"]) == {"accuracy", "format"}
    assert first["reward"] == pytest.approx(first["rewards"]["accuracy"]
                                            + 0.5 * first["rewards"]["format"])

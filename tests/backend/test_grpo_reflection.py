"""GRPO logs the reflection rate (the "aha" metric) and, on the two-script task, the language
mixing rate every step, computed on exactly the completions TRL scored."""
from __future__ import annotations

import pytest

from backend.rewards.reflection import reflection_stats
from backend.stages.common import ConfigError
from backend.stages.grpo import GroupWriter, GRPOStageConfig, _recording_trainer_class
from storage import StageSpec, Store
from tests.conftest import ROOT


def test_grpo_logs_reflection_rate_every_step(tiny_model_dir, db_url):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from backend.models import load_model
    from backend.rewards import REWARD_FUNCTIONS
    from backend.rewards.language import mixes_scripts
    from backend.rewards.extract import split_think_answer
    from backend.stages.grpo import train_dataset
    from backend.prompts import PromptFormat
    from backend.tasks.addition import AdditionTask

    store = Store(db_url)
    spec = StageSpec("grpo", "grpo", GRPOStageConfig.from_dict(
        {"model_path": tiny_model_dir, "steps": 3, "batch_size": 16, "num_generations": 4,
         "max_completion_length": 16, "eval_every": 0}).to_dict())
    stage_id = store.create_run("t", "r1-zero", "smoke", {}, [spec]).stages[0].id
    model, tok = load_model(tiny_model_dir)
    problems = AdditionTask(second_script_share=0.5).train_problems(48, seed=0)
    data = train_dataset(PromptFormat(), problems, "en")
    assert set(data["language"]) == {"en", "zh"} and set(data["digit_language"]) == {"en"}
    args = GRPOConfig(output_dir=str(ROOT / "workbench_data" / "_t_reflection"), max_steps=3,
                      per_device_train_batch_size=16, num_generations=4, steps_per_generation=1,
                      max_completion_length=16, report_to="none", seed=5, use_cpu=True,
                      save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = _recording_trainer_class()(
        model=model, reward_funcs=[REWARD_FUNCTIONS["accuracy"]], args=args, train_dataset=data,
        processing_class=tok)
    # A digit is a marker the untrained model writes often: the rate is neither 0 nor 1.
    markers = ("7", "wait")
    trainer.reflection_markers = markers
    trainer.track_language_mixing = True
    writer = GroupWriter(store, stage_id)
    trainer.on_groups = writer
    logged: dict[int, dict] = {}

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reflection_rate" in logs:
                logged[state.global_step] = dict(logs)

    trainer.add_callback(Logs())
    trainer.train()
    writer.close()

    assert sorted(logged) == [1, 2, 3]  # every step
    rates = []
    for step in (1, 2, 3):
        completions = [ro.completion for g in store.step_groups(stage_id, step) for ro in g.rollouts]
        expected = reflection_stats(completions, markers)
        assert logged[step]["reflection_rate"] == pytest.approx(expected["reflection_rate"])
        assert logged[step]["reflection_markers"] == pytest.approx(expected["reflection_markers"])
        mixing = sum(mixes_scripts(split_think_answer(c)[0] or "") for c in completions)
        assert logged[step]["language_mixing_rate"] == pytest.approx(mixing / len(completions))
        rates.append(expected["reflection_rate"])
    assert any(0 < r < 1 for r in rates)


@pytest.mark.parametrize("markers", ["", ",", " , "])
def test_grpo_refuses_an_empty_marker_list(markers):
    with pytest.raises(ConfigError, match="reflection_markers"):
        GRPOStageConfig.from_dict({"reflection_markers": markers})


def test_grpo_marker_list_from_set_keeps_tiny_and_real_markers():
    cfg = GRPOStageConfig.from_dict({"reflection_markers": "check:,wait,"})
    assert cfg.reflection_markers == ["check:", "wait"]  # "wait" matches "wait," as a word
    assert "let me check" in GRPOStageConfig().reflection_markers

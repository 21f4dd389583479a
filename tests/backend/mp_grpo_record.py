"""Run by tests/backend/test_multiprocess.py under ``accelerate launch --num_processes 2``:
TRL's GRPOTrainer (our recording subclass) on 2 CPU processes over gloo, rank 0 writing the
groups to the store as the grpo stage does; rank 0 also dumps what TRL itself logged each step
(its gathered ``_logs``: prompts, completions, advantages) for the test to compare.

Usage: mp_grpo_record.py DB_URL STAGE_ID MODEL_DIR OUT_JSON
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(db_url: str, stage_id: int, model_dir: str, out: str) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from backend.models import load_model
    from backend.rewards import REWARD_FUNCTIONS
    from backend.stages.grpo import GroupWriter, _recording_trainer_class
    from backend.tasks.addition import AdditionTask
    from storage import Store

    model, tok = load_model(model_dir)
    problems = AdditionTask().train_problems(32, seed=0)
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems],
                              "answer": [p.answer for p in problems]})
    # 6 completions per process, groups of 4: the second group of each step is split over
    # the two processes (rows 4-5 on rank 0, 6-7 on rank 1).
    args = GRPOConfig(output_dir=str(Path(out).parent / "trainer"), max_steps=2,
                      per_device_train_batch_size=6, num_generations=4, steps_per_generation=1,
                      max_completion_length=12, report_to="none", seed=7, use_cpu=True,
                      gradient_checkpointing=False, save_strategy="no", logging_steps=1,
                      reward_weights=[1.0, 0.5], disable_tqdm=True)
    trainer = _recording_trainer_class()(
        model=model, reward_funcs=[REWARD_FUNCTIONS["accuracy"], REWARD_FUNCTIONS["tag_count"]],
        args=args, train_dataset=data, processing_class=tok)
    main_process = trainer.accelerator.is_main_process
    writer = GroupWriter(Store(db_url), stage_id) if main_process else None
    trainer.on_groups = writer
    logged: dict[int, dict] = {}

    class Snapshot(TrainerCallback):  # TRL keeps only the latest batch: copy it every step
        def on_step_end(self, args, state, control, **kw):
            logged[state.global_step] = {
                "world": trainer.accelerator.num_processes,
                "prompt": list(trainer._logs["prompt"]),
                "completion": list(trainer._logs["completion"]),
                "advantages": list(trainer._logs["advantages"])}

    trainer.add_callback(Snapshot())
    trainer.train()
    if main_process:
        writer.close()
        Path(out).write_text(json.dumps(logged))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])

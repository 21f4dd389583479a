"""Stage ``grpo``: reinforcement learning with TRL's ``GRPOTrainer`` and every group recorded.

For each prompt the trainer samples a group of G completions, scores each with the rule
rewards, and uses the group-relative advantage ``A_i = (r_i - mean(r)) / std(r)``. We do not
write a second GRPO: ``RecordingGRPOTrainer`` only *observes* TRL's own numbers (the rewards
each function returned, the weighted total, and the advantages exactly as TRL computed them)
and hands them to a background thread that writes one step's groups in one transaction.

This is R1-Zero when started from a base model (recipe ``r1-zero``), and R1's reasoning RL
stage when started from a cold-start SFT model (with the language-consistency reward).

Run: ``python -m backend run --recipe r1-zero --preset tiny --wait``.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from backend.stages.common import ConfigError, StageConfig, seed_everything, trainer_args
from backend.worker import StageContext, StageStopped, make_trainer_callback

# The prompt template of DeepSeek-R1-Zero (the seed article / the paper's Table 1), for real
# models. The tiny character model cannot read English, so its prompt is the bare problem.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)


@dataclass
class GRPOStageConfig(StageConfig):
    model_path: str = field(default="", metadata={
        "help": "HF model folder or hub id; empty = the previous stage's model."})
    dataset: str = field(default="", metadata={
        "help": "jsonl/parquet/HF dataset of problems; empty = the synthetic addition task."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})
    answer_format: str = field(default="auto", metadata={"help": "auto | gsm8k | boxed | plain."})
    prompt_template: str = field(default="auto", metadata={
        "help": "'{prompt}'-style template; auto = bare problem for the tiny model, the R1-Zero "
                "template otherwise."})
    steps: int = field(default=250, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={
        "help": "Completions per step (= prompts per step x group size)."})
    num_generations: int = field(default=8, metadata={"help": "Group size G."})
    max_completion_length: int = field(default=40, metadata={"help": "Tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (live)."})
    learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate (live)."})
    beta: float = field(default=0.0, metadata={
        "help": "KL penalty to the reference model (live; > 0 at start to load a reference)."})
    epsilon: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    loss_type: str = field(default="dapo", metadata={
        "help": "TRL loss: grpo | dr_grpo | dapo | bnpo | cispo | sapo."})
    scale_rewards: str = field(default="group", metadata={
        "help": "Advantage scaling: group (divide by group std) | batch | none."})
    reward_funcs: str = field(default="accuracy,format", metadata={
        "help": "Comma-separated reward functions (accuracy, format, tag_count, "
                "language_consistency, length, cosine_length, repetition)."})
    reward_weights: str = field(default="1.0,0.5", metadata={
        "help": "Comma-separated weights, one per reward function (live)."})
    language: str = field(default="en", metadata={"help": "Target language for language_consistency."})
    eval_every: int = field(default=25, metadata={"help": "Quick held-out eval every N steps (0 = off)."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems in the quick eval."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    record_groups: bool = field(default=True, metadata={"help": "Record every group and rollout."})
    # Synthetic task (used when dataset is empty and no earlier stage named one).
    min_digits: int = field(default=1, metadata={"help": "Synthetic task: fewest digits."})
    max_digits: int = field(default=3, metadata={"help": "Synthetic task: most digits."})

    def validate(self) -> None:
        from backend.rewards import REWARD_FUNCTIONS

        if self.steps < 1:
            raise ConfigError("steps must be at least 1")
        if self.num_generations < 2:
            raise ConfigError("num_generations (the group size) must be at least 2: GRPO "
                              "compares completions within a group")
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be divisible by num_generations "
                f"({self.num_generations}): each prompt's group of {self.num_generations} "
                f"completions must fit in one step. Try batch_size="
                f"{max(1, self.batch_size // self.num_generations) * self.num_generations}.")
        names = self.reward_names()
        unknown = [n for n in names if n not in REWARD_FUNCTIONS]
        if unknown or not names:
            raise ConfigError(f"unknown reward function(s) {unknown or '(none given)'}; "
                              f"available: {', '.join(REWARD_FUNCTIONS)}")
        if len(self.weights()) != len(names):
            raise ConfigError(f"reward_weights has {len(self.weights())} values but "
                              f"reward_funcs names {len(names)} functions")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError("scale_rewards must be group, batch or none")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for sampling a group")

    def reward_names(self) -> list[str]:
        return [n.strip() for n in self.reward_funcs.split(",") if n.strip()]

    def weights(self) -> list[float]:
        try:
            return [float(w) for w in self.reward_weights.split(",") if w.strip()]
        except ValueError:
            raise ConfigError(f"reward_weights {self.reward_weights!r} must be numbers "
                              f"separated by commas")


# ------------------------------------------------------------------------------- recording
def _recording_trainer_class():
    import torch
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    class RecordingGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that passes each generation batch (groups, rewards, TRL's advantages) to
        ``self.on_groups(step, record)``; training itself is untouched."""

        on_groups = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions,
                                                          completion_ids_list)
            self._wb_batch = {
                "prompts": list(prompts), "completions": list(completions),
                "answers": [x.get("answer") for x in inputs],
                "lengths": [len(ids) for ids in completion_ids_list],
                "ids": completion_ids_list,
                "rewards_per_func": rewards_per_func.detach().cpu(),
            }
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if self.on_groups is not None and self.model.training:
                batch = self._wb_batch
                rpf = batch["rewards_per_func"]  # (B, n_funcs), all processes
                weights = self.reward_weights.to(rpf.device)
                total = (rpf * weights.unsqueeze(0)).nansum(dim=1)  # as TRL sums it
                g = self.num_generations
                grouped = total.view(-1, g)
                batch.update(
                    total=total.tolist(),
                    # Exactly the tensor TRL feeds into the loss (single process: all of it).
                    advantages=output["advantages"].detach().cpu().tolist(),
                    group_mean=torch.nanmean(grouped, dim=1).tolist(),
                    group_std=nanstd(grouped, dim=1).tolist(),
                    names=list(self.reward_func_names), g=g,
                    eos=self.processing_class.eos_token_id,
                    max_len=self.max_completion_length,
                )
                self.on_groups(self.state.global_step + 1, batch)
            return output

    return RecordingGRPOTrainer


def batch_to_groups(batch: dict) -> list:
    """Turn one recorded generation batch into store ``Group`` records."""
    from storage.records import Group, Rollout

    g, names = batch["g"], batch["names"]
    groups = []
    for gi in range(len(batch["prompts"]) // g):
        rollouts = []
        for j in range(g):
            i = gi * g + j
            raw = batch["rewards_per_func"][i].tolist()
            ids = batch["ids"][i]
            # Truncated = hit the length budget without emitting EOS.
            truncated = batch["lengths"][i] >= batch["max_len"] and batch["eos"] not in ids
            rollouts.append(Rollout(
                sample_index=j, completion=_text(batch["completions"][i]),
                rewards={n: (None if v != v else v) for n, v in zip(names, raw)},  # NaN -> None
                reward=batch["total"][i], advantage=batch["advantages"][i],
                length=batch["lengths"][i], truncated=bool(truncated),
            ))
        i0 = gi * g
        groups.append(Group(
            step=0, group_index=gi, prompt=_text(batch["prompts"][i0]),
            reference=None if batch["answers"][i0] is None else str(batch["answers"][i0]),
            reward_mean=_finite(batch["group_mean"][gi]), reward_std=_finite(batch["group_std"][gi]),
            rollouts=rollouts,
        ))
    return groups


def _text(value: Any) -> str:
    from backend.rewards.extract import completion_text
    return value if isinstance(value, str) else completion_text(value)


def _finite(x: float) -> float:
    return 0.0 if x != x else float(x)


class GroupWriter:
    """Writes recorded groups from a background thread so training never waits on SQLite."""

    def __init__(self, store, stage_id: int):
        self.store, self.stage_id = store, stage_id
        self.queue: queue.Queue = queue.Queue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def __call__(self, step: int, batch: dict) -> None:
        self.queue.put((step, batch))

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            step, batch = item
            try:
                self.store.add_groups(self.stage_id, step, batch_to_groups(batch))
            except BaseException as exc:  # surfaced by close()
                self.error = exc

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


# ------------------------------------------------------------------------------- the stage
def build_problems(cfg: GRPOStageConfig, ctx_inputs: dict, n_train: int):
    """(train problems, held-out problems) from a dataset path or the synthetic task."""
    from backend.tasks.addition import AdditionTask

    if cfg.dataset:
        from backend.tasks.loaders import load_problems
        train = load_problems(cfg.dataset, prompt_column=cfg.prompt_column,
                              answer_column=cfg.answer_column, answer_format=cfg.answer_format,
                              split="train")
        try:
            heldout = load_problems(cfg.dataset, prompt_column=cfg.prompt_column,
                                    answer_column=cfg.answer_column,
                                    answer_format=cfg.answer_format, split="test",
                                    limit=cfg.eval_problems)
        except Exception:
            train, heldout = train[cfg.eval_problems:], train[:cfg.eval_problems]
        return train, heldout
    task_cfg = ctx_inputs.get("task") or {}
    task = AdditionTask(min_digits=task_cfg.get("min_digits", cfg.min_digits),
                        max_digits=task_cfg.get("max_digits", cfg.max_digits),
                        heldout_size=task_cfg.get("heldout_size", 500))
    return task.train_problems(n_train, seed=cfg.seed + 7), task.heldout(cfg.eval_problems)


def resolve_template(cfg: GRPOStageConfig, tokenizer) -> str:
    if cfg.prompt_template != "auto":
        if "{prompt}" not in cfg.prompt_template:
            raise ConfigError("prompt_template must contain {prompt}")
        return cfg.prompt_template
    # A tokenizer that cannot spell "User" is the tiny character model.
    return "{prompt}" if tokenizer.unk_token_id in tokenizer("User")["input_ids"] else R1_ZERO_TEMPLATE


def load_policy(path: str):
    from backend.models import load_model
    return load_model(path)


def run(ctx: StageContext) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig

    from backend.evaluation import evaluate
    from backend.rewards import REWARD_FUNCTIONS
    from backend.tasks.problem import Problem

    cfg = GRPOStageConfig.from_dict(ctx.config)
    model_path = cfg.model_path or ctx.inputs.get("model_path")
    if not model_path:
        raise ConfigError("no model: set model_path, or put a stage that makes a model "
                          "(e.g. pretrain) before this one")
    seed_everything(cfg.seed)
    model, tokenizer = load_policy(model_path)
    template = resolve_template(cfg, tokenizer)
    n_prompts = cfg.steps * cfg.batch_size // cfg.num_generations
    train, heldout = build_problems(cfg, ctx.inputs, n_prompts)
    heldout_eval = [Problem(template.format(prompt=p.prompt), p.answer) for p in heldout]
    dataset = Dataset.from_dict({
        "prompt": [template.format(prompt=p.prompt) for p in train],
        "answer": [p.answer for p in train],
        "language": [cfg.language] * len(train),
    })
    ctx.event(f"GRPO on {model_path}: {len(train):,} prompts, group size "
              f"{cfg.num_generations}, {cfg.batch_size // cfg.num_generations} prompts/step, "
              f"rewards {cfg.reward_funcs} x {cfg.reward_weights}")

    args = GRPOConfig(
        **trainer_args(ctx.output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,  # one generation batch per optimizer step: step == group step
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=cfg.weights(),
        logging_steps=1,
    )
    trainer_cls = _recording_trainer_class()
    funcs = [REWARD_FUNCTIONS[name] for name in cfg.reward_names()]
    callback = make_trainer_callback(ctx)
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[callback])
    writer = GroupWriter(ctx.store, ctx.stage.id) if cfg.record_groups else None
    trainer.on_groups = writer
    _register_setters(ctx, trainer, cfg)

    from transformers import TrainerCallback

    class QuickEval(TrainerCallback):
        def _eval(self, step: int) -> None:
            report = evaluate(trainer.model, tokenizer, heldout_eval,
                              max_new_tokens=cfg.max_completion_length)
            ctx.log_metrics(step, {f"eval/{k}": v for k, v in report.items()
                                   if isinstance(v, float)})

        def on_train_begin(self, args, state, control, **kw):
            if cfg.eval_every and state.global_step == 0:
                self._eval(0)

        def on_step_begin(self, args, state, control, **kw):
            # The steerable values this step runs with, so the curves show where a live
            # change took effect (commands apply between steps).
            values = {"steer/temperature": trainer.temperature, "steer/beta": trainer.beta}
            for name, w in zip(trainer.reward_func_names, trainer.reward_weights.tolist()):
                values[f"steer/weight/{name}"] = w
            ctx.log_metrics(state.global_step + 1, values)

        def on_step_end(self, args, state, control, **kw):
            if cfg.eval_every and state.global_step % cfg.eval_every == 0:
                self._eval(state.global_step)

    trainer.add_callback(QuickEval())
    try:
        trainer.train(resume_from_checkpoint=ctx.resume_checkpoint)
    finally:
        if writer is not None:
            writer.close()
    if ctx.stop_requested:
        raise StageStopped()

    final_dir = ctx.output_dir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    ctx.checkpoint_saved(cfg.steps, str(final_dir), kind="final")
    report = evaluate(trainer.model, tokenizer, heldout_eval, max_new_tokens=cfg.max_completion_length)
    ctx.store.update_stage(ctx.stage.id, summary={k: v for k, v in report.items() if k != "examples"})
    ctx.event(f"final held-out accuracy {report['accuracy']:.1%}, think used "
              f"{report['think_rate']:.1%}")
    return {"model_path": str(final_dir), "base_model_path": model_path,
            "heldout_prompt_template": template}


def _register_setters(ctx: StageContext, trainer, cfg: GRPOStageConfig) -> None:
    """Live parameter changes, applied by the worker at a step boundary."""
    import torch

    def set_temperature(value: Any) -> str:
        t = float(value)
        if t <= 0:
            return "temperature must be > 0; unchanged"
        trainer.temperature = t  # also used to scale logits when computing log-probs
        if getattr(trainer, "generation_config", None) is not None:
            trainer.generation_config.temperature = t
        if getattr(trainer, "generation_kwargs", None) is not None:
            trainer.generation_kwargs["temperature"] = t
        return f"temperature = {t:g}"

    def set_beta(value: Any) -> str:
        b = float(value)
        if b != 0 and trainer.ref_model is None and trainer.beta == 0:
            return ("beta unchanged: this stage started with beta=0, so no reference model was "
                    "loaded; start the stage with a small beta to adjust KL live")
        trainer.beta = b
        return f"beta = {b:g}"

    def set_weights(value: Any) -> str:
        if isinstance(value, dict):
            weights = trainer.reward_weights.clone()
            for name, w in value.items():
                if name not in trainer.reward_func_names:
                    return f"unknown reward {name!r}; unchanged"
                weights[trainer.reward_func_names.index(name)] = float(w)
        else:
            values = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
            if len(values) != len(trainer.reward_func_names):
                return (f"need {len(trainer.reward_func_names)} weights "
                        f"({', '.join(trainer.reward_func_names)}); unchanged")
            weights = torch.tensor(values, dtype=torch.float32)
        trainer.reward_weights = weights
        return "reward weights = " + ", ".join(
            f"{n} {w:g}" for n, w in zip(trainer.reward_func_names, weights.tolist()))

    def set_lr(value: Any) -> str:
        lr = float(value)
        if trainer.optimizer is None:
            return "optimizer not ready; unchanged"
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        if trainer.lr_scheduler is not None and hasattr(trainer.lr_scheduler, "base_lrs"):
            # LambdaLR recomputes lr = base_lr * factor each step: move the base too.
            trainer.lr_scheduler.base_lrs = [lr for _ in trainer.lr_scheduler.base_lrs]
        return f"learning_rate = {lr:g}"

    ctx.setters.update({"temperature": set_temperature, "beta": set_beta,
                        "reward_weights": set_weights, "learning_rate": set_lr})

"""Stage ``distill``: on-policy logit distillation with TRL's ``DistillationTrainer``.

The student samples a completion for each training prompt; the teacher scores the same tokens,
and the student is trained to match the teacher's whole next-token distribution at every
completion position (a generalised Jensen-Shannon divergence: ``beta`` 0 is the forward KL,
1 the reverse KL, 0.5 the JSD; Agarwal et al. 2024, "On-Policy Distillation of Language
Models"). No reward is computed: the teacher's distributions are the only signal, which is why
a small student learns from a strong teacher far faster than it could by RL on its own.

The other way to distil, DeepSeek's own for its R1-Distill models, needs no stage of its own:
the teacher generates traces (the ``rejection`` stage, so they can be curated by hand) and the
student trains on them with the ``sft`` stage. Recipe ``distill`` runs both, against a student
trained by GRPO alone for the same CPU time (``time_budget_s``).

Teacher and student must share one vocabulary, token for token: a mismatch is refused when
the run is created if both model paths are settings, else when the stage starts.

Run: ``python -m backend run --recipe distill --preset tiny --wait``; alone with
``--set distill.model_path=STUDENT --set distill.teacher_path=TEACHER``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from backend.contract import ModelArtifact, ProblemSource
from backend.stages.common import (ConfigError, LaunchConfig, TimeBudgetConfig, check_data_path,
                                   check_model_path, check_positive, seed_everything,
                                   trainer_args)
from backend.stages.context import (StageContext, attach_trainer, quick_eval_callback,
                                    train_and_save)


@dataclass
class DistillConfig(TimeBudgetConfig, LaunchConfig):
    model_path: str = field(default="", metadata={
        "help": "The student: HF model folder; empty = the wired model."})
    teacher_path: str = field(default="", metadata={
        "help": "The teacher: HF model folder with the student's vocabulary; empty = the "
                "wired teacher."})
    dataset: str = field(default="", metadata={
        "help": "jsonl/parquet/HF dataset of prompts; empty = the wired problems (else the "
                "synthetic addition task)."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={
        "help": "Answer column (the held-out evaluation reads it; training does not)."})
    answer_format: str = field(default="auto", metadata={
        "help": "auto | gsm8k | boxed | plain.", "choices": ["auto", "gsm8k", "boxed", "plain"]})
    prompt_template: str = field(default="auto", metadata={
        "help": "auto | chat | plain | bare | a template with {prompt}. auto: the student's own "
                "format. The teacher reads exactly the student's tokens."})
    steps: int = field(default=200, metadata={
        "help": "Optimizer steps (at most: time_budget_s may end training earlier)."})
    batch_size: int = field(default=32, metadata={
        "help": "Prompts per step (the total over all processes); the student samples one "
                "completion for each."})
    max_completion_length: int = field(default=64, metadata={
        "help": "Tokens the student samples per completion."})
    temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature, also the temperature both models' logits are divided by "
                "in the divergence (live)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate (live)."})
    beta: float = field(default=0.5, metadata={
        "help": "Divergence: 0 forward KL (mode covering), 1 reverse KL (mode seeking), 0.5 "
                "JSD."})
    eval_every: int = field(default=25, metadata={
        "help": "Quick held-out eval every N steps (0 = off)."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems in the evals."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    min_digits: int = field(default=1, metadata={
        "help": "Synthetic task when nothing is wired: fewest digits."})
    max_digits: int = field(default=3, metadata={"help": "Synthetic task: most digits."})
    problem_pool: int = field(default=500, metadata={
        "help": "Synthetic task: distinct training prompts, seen in epochs; 0 = fresh ones."})

    def validate(self) -> None:
        from backend.prompts import check_template
        from backend.steering import LEARNING_RATE, TEMPERATURE, SteeringError

        check_positive(self, "steps", "batch_size", "max_completion_length", "save_steps",
                       "eval_problems")
        self.validate_launch()  # batch_size, the step's total, divides by num_processes
        if not 0 <= self.beta <= 1:
            raise ConfigError(f"beta must be between 0 (forward KL) and 1 (reverse KL); 0.5 is "
                              f"the JSD; got {self.beta}")
        if self.eval_every < 0:
            raise ConfigError("eval_every must be 0 (off) or a positive number of steps")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError("need 1 <= min_digits <= max_digits")
        if self.problem_pool < 0:
            raise ConfigError("problem_pool must be 0 (fresh problems) or a positive count")
        if self.answer_format not in ("auto", "gsm8k", "boxed", "plain"):
            raise ConfigError("answer_format must be auto, gsm8k, boxed or plain")
        try:
            check_template(self.prompt_template)
            for param in (LEARNING_RATE, TEMPERATURE):
                param.parse(getattr(self, param.name))
        except (SteeringError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        check_model_path("model_path", self.model_path)
        check_model_path("teacher_path", self.teacher_path)
        check_data_path("dataset", self.dataset)
        if self.model_path and self.teacher_path:
            # Both known now: refuse a mismatch before anything is created.
            problem = vocabulary_mismatch(_vocabulary_from_files(self.teacher_path),
                                          _vocabulary_from_files(self.model_path))
            if problem:
                raise ConfigError(_mismatch_message(problem))

    def problem_source(self, given: Optional[ProblemSource]) -> ProblemSource:
        """The dataset setting, else the wired problems, else the synthetic task with this
        config's digits."""
        return (ProblemSource.from_dataset_setting(self) or given
                or ProblemSource(kind="synthetic", min_digits=self.min_digits,
                                 max_digits=self.max_digits))


# ------------------------------------------------------------------------- vocabularies
def _vocabulary_from_files(path: str) -> Optional[dict[str, Any]]:
    """What the folder says about its vocabulary without importing transformers (run creation
    happens in the UI's process): config.json's ``vocab_size`` and, for a fast tokenizer,
    tokenizer.json's token -> id map. None for a hub id (nothing local to read)."""
    folder = Path(os.path.expanduser(path))
    if not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    tokens = None
    if (folder / "tokenizer.json").is_file():
        data = json.loads((folder / "tokenizer.json").read_text())
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            tokens = dict(vocab)
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], the id is the index
            tokens = {piece[0]: i for i, piece in enumerate(vocab)}
        for added in data.get("added_tokens") or []:
            if tokens is not None:
                tokens[added["content"]] = added["id"]
    return {"size": size, "tokens": tokens}


def _vocabulary_of(model, tokenizer) -> dict[str, Any]:
    return {"size": model.config.get_text_config().vocab_size, "tokens": tokenizer.get_vocab()}


def vocabulary_mismatch(teacher: Optional[dict], student: Optional[dict]) -> Optional[str]:
    """Why a teacher's next-token distributions cannot be compared with the student's, or None.
    Sizes must match (TRL's own check), and so must the token -> id maps: two tokenizers of
    one size that number their tokens differently would compare unrelated tokens silently."""
    if teacher is None or student is None:
        return None
    if teacher["size"] != student["size"]:
        return f"the teacher has {teacher['size']} token ids, the student {student['size']}"
    t, s = teacher.get("tokens"), student.get("tokens")
    if t is not None and s is not None and t != s:
        differ = sorted(tok for tok in set(t) | set(s) if t.get(tok) != s.get(tok))
        shown = ", ".join(repr(tok) for tok in differ[:5]) + (" ..." if len(differ) > 5 else "")
        return (f"both have {teacher['size']} token ids but {len(differ)} tokens differ "
                f"({shown})")
    return None


def _mismatch_message(problem: str) -> str:
    return (f"teacher and student vocabularies differ: {problem}. Logit distillation compares "
            f"the two models' next-token distributions token by token, so both need the same "
            f"tokenizer: pick a teacher with the student's tokenizer, or distil by SFT on the "
            f"teacher's traces (rejection stage -> sft stage), which needs only its text.")


# ------------------------------------------------------------------------------ trainer
def distill_args(cfg: DistillConfig, output_dir):
    """The one mapping from this stage's config to TRL's ``DistillationConfig``."""
    from trl import DistillationConfig

    return DistillationConfig(
        **trainer_args(output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        per_device_train_batch_size=cfg.per_process(cfg.batch_size),
        gradient_accumulation_steps=1,  # one generation batch per optimizer step
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",  # a time budget may end training at any step
        warmup_steps=0,
        weight_decay=0.0,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        logging_steps=1,
        disable_dropout=True,
    )


def distill_setters(trainer) -> dict:
    """Live temperature: sampling of the next batch and the divergence's temperature together
    (TRL reads ``trainer.temperature`` in the loss and the generation config when sampling)."""
    def set_temperature(t: float) -> str:
        trainer.temperature = t
        trainer.generation_config.temperature = t
        trainer.generation_kwargs["temperature"] = t
        if getattr(trainer, "vllm_generation", None) is not None:
            trainer.vllm_generation.temperature = t
        return f"temperature = {t:g} (sampling and divergence)"

    return {"temperature": set_temperature}


# ------------------------------------------------------------------------------ the stage
def run(ctx: StageContext) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DistillationTrainer

    from backend.evaluation import evaluate
    from backend.models import load_model
    from backend.prompts import resolve_format
    from backend.tasks.problem import Problem

    cfg = DistillConfig.from_dict(ctx.config)
    wired_student = None if cfg.model_path else ctx.input("model")
    student_path = cfg.model_path or wired_student.path
    teacher_path = cfg.teacher_path or ctx.input("teacher").path
    seed_everything(cfg.seed)
    student, tokenizer = load_model(student_path)
    teacher, teacher_tokenizer = load_model(teacher_path)
    problem = vocabulary_mismatch(_vocabulary_of(teacher, teacher_tokenizer),
                                  _vocabulary_of(student, tokenizer))
    if problem:
        raise ConfigError(_mismatch_message(problem))
    fmt = (wired_student.format if wired_student is not None and cfg.prompt_template == "auto"
           else resolve_format(cfg.prompt_template, tokenizer))
    source = cfg.problem_source(None if cfg.dataset else ctx.input("problems"))
    source = source.with_heldout(cfg.eval_problems)
    n_prompts = cfg.steps * cfg.batch_size
    if source.kind == "synthetic" and cfg.problem_pool:
        train = source.train(min(cfg.problem_pool, n_prompts), seed=cfg.seed, distinct=True)
    else:
        train = source.train(n_prompts, seed=cfg.seed)
    heldout = [Problem(fmt.render(p.prompt, tokenizer), p.answer)
               for p in source.heldout(cfg.eval_problems)]
    n_student = sum(p.numel() for p in student.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    ctx.event(f"logit distillation: student {student_path} ({n_student:,} parameters) learns "
              f"the next-token distributions of teacher {teacher_path} ({n_teacher:,}) on its "
              f"own samples of {len(train):,} prompts from {source.describe()['dataset']}; "
              f"beta {cfg.beta:g} ({_divergence(cfg.beta)}), {cfg.batch_size} prompts/step"
              + (f", time budget {cfg.time_budget_s:g} CPU s" if cfg.time_budget_s else ""))

    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=distill_args(cfg, ctx.output_dir),
        train_dataset=Dataset.from_list([{"prompt": fmt.for_trainer(p.prompt)} for p in train]),
        processing_class=tokenizer)
    attach_trainer(ctx, trainer, distill_setters(trainer))

    trainer.add_callback(quick_eval_callback(ctx, trainer, tokenizer, heldout,
                                             cfg.max_completion_length, cfg.eval_every))

    class SteerMetrics(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            ctx.log_metrics(state.global_step + 1, {"steer/temperature": trainer.temperature})

    trainer.add_callback(SteerMetrics())
    final_dir = train_and_save(ctx, trainer, tokenizer)
    if not ctx.main:  # rank 0 scores and records the final model; the others are done
        return {}
    report = evaluate(trainer.model, tokenizer, heldout, max_new_tokens=cfg.max_completion_length)
    ctx.log_metrics(trainer.state.global_step, {f"eval/{k}": v for k, v in report.items()
                                                if isinstance(v, float)})
    ctx.summary({**{k: v for k, v in report.items() if k not in ("examples", "per_problem")},
                 **source.describe(), "problems": len(heldout), "steps": trainer.state.global_step,
                 "student_parameters": n_student, "teacher_parameters": n_teacher,
                 "teacher_path": teacher_path, "beta": cfg.beta})
    ctx.event(f"held-out accuracy after distillation {report['accuracy']:.1%}, think used "
              f"{report['think_rate']:.1%}")
    return {"model": ModelArtifact(path=str(final_dir), prompt_format=fmt.to_dict())}


def _divergence(beta: float) -> str:
    return {0.0: "forward KL", 1.0: "reverse KL", 0.5: "JSD"}.get(beta, "generalised JSD")

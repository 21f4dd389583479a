"""Stage ``pretrain``: make the demo's *base* model (the "DeepSeek-V3-Base" of the tiny preset).

A Qwen2-style character model is pre-trained with TRL's ``SFTTrainer`` (loss on every token)
on a synthetic corpus of addition problems where only some completions show their reasoning
in ``<think>`` tags. The result is a plausible base model: it knows the format, sometimes
thinks, and is much more accurate when it does, which is what R1-Zero's RL then exploits.

The trained model is cached under ``<data home>/models/`` keyed by its config, so later runs
reuse it in seconds; ``--set use_cache=false`` retrains.

Run alone: ``python -m backend run --recipe pretrain-base --preset tiny --wait``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field

from backend.contract import ModelArtifact, ProblemSource
from backend.stages.common import StageConfig, check_positive, seed_everything, trainer_args
from backend.stages.context import StageContext, StageStopped, attach_trainer


@dataclass
class PretrainConfig(StageConfig):
    steps: int = field(default=800, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Sequences per step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Cosine decays to this share."})
    min_digits: int = field(default=1, metadata={"help": "Fewest digits per operand."})
    max_digits: int = field(default=3, metadata={"help": "Most digits per operand."})
    heldout_size: int = field(default=500, metadata={"help": "Held-out problems never trained on."})
    think_share: float = field(default=0.3, metadata={"help": "Corpus share with worked <think>."})
    answer_share: float = field(default=0.2, metadata={"help": "Corpus share with <answer> only."})
    reflection_share: float = field(default=0.05, metadata={
        "help": "Corpus share of worked traces with one reflection (check: or wait,), part of "
                "think_share: the 'aha' GRPO can amplify."})
    second_script_share: float = field(default=0.0, metadata={
        "help": "Share of problems whose prompt (中a+b=) asks for reasoning in Chinese numerals "
                "(the second script, for language mixing); 0 = digits only."})
    hidden_size: int = field(default=96, metadata={"help": "Model width."})
    num_layers: int = field(default=4, metadata={"help": "Transformer layers."})
    num_heads: int = field(default=3, metadata={"help": "Attention heads (head_dim 32 or 64)."})
    num_kv_heads: int = field(default=1, metadata={"help": "Key/value heads (GQA)."})
    intermediate_size: int = field(default=384, metadata={"help": "FFN width."})
    eval_problems: int = field(default=500, metadata={"help": "Held-out problems in the final eval."})
    max_new_tokens: int = field(default=40, metadata={"help": "Generation budget for evaluation."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps."})
    use_cache: bool = field(default=True, metadata={"help": "Reuse an identical base model."})

    def validate(self) -> None:
        super().validate()
        check_positive(self, "steps", "batch_size", "learning_rate", "save_steps",
                       "eval_problems", "max_new_tokens")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup_steps must be >= 0 and min_lr_ratio between 0 and 1")
        if not 0 <= self.think_share + self.answer_share <= 1:
            raise ValueError("think_share + answer_share must be between 0 and 1")
        if not 0 <= self.reflection_share <= self.think_share:
            raise ValueError(f"reflection_share ({self.reflection_share}) is the part of "
                             f"think_share ({self.think_share}) with a reflection: use a value "
                             f"between 0 and think_share")
        if not 0 <= self.second_script_share <= 1:
            raise ValueError(f"second_script_share must be between 0 and 1, got "
                             f"{self.second_script_share}")
        head_dim = self.hidden_size / self.num_heads
        if head_dim not in (32, 64):
            raise ValueError(
                f"hidden_size / num_heads = {head_dim:g}; use 32 or 64 (vLLM's CPU attention "
                f"rejects other head sizes), e.g. hidden_size=96 with num_heads=3")
        if self.heldout_size < self.eval_problems:
            raise ValueError(f"eval_problems ({self.eval_problems}) cannot exceed heldout_size "
                             f"({self.heldout_size})")

    def task(self):
        from backend.tasks.addition import AdditionTask
        return AdditionTask(min_digits=self.min_digits, max_digits=self.max_digits,
                            heldout_size=self.heldout_size,
                            second_script_share=self.second_script_share)

    def problems(self) -> ProblemSource:
        """The task the base model learned, with the held-out split it never saw."""
        return ProblemSource(kind="synthetic", min_digits=self.min_digits,
                             max_digits=self.max_digits, heldout_size=self.heldout_size,
                             second_script_share=self.second_script_share)

    def cache_key(self) -> str:
        from backend.models import VOCAB

        relevant = {k: v for k, v in asdict(self).items()
                    if k not in ("use_cache", "save_steps", "eval_problems")}
        # A cached model only fits the tokenizer it was trained with.
        relevant["vocab"] = VOCAB
        return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def run(ctx: StageContext) -> dict:
    from storage import data_home

    cfg = PretrainConfig.from_dict(ctx.config)
    cache_dir = data_home() / "models" / f"tiny-base-{cfg.cache_key()}"
    report_path = cache_dir / "workbench_eval.json"
    # The character model reads the bare problem (backend.prompts).
    outputs = {"model": ModelArtifact(path=str(cache_dir)), "problems": cfg.problems()}
    if cfg.use_cache and report_path.exists() and not ctx.resume_checkpoint:
        report = json.loads(report_path.read_text())
        ctx.event(f"reused the cached base model {cache_dir} (use_cache=false retrains)")
        ctx.progress(cfg.steps, cfg.steps)
        ctx.summary({**report, "cached": True})
        return outputs

    model, tokenizer, trainer = _trainer(ctx, cfg)
    trainer.train(resume_from_checkpoint=ctx.resume_checkpoint)
    if ctx.stop_requested:
        raise StageStopped()

    report = _evaluate(model, tokenizer, cfg)
    ctx.log_metrics(cfg.steps, {f"heldout/{k}": v for k, v in report.items()
                                if isinstance(v, float)})
    ctx.event(f"held-out accuracy {report['accuracy']:.1%} (strict, greedy, "
              f"{report['problems']} problems); think used {report['think_rate']:.1%}")
    # Write the model to a temporary folder then rename: a crash never leaves a half cache.
    tmp = cache_dir.with_name(cache_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "workbench_eval.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(cache_dir, ignore_errors=True)
    tmp.rename(cache_dir)
    ctx.checkpoint_saved(cfg.steps, str(cache_dir), kind="final")
    ctx.summary({**report, "cached": False})
    return outputs


def _evaluate(model, tokenizer, cfg: PretrainConfig) -> dict:
    from backend.evaluation import evaluate

    report = evaluate(model, tokenizer, cfg.task().heldout(cfg.eval_problems),
                      max_new_tokens=cfg.max_new_tokens)
    report.pop("per_problem", None)  # the cache keeps the figures, not every sample
    report["parameters"] = sum(p.numel() for p in model.parameters())
    return report


def _trainer(ctx: StageContext, cfg: PretrainConfig):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    seed_everything(cfg.seed)
    tokenizer = build_tokenizer()
    spec = TinyModelSpec(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                         num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                         intermediate_size=cfg.intermediate_size)
    model = build_tiny_model(spec, tokenizer, seed=cfg.seed)
    texts = cfg.task().pretraining_corpus(cfg.steps * cfg.batch_size, seed=cfg.seed,
                                          think_share=cfg.think_share,
                                          answer_share=cfg.answer_share,
                                          reflection_share=cfg.reflection_share)
    ctx.event(f"pre-training a {sum(p.numel() for p in model.parameters()):,}-parameter model "
              f"on {len(texts):,} synthetic texts for {cfg.steps} steps")
    args = SFTConfig(
        **trainer_args(ctx.output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
        warmup_steps=cfg.warmup_steps,
        weight_decay=0.0,
        logging_steps=10,
        max_length=128,
        packing=False,
        dataset_text_field="text",  # plain text: loss on every token, as in pre-training
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer)
    return model, tokenizer, attach_trainer(ctx, trainer)

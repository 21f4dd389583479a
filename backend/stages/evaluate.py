"""Stage ``evaluate``: held-out evaluation of the models a run produced, side by side.

Measures, for the base model the run started from and the model it ended with: greedy pass@1,
pass@1 averaged over k sampled answers, cons@k (majority vote over the k answers, the paper's
self-consistency), how often the model thinks (``<think>`` used) and how long it writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from backend.stages.common import ConfigError, StageConfig, seed_everything
from backend.worker import StageContext


@dataclass
class EvaluateConfig(StageConfig):
    eval_problems: int = field(default=500, metadata={"help": "Held-out problems."})
    k: int = field(default=4, metadata={"help": "Samples per problem for pass@1 (avg) and cons@k."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature for the k samples."})
    max_new_tokens: int = field(default=48, metadata={"help": "Generation budget."})
    dataset: str = field(default="", metadata={
        "help": "Problems to evaluate on; empty = the run's held-out split."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})

    def validate(self) -> None:
        if self.eval_problems < 1 or self.k < 1:
            raise ConfigError("eval_problems and k must be at least 1")


def run(ctx: StageContext) -> dict:
    from backend.evaluation import evaluate
    from backend.models import load_model
    from backend.tasks.addition import AdditionTask
    from backend.tasks.problem import Problem

    cfg = EvaluateConfig.from_dict(ctx.config)
    models = {"base": ctx.inputs.get("base_model_path"), "final": ctx.inputs.get("model_path")}
    models = {k: v for k, v in models.items() if v}
    if not models:
        raise ConfigError("nothing to evaluate: no earlier stage produced a model")
    template = ctx.inputs.get("heldout_prompt_template", "{prompt}")
    if cfg.dataset:
        from backend.tasks.loaders import load_problems
        problems = load_problems(cfg.dataset, prompt_column=cfg.prompt_column,
                                 answer_column=cfg.answer_column, split="test",
                                 limit=cfg.eval_problems)
    else:
        t = ctx.inputs.get("task") or {}
        problems = AdditionTask(min_digits=t.get("min_digits", 1), max_digits=t.get("max_digits", 3),
                                heldout_size=t.get("heldout_size", 500)).heldout(cfg.eval_problems)
    problems = [Problem(template.format(prompt=p.prompt), p.answer) for p in problems]
    summary: dict = {"problems": len(problems), "k": cfg.k}
    ctx.progress(0, 2 * len(models))
    done = 0
    for label, path in models.items():
        seed_everything(cfg.seed)
        model, tokenizer = load_model(path)
        greedy = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens)
        done += 1
        ctx.progress(done)
        sampled = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, k=cfg.k, seed=cfg.seed)
        done += 1
        ctx.progress(done)
        summary[label] = {
            "model_path": path,
            "greedy_pass@1": greedy["accuracy"], "greedy_lenient": greedy["accuracy_lenient"],
            "think_rate": greedy["think_rate"], "mean_chars": greedy["mean_chars"],
            "sampled_pass@1": sampled["accuracy"], f"cons@{cfg.k}": sampled["cons_at_k"],
            "sampled_think_rate": sampled["think_rate"], "examples": greedy["examples"],
        }
        ctx.event(f"{label} model: greedy pass@1 {greedy['accuracy']:.1%}, sampled pass@1 "
                  f"{sampled['accuracy']:.1%}, cons@{cfg.k} {sampled['cons_at_k']:.1%}, "
                  f"think {greedy['think_rate']:.1%}")
    if "final" in summary:
        summary["accuracy"] = summary["final"]["greedy_pass@1"]
        summary["think_rate"] = summary["final"]["think_rate"]
    if "base" in summary and "final" in summary:
        summary["gain_points"] = 100 * (summary["final"]["greedy_pass@1"]
                                        - summary["base"]["greedy_pass@1"])
    ctx.store.update_stage(ctx.stage.id, summary=summary)
    return {}

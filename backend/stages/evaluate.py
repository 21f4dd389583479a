"""Stage ``evaluate``: held-out evaluation of the models a run produced, side by side.

Scores the held-out split of the problems its ``problems`` input names (the synthetic task's
held-out set, or the test split of the dataset the trained stage used, e.g. GSM8K test), with
the prompt format the trained model learned. For the final model and, when wired, the base
model it started from: greedy pass@1, pass@1 averaged over k sampled answers, cons@k (majority
vote over the k answers, the paper's self-consistency), how often the model thinks and how
long it writes. The summary records which dataset, split, answer format and how many problems.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from backend.contract import EvalResults, ProblemSource
from backend.stages.common import (ConfigError, StageConfig, check_data_path, check_positive,
                                   seed_everything)
from backend.stages.context import StageContext


@dataclass
class EvaluateConfig(StageConfig):
    eval_problems: int = field(default=500, metadata={"help": "Held-out problems."})
    k: int = field(default=4, metadata={"help": "Samples per problem for pass@1 (avg) and cons@k."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature for the k samples."})
    max_new_tokens: int = field(default=48, metadata={"help": "Generation budget."})
    dataset: str = field(default="", metadata={
        "help": "Problems to evaluate on (their test split); empty = the trained stage's "
                "held-out split."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})
    answer_format: str = field(default="auto", metadata={"help": "auto | gsm8k | boxed | plain."})

    def validate(self) -> None:
        check_positive(self, "eval_problems", "k", "max_new_tokens")
        check_data_path("dataset", self.dataset)
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for the k sampled answers")


def run(ctx: StageContext) -> dict:
    from backend.evaluation import evaluate
    from backend.models import load_model
    from backend.tasks.problem import Problem

    cfg = EvaluateConfig.from_dict(ctx.config)
    final = ctx.input("model")
    models = {"final": final}
    base = ctx.input("base_model")
    if base is not None:
        models = {"base": base, "final": final}
    source = (ProblemSource(kind="file", path=cfg.dataset, prompt_column=cfg.prompt_column,
                            answer_column=cfg.answer_column,
                            answer_format=cfg.answer_format).with_heldout(cfg.eval_problems)
              if cfg.dataset else ctx.input("problems"))
    heldout = source.heldout(cfg.eval_problems)
    described = {**source.describe(), "problems": len(heldout), "k": cfg.k,
                 "temperature": cfg.temperature}
    # "auto" says little: record the format(s) the answers were actually read as.
    detected = sorted({p.meta.get("answer_format") for p in heldout} - {None})
    if detected:
        described["answer_format"] = ",".join(detected)
    ctx.event(f"evaluating {', '.join(models)} on {len(heldout)} problems of "
              f"{described['dataset']} ({described['split']})")
    fmt = final.format  # both models are prompted as the trained one learned
    summary: dict = dict(described)
    ctx.progress(0, 2 * len(models))
    done = 0
    for label, artifact in models.items():
        seed_everything(cfg.seed)
        model, tokenizer = load_model(artifact.path)
        problems = [Problem(fmt.render(p.prompt, tokenizer), p.answer) for p in heldout]
        greedy = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens)
        done += 1
        ctx.progress(done)
        sampled = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, k=cfg.k, seed=cfg.seed)
        done += 1
        ctx.progress(done)
        summary[label] = {
            "model_path": artifact.path,
            "greedy_pass@1": greedy["accuracy"], "greedy_lenient": greedy["accuracy_lenient"],
            "think_rate": greedy["think_rate"], "mean_chars": greedy["mean_chars"],
            "sampled_pass@1": sampled["accuracy"], f"cons@{cfg.k}": sampled["cons_at_k"],
            "sampled_think_rate": sampled["think_rate"], "examples": greedy["examples"],
        }
        ctx.event(f"{label} model: greedy pass@1 {greedy['accuracy']:.1%}, sampled pass@1 "
                  f"{sampled['accuracy']:.1%}, cons@{cfg.k} {sampled['cons_at_k']:.1%}, "
                  f"think {greedy['think_rate']:.1%}")
    summary["accuracy"] = summary["final"]["greedy_pass@1"]
    summary["think_rate"] = summary["final"]["think_rate"]
    if "base" in summary:
        summary["gain_points"] = 100 * (summary["final"]["greedy_pass@1"]
                                        - summary["base"]["greedy_pass@1"])
    ctx.summary(summary)
    return {"results": EvalResults(summary={k: v for k, v in summary.items()
                                            if k not in ("base", "final")})}

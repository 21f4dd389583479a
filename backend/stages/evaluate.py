"""Stage ``evaluate``: held-out evaluation of a checkpoint, the way the R1 paper reports it.

Scores the held-out split of the problems its ``problems`` input names (the synthetic task's
held-out set, or the test split of the dataset the trained stage used, e.g. GSM8K test), with
the prompt format the trained model learned; or, standing alone (``python -m backend eval``,
recipe ``evaluate``), any model folder (``model_path``) on a dataset or a synthetic ``task``.

For the final model and, when wired, the base model it started from, and for each prompt
template (``few_shot``: ``0`` = zero-shot, ``4`` = four worked examples first; "0,4" scores
both side by side, the paper's remark that few-shot prompting hurts R1 can be checked):
greedy pass@1; pass@1 as the mean correctness over k samples at temperature 0.6 and top-p
0.95 (the paper's settings); cons@k, the majority vote over extracted answers with
equivalent answers one vote; the unbiased pass@k (Chen et al. 2021); format compliance;
language consistency of the chain of thought; mean reasoning length. Every scored completion
is stored (``Store.eval_samples``): the Evaluation page opens a failed problem and shows its
k samples and how they voted.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from backend.contract import EvalResults, ModelArtifact, ProblemSource
from backend.generation import check_generation_backend
from backend.stages.common import (ConfigError, StageConfig, check_data_path, check_model_path,
                                   check_positive, seed_everything)
from backend.stages.context import StageContext

_TASK = re.compile(r"^addition(?::(\d+)-(\d+))?$")


def parse_task(task: str) -> Optional[tuple[int, int]]:
    """``addition`` -> (1, 3), ``addition:1-5`` -> (1, 5); ``""`` -> None. Raises ConfigError
    naming the accepted spellings."""
    if not task:
        return None
    match = _TASK.match(task.strip().lower())
    if not match:
        raise ConfigError(f"task {task!r} is not known: use addition (1-3 digit operands, the "
                          f"tiny preset's task) or addition:MIN-MAX (e.g. addition:1-5)")
    low, high = (int(match.group(1)), int(match.group(2))) if match.group(1) else (1, 3)
    if not 1 <= low <= high <= 12:
        raise ConfigError(f"task {task!r}: digits must satisfy 1 <= MIN <= MAX <= 12")
    return low, high


def problems_needed(config: dict) -> Optional[str]:
    """For the stage contract: the ``problems`` input may stay unwired when ``dataset`` or
    ``task`` names the problems; otherwise say why it is needed."""
    return None if config.get("task") else "neither dataset nor task is set"


@dataclass
class EvaluateConfig(StageConfig):
    model_path: str = field(default="", metadata={
        "help": "HF model folder to evaluate; empty = the wired model (the trained stage's)."})
    eval_problems: int = field(default=500, metadata={"help": "Held-out problems."})
    k: int = field(default=8, metadata={
        "help": "Samples per problem for pass@1 (their mean), cons@k and pass@k."})
    temperature: float = field(default=0.6, metadata={
        "help": "Sampling temperature of the k samples (the R1 paper: 0.6)."})
    top_p: float = field(default=0.95, metadata={
        "help": "Nucleus sampling of the k samples (the R1 paper: 0.95; 1 = off)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Generation budget."})
    few_shot: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Prompt templates to compare: worked examples shown before the question "
                "(0 = zero-shot); comma-separated in --set, e.g. 0,4."})
    dataset: str = field(default="", metadata={
        "help": "Problems to evaluate on (their test split); empty = the trained stage's "
                "held-out split."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})
    answer_format: str = field(default="auto", metadata={
        "help": "auto | gsm8k | boxed | plain.", "choices": ["auto", "gsm8k", "boxed", "plain"]})
    task: str = field(default="", metadata={
        "help": "Synthetic problems when no dataset is set and none are wired: addition (1-3 "
                "digits) or addition:MIN-MAX."})
    prompt_template: str = field(default="auto", metadata={
        "help": "auto (a wired model's own format; for model_path: chat when the tokenizer "
                "has a chat template, the bare problem for the tiny model, else the R1-Zero "
                "template) | chat | plain | bare | a template with {prompt}."})
    language: str = field(default="en", metadata={
        "help": "Target language of the chain of thought, for language consistency (en, zh)."})
    generation_backend: str = field(default="hf", metadata={
        "help": "What generates the answers: hf (transformers) | vllm (a vLLM engine built "
                "from each model folder, ~20 s to start, much faster sampling; needs "
                "requirements-vllm.txt).",
        "choices": ["hf", "vllm"]})

    def validate(self) -> None:
        from backend.prompts import check_template
        from backend.rewards.language import normalize_language

        check_positive(self, "eval_problems", "k", "max_new_tokens")
        check_model_path("model_path", self.model_path)
        check_data_path("dataset", self.dataset)
        parse_task(self.task)
        check_template(self.prompt_template)
        normalize_language(self.language)
        if self.answer_format not in ("auto", "gsm8k", "boxed", "plain"):
            raise ConfigError("answer_format must be auto, gsm8k, boxed or plain")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for the k sampled answers (the greedy "
                              "answer is scored as well)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.few_shot or any(n < 0 for n in self.few_shot):
            raise ConfigError("few_shot must list one or more example counts >= 0, e.g. 0 or "
                              "0,4")
        if len(set(self.few_shot)) != len(self.few_shot):
            raise ConfigError(f"few_shot lists a template twice: {self.few_shot}")
        try:  # vLLM's CPU kernels run only some head sizes: say so now, not at engine start
            check_generation_backend(self.generation_backend, self.model_path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def problem_source(self, given: Optional[ProblemSource]) -> ProblemSource:
        """The dataset setting, else the wired problems, else the synthetic ``task``."""
        source = ProblemSource.from_dataset_setting(self)
        if source is not None:
            return source.with_heldout(self.eval_problems)
        if given is not None:
            return given
        low, high = parse_task(self.task) or (1, 3)
        return ProblemSource(kind="synthetic", min_digits=low, max_digits=high)


def few_shot_examples(source: ProblemSource, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` worked examples from the source's *training* split (never a held-out problem),
    the same for every question: (problem, worked completion) pairs."""
    from backend.prompts import worked_completion

    if n == 0:
        return []
    if source.kind == "synthetic":
        pool = source.train(n, seed=seed, distinct=True)
    else:
        pool = source.train(0)
        if len(pool) > n:
            pool = random.Random(seed).sample(pool, n)
    if len(pool) < n:
        raise ConfigError(f"few_shot asks for {n} examples but the training split has only "
                          f"{len(pool)} problems")
    return [(p.prompt, worked_completion(p)) for p in pool[:n]]


def _check_fits(model, tokenizer, prompts: list[str], max_new_tokens: int, label: str) -> None:
    """Few-shot prompts longer than the model's positions: refuse with the template's name
    rather than score a model far outside the context it was trained on."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit or not prompts:
        return
    longest = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    if longest + max_new_tokens > limit:
        raise ConfigError(f"{label} prompts are up to {longest} tokens; with max_new_tokens "
                          f"{max_new_tokens} they exceed the model's {limit} positions: use "
                          f"fewer few_shot examples or a smaller max_new_tokens")


def _metrics(greedy: dict, sampled: dict, k: int) -> dict[str, Any]:
    """One model x template's figures (shares 0-1)."""
    return {
        "greedy_pass@1": greedy["accuracy"], "greedy_lenient": greedy["accuracy_lenient"],
        "pass@1": sampled["accuracy"], "sampled_pass@1": sampled["accuracy"],
        "cons@k": sampled["cons_at_k"], f"cons@{k}": sampled["cons_at_k"],
        "pass@k": sampled["pass_at_k"], f"pass@{k}": sampled["pass_at_k"],
        "format": sampled["format_rate"], "greedy_format": greedy["format_rate"],
        "language": sampled["language"],
        "reasoning_chars": sampled["reasoning_chars"],
        "reasoning_tokens": sampled.get("reasoning_tokens", 0.0),
        "think_rate": greedy["think_rate"], "sampled_think_rate": sampled["think_rate"],
        "mean_chars": greedy["mean_chars"], "examples": greedy.get("examples", []),
    }


def _sample_rows(model: str, template: str, problems, greedy: dict, sampled: dict) -> list[dict]:
    rows = []
    for index, (problem, g, s) in enumerate(zip(problems, greedy["per_problem"],
                                                sampled["per_problem"])):
        base = {"model": model, "template": template, "problem_index": index,
                "prompt": problem.prompt, "reference": problem.answer}
        for sample in g["samples"]:
            # A single greedy answer forms no vote: its cluster would say nothing.
            rows.append({**base, "greedy": True, "sample_index": 0,
                         "completion": sample["completion"], "extracted": sample["extracted"],
                         "correct": bool(sample["correct"]), "cluster": None,
                         "format_ok": bool(sample["format_ok"])})
        for i, sample in enumerate(s["samples"]):
            rows.append({**base, "greedy": False, "sample_index": i,
                         "completion": sample["completion"], "extracted": sample["extracted"],
                         "correct": bool(sample["correct"]), "cluster": sample["cluster"],
                         "format_ok": bool(sample["format_ok"])})
    return rows


def run(ctx: StageContext) -> dict:
    from backend.evaluation import evaluate
    from backend.generation import open_generator
    from backend.prompts import render_few_shot, resolve_format, template_label
    from backend.tasks.problem import Problem

    cfg = EvaluateConfig.from_dict(ctx.config)
    wired = None if cfg.model_path else ctx.input("model")
    final = wired or ModelArtifact(path=cfg.model_path)
    models = {"final": final}
    base = ctx.input("base_model")
    if base is not None:
        models = {"base": base, "final": final}
    source = cfg.problem_source(None if cfg.dataset else ctx.input("problems"))
    heldout = source.heldout(cfg.eval_problems)
    templates = {template_label(n): few_shot_examples(source, n, cfg.seed)
                 for n in cfg.few_shot}
    described = {**source.describe(), "problems": len(heldout), "k": cfg.k,
                 "temperature": cfg.temperature, "top_p": cfg.top_p,
                 "few_shot": list(cfg.few_shot), "templates": list(templates),
                 "generation_backend": cfg.generation_backend}
    # "auto" says little: record the format(s) the answers were actually read as.
    detected = sorted({p.meta.get("answer_format") for p in heldout} - {None})
    if detected:
        described["answer_format"] = ",".join(detected)
    ctx.event(f"evaluating {', '.join(models)} ({', '.join(templates)}) on {len(heldout)} "
              f"problems of {described['dataset']} ({described['split']}), k={cfg.k}, "
              f"T={cfg.temperature}, top-p={cfg.top_p}")
    ctx.store.clear_eval_samples(ctx.stage.id)  # a re-run scores everything again
    fmt = None if (cfg.prompt_template != "auto" or wired is None) else final.format
    results: dict[str, dict[str, dict]] = {}
    total = 2 * len(models) * len(templates)
    ctx.progress(0, total)
    done = 0
    # The final model first: a model_path's prompt format comes from its own tokenizer, and
    # the base model is prompted as the final one learned.
    for label in sorted(models, key=lambda name: name != "final"):
        artifact = models[label]
        seed_everything(cfg.seed)
        # An HF model, or a vLLM engine built from the folder (GenerationBackendError with the
        # fix when vLLM is missing or cannot start); either is a Generator.
        model = open_generator(cfg.generation_backend, artifact.path, seed=cfg.seed)
        tokenizer = model.tokenizer
        if fmt is None:
            fmt = resolve_format(cfg.prompt_template, tokenizer)
        for template, examples in templates.items():
            problems = [Problem(render_few_shot(fmt, p.prompt, tokenizer, examples), p.answer,
                                p.meta)
                        for p in heldout]
            if examples:  # only few-shot prompts are ours to shorten; rotary models
                # (the tiny one, Qwen, Llama) still generate past max_position_embeddings
                _check_fits(model, tokenizer, [p.prompt for p in problems], cfg.max_new_tokens,
                            template)
            greedy = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens,
                              language=cfg.language)
            done += 1
            ctx.progress(done)
            sampled = evaluate(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, k=cfg.k,
                               seed=cfg.seed, language=cfg.language)
            done += 1
            ctx.progress(done)
            metrics = {"model_path": artifact.path, "template": template,
                       **_metrics(greedy, sampled, cfg.k)}
            results.setdefault(label, {})[template] = metrics
            ctx.store.add_eval_samples(ctx.stage.id,
                                       _sample_rows(label, template, heldout, greedy, sampled))
            ctx.event(f"{label} model, {template}: greedy pass@1 {metrics['greedy_pass@1']:.1%}, "
                      f"pass@1 {metrics['pass@1']:.1%}, cons@{cfg.k} {metrics['cons@k']:.1%}, "
                      f"pass@{cfg.k} {metrics['pass@k']:.1%}, format {metrics['format']:.1%}, "
                      f"reasoning {metrics['reasoning_chars']:.0f} chars")
        model.close()  # one engine at a time: the next model's needs the memory
        del model
    first = next(iter(templates))
    summary: dict[str, Any] = dict(described)
    # "base" / "final": the first template's figures (what the run list, the pipeline page and
    # `run --wait` show); "models": every model x template.
    for label in models:
        summary[label] = results[label][first]
    summary["models"] = {label: results[label] for label in models}
    summary["accuracy"] = summary["final"]["greedy_pass@1"]
    summary["accuracy_lenient"] = summary["final"]["greedy_lenient"]
    summary["think_rate"] = summary["final"]["think_rate"]
    if "base" in summary:
        summary["gain_points"] = 100 * (summary["final"]["greedy_pass@1"]
                                        - summary["base"]["greedy_pass@1"])
    ctx.summary(summary)
    return {"results": EvalResults(summary={k: v for k, v in summary.items()
                                            if k not in ("base", "final", "models")})}

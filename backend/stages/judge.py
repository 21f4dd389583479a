"""Stage ``judge``: teach a model to be the generative judge of rejection sampling.

R1 judged its rejection samples with DeepSeek-V3 shown the reference and the prediction. The
tiny preset has no such model, so the recipe trains one: the base model is fine-tuned with
TRL's ``SFTTrainer`` (prompt-completion data, loss on the completion only) on verdict texts the
addition task writes by its own rules (``backend.tasks.addition.judge_examples``: right and
wrong candidates, cut-off and untagged ones, each with the rule check's verdict). Prompt and
verdict format: ``backend.judge`` (``TINY_TEMPLATE``; the judge writes
``<think>21*,11=,55=</think>0`` for 512 against 511). Real use: any verdict file (``verdict_dataset``: columns
question, reference, candidate, verdict) and any model folder, or skip this stage and point the
rejection stage at an OpenAI-compatible endpoint.

The judge folder records its template (``workbench_judge.json``), so the rejection stage
prompts it as it was trained. The summary holds the judge's accuracy on verdicts about
held-out questions it never saw, overall and per kind of candidate.

Run (wired by a recipe): ``judge`` takes ``model`` (the base) and produces ``model``.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from backend.contract import ModelArtifact, ProblemSource
from backend.stages.common import (ConfigError, StageConfig, check_data_path, check_model_path,
                                   seed_everything, trainer_args)
from backend.stages.context import StageContext, attach_trainer, train_and_save

VERDICT_COLUMNS = ("question", "reference", "candidate", "verdict")


@dataclass
class JudgeStageConfig(StageConfig):
    model_path: str = field(default="", metadata={
        "help": "HF model folder to fine-tune into a judge; empty = the wired model (the base)."})
    verdict_dataset: str = field(default="", metadata={
        "help": "jsonl/json/parquet/csv of verdicts (columns question, reference, candidate, "
                "verdict as true/false or 1/0); empty = the addition task's verdict texts."})
    judge_template: str = field(default="auto", metadata={
        "help": "auto | tiny | llm | a template with {question}, {reference}, {candidate}. "
                "auto: tiny for the character model, llm otherwise."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Verdict texts per step."})
    learning_rate: float = field(default=3e-3, metadata={
        "help": "Peak learning rate (live). Tiny judge, 300 steps: 3e-3 -> 99% held-out "
                "verdict accuracy, 1e-3 -> 86%."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps."})
    min_digits: int = field(default=1, metadata={
        "help": "Synthetic verdicts: fewest digits (a wired synthetic problem source wins)."})
    max_digits: int = field(default=3, metadata={
        "help": "Synthetic verdicts: most digits (a wired synthetic problem source wins)."})
    eval_examples: int = field(default=300, metadata={
        "help": "Held-out verdicts the finished judge is scored on."})
    max_new_tokens: int = field(default=32, metadata={
        "help": "Judge generation budget (tiny: up to ~28 tokens; an LLM that explains: ~512)."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps."})

    def validate(self) -> None:
        from backend.judge import check_template

        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be at least 1")
        if self.eval_examples < 1:
            raise ConfigError("eval_examples must be at least 1 (the judge's accuracy is "
                              "what tells you whether to trust it)")
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise ConfigError("digits must satisfy 1 <= min_digits <= max_digits <= 12")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be > 0")
        check_model_path("model_path", self.model_path)
        check_data_path("verdict_dataset", self.verdict_dataset)
        try:
            check_template(self.judge_template)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def verdict_completion(template: str, candidate: str, reference: str, verdict: bool) -> str:
    """What the judge learns to write: the tiny format for the tiny template, else a sentence
    and the ``VERDICT:`` line that ``backend.judge.parse_verdict`` reads."""
    from backend.judge import TINY_TEMPLATE, tiny_rationale
    from backend.rewards.extract import extract_answer

    if template == TINY_TEMPLATE:
        return tiny_rationale(candidate, reference, verdict)
    answer = extract_answer(candidate)
    said = f"The final answer {answer}" if answer else "The response gives no final answer, so it"
    return (f"{said} {'matches' if verdict else 'does not match'} the reference {reference}.\n"
            f"VERDICT: {'CORRECT' if verdict else 'INCORRECT'}")


def load_verdicts(path: str) -> list:
    """Verdict rows of a file as ``JudgeExample``; DatasetError-style messages on bad input."""
    from datasets import load_dataset

    from backend.tasks.addition import JudgeExample

    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    suffix = next((s for s in builder if path.endswith(s)), None)
    if suffix is None:
        raise ConfigError(f"verdict_dataset {path}: use a .jsonl, .json, .parquet or .csv file")
    try:
        rows = load_dataset(builder[suffix], data_files=path, split="train")
    except Exception as exc:  # noqa: BLE001 - any reader error becomes one clear message
        raise ConfigError(f"verdict_dataset {path} cannot be read: {exc}") from None
    missing = [c for c in VERDICT_COLUMNS if c not in rows.column_names]
    if missing:
        raise ConfigError(f"verdict_dataset {path} lacks column(s) {', '.join(missing)}; "
                          f"it needs {', '.join(VERDICT_COLUMNS)}")
    out = []
    for i, row in enumerate(rows):
        verdict = str(row["verdict"]).strip().lower()
        if verdict not in ("1", "0", "true", "false", "correct", "incorrect"):
            raise ConfigError(f"verdict_dataset {path} row {i}: verdict {row['verdict']!r} is "
                              f"not true/false, 1/0 or correct/incorrect")
        out.append(JudgeExample(str(row["question"]), str(row["reference"]),
                                str(row["candidate"]), verdict in ("1", "true", "correct"),
                                kind="file"))
    return out


def _examples(cfg: JudgeStageConfig, source: Optional[ProblemSource]) -> tuple[list, list]:
    from backend.tasks.addition import judge_examples

    if cfg.verdict_dataset:
        rows = load_verdicts(cfg.verdict_dataset)
        n_eval = min(cfg.eval_examples, max(1, len(rows) // 5))
        return rows[n_eval:], rows[:n_eval]  # the first rows are held out
    low, high = cfg.min_digits, cfg.max_digits
    if source is not None and source.kind == "synthetic":
        low, high = source.min_digits, source.max_digits
    train = judge_examples(cfg.steps * cfg.batch_size, seed=cfg.seed, min_digits=low,
                           max_digits=high)
    heldout = judge_examples(cfg.eval_examples, seed=cfg.seed + 1, min_digits=low,
                             max_digits=high, heldout=True)
    return train, heldout


def score_judge(judge, examples) -> dict:
    """Accuracy of a judge on verdicts with known answers: overall, per kind of candidate, and
    how often it gave no readable verdict."""
    from backend.judge import JudgeItem

    verdicts = judge.judge([JudgeItem(e.question, e.reference, e.candidate) for e in examples])
    right, total = Counter(), Counter()
    for example, verdict in zip(examples, verdicts):
        total[example.kind] += 1
        right[example.kind] += verdict.correct == example.verdict
    n = max(len(examples), 1)
    return {
        "judge_accuracy": sum(right.values()) / n,
        "judge_unparsed_rate": sum(v.correct is None for v in verdicts) / n,
        "judge_accuracy_by_kind": {k: right[k] / total[k] for k in sorted(total)},
        "judge_examples": len(examples),
        "judge_samples": [{"question": e.question, "reference": e.reference,
                           "candidate": e.candidate, "expected": e.verdict,
                           "rationale": v.rationale}
                          for e, v in list(zip(examples, verdicts))[:5]],
    }


def run(ctx: StageContext) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from backend.judge import (JUDGE_SETTINGS_FILE, JudgeItem, LocalJudge, render_prompt,
                               resolve_template)
    from backend.models import load_model
    from backend.prompts import PromptFormat

    cfg = JudgeStageConfig.from_dict(ctx.config)
    model_path = cfg.model_path or ctx.input("model").path
    seed_everything(cfg.seed)
    model, tokenizer = load_model(model_path)
    template = resolve_template(cfg.judge_template, "", tokenizer)
    source = ctx.input("problems")  # optional: a synthetic source sets the digits
    train, heldout = _examples(cfg, source)
    chat = bool(getattr(tokenizer, "chat_template", None))
    fmt = PromptFormat("chat" if chat else "plain", "{prompt}")

    def record(e) -> dict:
        prompt = fmt.for_trainer(render_prompt(template, JudgeItem(e.question, e.reference,
                                                                   e.candidate)))
        completion = verdict_completion(template, e.candidate, e.reference, e.verdict)
        if chat:
            return {"prompt": prompt,
                    "completion": [{"role": "assistant", "content": completion}]}
        return {"prompt": prompt, "completion": completion}

    dataset = Dataset.from_list([record(e) for e in train])
    share = sum(e.verdict for e in train) / max(len(train), 1)
    ctx.event(f"training a judge from {model_path} on {len(train):,} verdict texts "
              f"({share:.0%} 'correct') for {cfg.steps} steps; template "
              f"{'tiny' if '<answer>' in template and 'Problem' not in template else 'llm'}")
    args = SFTConfig(
        **trainer_args(ctx.output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps,
        weight_decay=0.0,
        logging_steps=10,
        max_length=min(getattr(tokenizer, "model_max_length", 1024) or 1024, 1024),
        packing=False,
        completion_only_loss=True,  # learn the verdict, not to echo the prompt
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    attach_trainer(ctx, trainer)
    # The settings travel with the weights: LocalJudge reads them from the folder.
    final_dir = train_and_save(ctx, trainer, tokenizer, files={JUDGE_SETTINGS_FILE: json.dumps(
        {"template": template, "max_new_tokens": cfg.max_new_tokens,
         "trained_from": model_path, "verdict_dataset": cfg.verdict_dataset or "synthetic"},
        indent=1)})

    report = score_judge(LocalJudge(str(final_dir), "auto", cfg.max_new_tokens), heldout)
    ctx.log_metrics(cfg.steps, {"judge/accuracy": report["judge_accuracy"],
                                "judge/unparsed_rate": report["judge_unparsed_rate"]})
    ctx.summary({**report, "template": template, "train_examples": len(train)})
    ctx.event(f"judge accuracy on {report['judge_examples']} held-out verdicts: "
              f"{report['judge_accuracy']:.1%} (no verdict: {report['judge_unparsed_rate']:.1%})")
    return {"model": ModelArtifact(path=str(final_dir))}

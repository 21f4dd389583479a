"""Stage ``rejection``: rejection sampling, R1's third stage, with rule checks and a judge.

The reasoning-RL checkpoint samples ``n_candidates`` completions for each training prompt
(prompted in the format it was trained with). Each candidate is scored by the rule rewards
(``backend.rewards``: accuracy, format, language consistency...) and, where one is configured,
by a generative judge (``backend.judge``: a local model folder, the judge stage's model, or an
OpenAI-compatible endpoint). Candidates are kept by thresholds (:func:`reject_reasons`: correct
by the rule and/or the judge, minimum rule scores, reasoning complete, not cut off, length,
language mixing, the prompt's pass rate) and exact and near duplicates are dropped
(:class:`DedupIndex`). A share of non-reasoning data answered without a chain of thought is
mixed in (tiny: the subtraction family of ``backend.tasks.addition``; real use: a file), and
a share of safety data, requests of a forbidden class answered with a refusal (tiny: ``a*b=``
-> ``<answer>-</answer>``, ``refusal_examples``; real use: a file), so that the SFT model can
refuse and RL for all scenarios has refusals to reinforce. Mixed-in rows carry their
``source`` (``non_reasoning`` | ``safety``), ``origin`` and ``source_row``.

A problems file is held out as GRPO holds it out (its test split, or its first
``eval_problems`` rows), so a held-out problem is never sampled into the SFT data.

Every candidate becomes a row of one dataset in the store, kept ones ``pending`` (for review on
the curation page), the others ``rejected`` with their reasons in ``meta["reject_reasons"]``, so
a person can see why and rescue one. Each row carries its provenance in ``meta``: run, stage,
checkpoint and step of the policy, prompt index and rollout, rule scores, rule and judge
verdicts, the judge's rationale, finish reason, completeness, pass count, length, language
mixing, duplicate_of (the row index of the row it duplicates), the same fields open-r1's
datasets carry (``correctness_math_verify``, ``correctness_llama``, ``is_reasoning_complete``,
``finish_reasons``, ``correctness_count``).

Resume: prompts are processed in chunks; each chunk's rows are appended in one transaction,
then a resume point is recorded (a small JSON file registered as the stage's checkpoint, so
``resume`` says where it restarts and keeps the metrics up to it). A restarted stage finds its
dataset (same stage id), continues after the last prompt whose candidates are all written, and
rebuilds its duplicate index and its non-reasoning share from the stored rows: no candidate is
written twice or lost, whatever moment a ``kill -9`` hit. A judge endpoint that fails for good
ends the stage with a clear error after the prompts judged so far are written.
"""
from __future__ import annotations

import difflib
import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from backend.contract import DatasetArtifact, ProblemSource
from backend.generation import check_generation_backend
from backend.stages.common import (ConfigError, StageConfig, check_data_path, check_model_path,
                                   seed_everything)
from backend.stages.context import StageContext, StageStopped

CORRECT_BY = ("rule", "judge", "rule_or_judge", "rule_and_judge")
JUDGE_ON = ("all", "rule_passed", "rule_failed")
PENDING, REJECTED = "pending", "rejected"
REASONING, NON_REASONING, SAFETY = "reasoning", "non_reasoning", "safety"


@dataclass
class RejectionConfig(StageConfig):
    model_path: str = field(default="", metadata={
        "help": "HF model folder that samples; empty = the wired model (reasoning RL's)."})
    dataset: str = field(default="", metadata={
        "help": "jsonl/parquet/HF dataset of problems; empty = the wired problems."})
    prompt_column: str = field(default="question", metadata={
        "help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})
    answer_format: str = field(default="auto", metadata={
        "help": "auto | gsm8k | boxed | plain.", "choices": ["auto", "gsm8k", "boxed", "plain"]})
    prompt_template: str = field(default="auto", metadata={
        "help": "auto (the model's own format) | chat | plain | bare | a template with {prompt}."})
    prompts: int = field(default=300, metadata={
        "help": "Training prompts to sample for (a file: its first N training rows)."})
    chunk_prompts: int = field(default=25, metadata={
        "help": "Prompts per chunk: rows are written, metrics logged and pause/stop applied "
                "after each chunk; a resume loses at most the chunk in flight."})
    n_candidates: int = field(default=4, metadata={"help": "Candidates sampled per prompt."})
    temperature: float = field(default=0.7, metadata={
        "help": "Sampling temperature (live: applies from the next chunk)."})
    max_new_tokens: int = field(default=96, metadata={
        "help": "Tokens per candidate (a cut-off one is rejected as truncated). The tiny "
                "model's 1-3 digit sums with a summary take ~45, 1-5 digit ones ~70."})
    rule_rewards: list[str] = field(default_factory=lambda: ["accuracy", "format"], metadata={
        "help": "Rule rewards scored for every candidate (add language_consistency to record "
                "it); comma-separated in --set."})
    min_rule_scores: list[float] = field(default_factory=lambda: [0.0, 1.0], metadata={
        "help": "One minimum per rule reward; a candidate below any is rejected. Default: "
                "accuracy 0 (correctness is correct_by's job), format 1 (the exact R1 format)."})
    language: str = field(default="en", metadata={
        "help": "Target language for language_consistency and the language-mixing filter."})
    correct_by: str = field(default="rule_and_judge", metadata={
        "help": "Which verdict decides correctness: rule | judge | rule_or_judge (the judge "
                "rescues answers the rule cannot read; open-r1) | rule_and_judge (both must "
                "agree; a candidate the judge did not see counts on the rule alone).",
        "choices": list(CORRECT_BY)})
    require_reasoning_complete: bool = field(default=True, metadata={
        "help": "Reject a candidate without a closed </think> followed by <answer>...</answer>."})
    drop_truncated: bool = field(default=True, metadata={
        "help": "Reject a candidate cut off by max_new_tokens (finish reason 'length')."})
    min_pass_rate: float = field(default=0.0, metadata={
        "help": "Keep a prompt's candidates only when its share of correct candidates is >= "
                "this (open-r1: about 0.2)."})
    max_pass_rate: float = field(default=1.0, metadata={
        "help": "... and <= this (open-r1: about 0.8, dropping prompts the model always "
                "solves). 1.0 by default: the tiny RL model solves most prompts every time."})
    max_length: int = field(default=0, metadata={
        "help": "Reject candidates longer than this many tokens (0 = no limit)."})
    max_language_mixing: float = field(default=0.1, metadata={
        "help": "Reject candidates whose chain of thought has more than this share of words "
                "outside the target language (1 - language_consistency)."})
    near_duplicate_similarity: float = field(default=0.95, metadata={
        "help": "A kept candidate this similar (0..1, difflib ratio of normalised texts) to an "
                "earlier kept one of the same prompt is rejected as a near duplicate; exact "
                "duplicates (same normalised prompt and text) are always rejected."})
    non_reasoning_share: float = field(default=0.25, metadata={
        "help": "Share of the kept rows that are non-reasoning data (R1: 200k of 800k = 0.25); "
                "0 = none."})
    non_reasoning_dataset: str = field(default="", metadata={
        "help": "jsonl/json/parquet/csv file or save_to_disk folder of non-reasoning rows; "
                "empty = the tiny task's directly answered subtraction family."})
    non_reasoning_prompt_column: str = field(default="prompt", metadata={
        "help": "Prompt column of non_reasoning_dataset."})
    non_reasoning_completion_column: str = field(default="completion", metadata={
        "help": "Completion column of non_reasoning_dataset."})
    safety_share: float = field(default=0.05, metadata={
        "help": "Share of the kept rows that are safety data: a request of a forbidden class "
                "answered with a refusal (R1's SFT data includes safety rows; without them the "
                "tiny policy never samples a refusal for RL to reinforce); 0 = none."})
    safety_dataset: str = field(default="", metadata={
        "help": "jsonl/json/parquet/csv file or save_to_disk folder of safety rows (read with "
                "the non_reasoning prompt / completion columns); empty = the tiny task's "
                "refusals of its forbidden class (a*b= -> <answer>-</answer>)."})
    eval_problems: int = field(default=500, metadata={
        "help": "A problems file without a test split: its first N training rows are held "
                "out and never sampled, as GRPO and evaluate hold out their eval_problems (set "
                "the same number on every stage: --set eval_problems=N)."})
    judge_model_path: str = field(default="", metadata={
        "help": "HF model folder of a local judge; empty = the wired judge (if any)."})
    judge_endpoint: str = field(default="", metadata={
        "help": "OpenAI-compatible server (e.g. http://127.0.0.1:8000 of `vllm serve`); wins "
                "over a local judge."})
    judge_api_model: str = field(default="", metadata={
        "help": "Model name sent to judge_endpoint."})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "Environment variable holding the endpoint's API key (never stored)."})
    judge_template: str = field(default="auto", metadata={
        "help": "auto | tiny | llm | a prompt with {question}, {reference}, {candidate}. auto: "
                "what a judge stage's model was trained with, else tiny or llm by tokenizer."})
    judge_on: str = field(default="all", metadata={
        "help": "Which candidates the judge sees: all (agreement with the rule is measured on "
                "all) | rule_passed | rule_failed (open-r1: only what the rule rejected).",
        "choices": list(JUDGE_ON)})
    judge_max_new_tokens: int = field(default=0, metadata={
        "help": "Judge generation budget; 0 = what the judge stage recorded, 32 for the tiny "
                "template, else 512."})
    judge_timeout: float = field(default=60.0, metadata={
        "help": "Seconds per endpoint request before it counts as failed."})
    judge_retries: int = field(default=3, metadata={
        "help": "Retries of a failed endpoint request (exponential back-off) before the stage "
                "fails, keeping every row written so far."})
    judge_backoff: float = field(default=1.0, metadata={
        "help": "Seconds before the first retry; doubles each retry."})
    judge_concurrency: int = field(default=4, metadata={
        "help": "Endpoint requests in flight at once."})
    generation_backend: str = field(default="hf", metadata={
        "help": "What samples the candidates: hf (transformers) | vllm (a vLLM engine built "
                "from the model folder, ~20 s to start, much faster sampling; needs "
                "requirements-vllm.txt). Temperature steering reaches both.",
        "choices": ["hf", "vllm"]})
    judge_generation_backend: str = field(default="hf", metadata={
        "help": "What generates a local judge's verdicts: hf (transformers) | vllm (a second "
                "vLLM engine, built from the judge folder). Not used with judge_endpoint.",
        "choices": ["hf", "vllm"]})

    def validate(self) -> None:
        from backend.judge import check_template as check_judge_template
        from backend.prompts import check_template
        from backend.rewards import validate_reward_options

        for name in ("prompts", "chunk_prompts", "n_candidates", "max_new_tokens",
                     "judge_concurrency", "eval_problems"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not self.temperature > 0:
            raise ConfigError("temperature must be > 0: rejection sampling needs varied "
                              "candidates (greedy decoding gives n copies of one)")
        try:
            validate_reward_options(self.rule_rewards, {"language": self.language})
            check_template(self.prompt_template)
            check_judge_template(self.judge_template)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if len(self.min_rule_scores) != len(self.rule_rewards):
            raise ConfigError(f"min_rule_scores has {len(self.min_rule_scores)} values but "
                              f"rule_rewards names {len(self.rule_rewards)}; give one minimum "
                              f"per rule reward, e.g. min_rule_scores="
                              f"{','.join('0' for _ in self.rule_rewards)}")
        if self.correct_by not in CORRECT_BY:
            raise ConfigError(f"correct_by must be one of {', '.join(CORRECT_BY)}")
        if self.judge_on not in JUDGE_ON:
            raise ConfigError(f"judge_on must be one of {', '.join(JUDGE_ON)}")
        if not 0 <= self.min_pass_rate <= self.max_pass_rate <= 1:
            raise ConfigError("pass rates must satisfy 0 <= min_pass_rate <= max_pass_rate <= 1")
        for name in ("max_language_mixing", "near_duplicate_similarity"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1")
        if not 0 <= self.non_reasoning_share < 1:
            raise ConfigError("non_reasoning_share must be >= 0 and < 1")
        if not 0 <= self.safety_share < 1 or self.non_reasoning_share + self.safety_share >= 1:
            raise ConfigError("safety_share must be >= 0, and non_reasoning_share + "
                              "safety_share < 1 (some kept rows must be reasoning)")
        if self.max_length < 0 or self.judge_retries < 0 or self.judge_timeout <= 0:
            raise ConfigError("max_length and judge_retries must be >= 0, judge_timeout > 0")
        if self.judge_endpoint and not self.judge_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"judge_endpoint {self.judge_endpoint!r} must be an http:// or "
                              f"https:// URL")
        # Paths are checked when the run is created, not minutes later in the worker.
        check_model_path("model_path", self.model_path)
        check_model_path("judge_model_path", self.judge_model_path)
        check_data_path("dataset", self.dataset)
        check_data_path("non_reasoning_dataset", self.non_reasoning_dataset)
        check_data_path("safety_dataset", self.safety_dataset)
        try:  # vLLM's CPU kernels run only some head sizes: say so now, not at engine start
            check_generation_backend(self.generation_backend, self.model_path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            check_generation_backend(self.judge_generation_backend, self.judge_model_path)
        except ValueError as exc:
            message = str(exc).replace("set generation_backend=hf",
                                       "set judge_generation_backend=hf")
            raise ConfigError(f"judge_{message}" if message.startswith("generation_backend")
                              else f"the judge: {message}") from None
        if self.judge_endpoint and not self.judge_api_model:
            raise ConfigError("judge_endpoint needs judge_api_model (the model name the server "
                              "serves, e.g. the path given to vllm serve)")

    def problem_source(self, given: Optional[ProblemSource]) -> ProblemSource:
        source = ProblemSource.from_dataset_setting(self)
        if source is not None:
            # Held out as GRPO holds it out: the test split, or the first eval_problems rows
            # of a file without one; ProblemSource.train() then never returns a held-out row.
            return source.with_heldout(self.eval_problems)
        if given is None:
            raise ConfigError("no problems to sample for: wire the problems input or set dataset")
        return given


# ------------------------------------------------------------------------------ filters
def normalize_text(text: str) -> str:
    """The text duplicates are compared by: Unicode-normalised (NFKC), case-folded, runs of
    whitespace made one space, no space around punctuation or tags."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ?([^\w\s]) ?", r"\1", text)


def similarity(a: str, b: str) -> float:
    """0..1, difflib's ratio (cheap upper bounds first: most pairs differ a lot)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < 0.5 or matcher.quick_ratio() < 0.5:
        return matcher.quick_ratio()
    return matcher.ratio()


def is_reasoning_complete(text: str) -> bool:
    """A closed ``</think>`` followed by a non-empty ``<answer>...</answer>`` (a chat model
    whose template opens ``<think>`` in the prompt only needs to close it)."""
    head, sep, tail = text.rpartition("</think>")
    if not sep:
        return False
    start = tail.find("<answer>")
    end = tail.find("</answer>", start + 1)
    return start >= 0 and end > start and bool(tail[start + len("<answer>"):end].strip())


def is_correct_by(mode: str, rule_correct: Optional[bool], judge_correct: Optional[bool]) -> bool:
    """Correctness as ``correct_by`` defines it. A verdict that is missing (no judge, the judge
    did not see this candidate) never counts as a no in ``rule_and_judge``."""
    if mode == "rule":
        return rule_correct is True
    if mode == "judge":
        return judge_correct is True
    if mode == "rule_or_judge":
        return rule_correct is True or judge_correct is True
    if mode == "rule_and_judge":
        return rule_correct is True and judge_correct is not False
    raise ValueError(f"correct_by must be one of {', '.join(CORRECT_BY)}")


@dataclass
class Candidate:
    """One sampled completion with everything scored about it."""

    prompt_index: int
    rollout: int
    prompt: str  # the problem as the dataset gives it (rendered by the model's format to sample)
    answer: Optional[str]
    completion: str
    length: int  # tokens
    finish_reason: str  # stop | length
    rule_scores: dict[str, Optional[float]] = field(default_factory=dict)
    rule_correct: Optional[bool] = None
    language_mixing: Optional[float] = None
    judged: bool = False
    judge_correct: Optional[bool] = None
    judge_rationale: Optional[str] = None

    @property
    def reasoning_complete(self) -> bool:
        return is_reasoning_complete(self.completion)


def reject_reasons(c: Candidate, cfg: RejectionConfig, pass_rate: float) -> list[str]:
    """Why a candidate fails the thresholds (empty: it passes). Duplicates are decided after,
    among the candidates that pass (:class:`DedupIndex`)."""
    reasons = []
    if not is_correct_by(cfg.correct_by, c.rule_correct, c.judge_correct):
        if cfg.correct_by == "judge" and c.judge_correct is None:
            reasons.append("no judge verdict")
        else:
            who = [w for w, v in (("rule", c.rule_correct), ("judge", c.judge_correct))
                   if v is False]
            reasons.append(f"incorrect ({' and '.join(who) or 'no verdict'})")
    for (name, minimum) in zip(cfg.rule_rewards, cfg.min_rule_scores):
        score = c.rule_scores.get(name)
        if score is not None and score < minimum:
            reasons.append(f"{name} {score:g} < {minimum:g}")
    if cfg.require_reasoning_complete and not c.reasoning_complete:
        reasons.append("reasoning incomplete")
    if cfg.drop_truncated and c.finish_reason == "length":
        reasons.append("truncated")
    if cfg.max_length and c.length > cfg.max_length:
        reasons.append(f"too long ({c.length} > {cfg.max_length} tokens)")
    if c.language_mixing is not None and c.language_mixing > cfg.max_language_mixing:
        reasons.append(f"language mixing {c.language_mixing:.2f} > {cfg.max_language_mixing:g}")
    if pass_rate < cfg.min_pass_rate:
        reasons.append(f"pass rate {pass_rate:.2f} < {cfg.min_pass_rate:g}")
    if pass_rate > cfg.max_pass_rate:
        reasons.append(f"pass rate {pass_rate:.2f} > {cfg.max_pass_rate:g}")
    return reasons


class DedupIndex:
    """Kept rows by normalised (prompt, text), and per prompt for near-duplicate checks."""

    def __init__(self, near: float):
        self.near = near
        self.exact: dict[tuple[str, str], int] = {}
        self.by_prompt: dict[str, list[tuple[str, int]]] = defaultdict(list)

    def find(self, prompt: str, completion: str) -> tuple[Optional[int], str]:
        """(row index of the kept row this duplicates, "duplicate" | "near duplicate"), or
        (None, "")."""
        key = (normalize_text(prompt), normalize_text(completion))
        if key in self.exact:
            return self.exact[key], "duplicate"
        if self.near < 1:
            for text, row_index in self.by_prompt[key[0]]:
                if similarity(text, key[1]) >= self.near:
                    return row_index, "near duplicate"
        return None, ""

    def add(self, prompt: str, completion: str, row_index: int) -> None:
        key = (normalize_text(prompt), normalize_text(completion))
        self.exact.setdefault(key, row_index)
        self.by_prompt[key[0]].append((key[1], row_index))


def decide_prompt(cands: Sequence[Candidate], cfg: RejectionConfig, dedup: DedupIndex,
                  first_row: int, provenance: dict) -> list[dict]:
    """One prompt's candidates as dataset rows (``first_row``: the row index the first will
    get), kept ``pending`` or ``rejected`` with reasons; kept rows enter ``dedup``."""
    n = len(cands)
    pass_count = sum(is_correct_by(cfg.correct_by, c.rule_correct, c.judge_correct)
                     for c in cands)
    pass_rate = pass_count / n if n else 0.0
    rows = []
    for offset, c in enumerate(cands):
        reasons = reject_reasons(c, cfg, pass_rate)
        duplicate_of = None
        if not reasons:
            duplicate_of, what = dedup.find(c.prompt, c.completion)
            if duplicate_of is not None:
                reasons.append(f"{what} of row {duplicate_of}")
            else:
                dedup.add(c.prompt, c.completion, first_row + offset)
        rows.append({
            "prompt": c.prompt, "completion": c.completion, "answer": c.answer,
            "source": REASONING, "status": REJECTED if reasons else PENDING,
            "meta": {
                **provenance,
                "prompt_index": c.prompt_index, "rollout": c.rollout,
                "rule_scores": c.rule_scores, "rule_correct": c.rule_correct,
                "judge_verdict": (None if not c.judged else "unparsed"
                                  if c.judge_correct is None
                                  else "correct" if c.judge_correct else "incorrect"),
                "judge_correct": c.judge_correct, "judge_rationale": c.judge_rationale,
                "finish_reason": c.finish_reason,
                "is_reasoning_complete": c.reasoning_complete,
                "pass_count": pass_count, "n_candidates": n, "pass_rate": pass_rate,
                "length": c.length, "language_mixing": c.language_mixing,
                "duplicate_of": duplicate_of, "reject_reasons": reasons,
            },
        })
    return rows


def non_reasoning_rows(examples: Sequence[dict], start: int, dedup: DedupIndex,
                       first_row: int, provenance: dict, origin: str,
                       source: str = NON_REASONING) -> list[dict]:
    """Non-reasoning (or, with ``source=SAFETY``, safety) examples (``{prompt, completion,
    answer?}``) as rows; an exact or near duplicate of a kept row is rejected like any
    candidate. ``start``: the index of the first example in its source (recorded, so the mix
    can be traced and resumed)."""
    rows = []
    for offset, example in enumerate(examples):
        prompt, completion = str(example["prompt"]), str(example["completion"])
        duplicate_of, what = dedup.find(prompt, completion)
        reasons = [f"{what} of row {duplicate_of}"] if duplicate_of is not None else []
        if not reasons:
            dedup.add(prompt, completion, first_row + offset)
        answer = example.get("answer")
        rows.append({
            "prompt": prompt, "completion": completion,
            "answer": None if answer is None else str(answer),
            "source": source, "status": REJECTED if reasons else PENDING,
            "meta": {**provenance, "origin": origin, "source_row": start + offset,
                     "duplicate_of": duplicate_of, "reject_reasons": reasons},
        })
    return rows


def non_reasoning_needed(kept_reasoning: int, kept_non_reasoning: int, share: float,
                         other_share: float = 0.0) -> int:
    """Mixed-in rows (non-reasoning or safety) still to add so that they make ``share`` of the
    kept rows, when another mix (``other_share``) takes its own share of them too."""
    if share <= 0:
        return 0
    target = round(kept_reasoning * share / (1 - share - other_share))
    return max(0, target - kept_non_reasoning)


# ------------------------------------------------------------------------------ metrics
def _kept(row: dict) -> bool:
    return not row["meta"].get("reject_reasons")


def batch_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Metrics of one written chunk (also recomputed from stored rows after a resume)."""
    cands = [r for r in rows if r["source"] == REASONING]
    if not cands:
        return {}
    metas = [r["meta"] for r in cands]
    n = len(cands)
    out = {
        "rejection/keep_rate": sum(_kept(r) for r in cands) / n,
        "rejection/rule_pass_rate": sum(m.get("rule_correct") is True for m in metas) / n,
        "rejection/duplicate_rate": sum(m.get("duplicate_of") is not None for m in metas) / n,
        "rejection/mean_pass_rate": sum(m.get("pass_rate", 0.0) for m in metas) / n,
        "rejection/mean_length": sum(m.get("length", 0) for m in metas) / n,
        "rejection/reasoning_complete_rate": sum(bool(m.get("is_reasoning_complete"))
                                                 for m in metas) / n,
        "rejection/non_reasoning_rows": float(sum(r["source"] == NON_REASONING for r in rows)),
        "rejection/safety_rows": float(sum(r["source"] == SAFETY for r in rows)),
    }
    judged = [m for m in metas if m.get("judge_verdict") is not None]
    if judged:
        out["rejection/judge_correct_rate"] = sum(m["judge_correct"] is True
                                                  for m in judged) / len(judged)
        out["rejection/judge_unparsed_rate"] = sum(m["judge_correct"] is None
                                                   for m in judged) / len(judged)
    agreement = judge_agreement(metas)
    if agreement["both_scored"]:
        out["rejection/judge_agreement"] = agreement["agreement"]
    return out


def judge_agreement(metas: Sequence[dict]) -> dict[str, Any]:
    """How often the judge agrees with the rule check, on the candidates both scored."""
    both = [m for m in metas if m.get("rule_correct") is not None
            and m.get("judge_correct") is not None]
    table = Counter((m["rule_correct"], m["judge_correct"]) for m in both)
    return {
        "both_scored": len(both),
        "agreement": (table[(True, True)] + table[(False, False)]) / len(both) if both else None,
        "both_correct": table[(True, True)], "both_incorrect": table[(False, False)],
        "rule_only_correct": table[(True, False)], "judge_only_correct": table[(False, True)],
    }


def reason_kind(reason: str) -> str:
    """``"format 0 < 1"`` -> ``"format"``, ``"duplicate of row 12"`` -> ``"duplicate"``."""
    for kind in ("near duplicate", "duplicate", "incorrect", "no judge verdict", "pass rate",
                 "reasoning incomplete", "truncated", "too long", "language mixing"):
        if reason.startswith(kind):
            return kind
    return reason.split(" ")[0]


def summarize(rows: Sequence[dict]) -> dict[str, Any]:
    """The stage summary, from every row of its dataset."""
    cands = [r for r in rows if r["source"] == REASONING]
    others = [r for r in rows if r["source"] == NON_REASONING]
    safety = [r for r in rows if r["source"] == SAFETY]
    reasons = Counter(reason_kind(x) for r in cands for x in r["meta"]["reject_reasons"])
    kept = sum(_kept(r) for r in cands)
    prompts = len({r["meta"]["prompt_index"] for r in cands})
    kept_prompts = len({r["meta"]["prompt_index"] for r in cands if _kept(r)})
    return {
        "prompts": prompts, "candidates": len(cands), "kept": kept,
        "keep_rate": kept / len(cands) if cands else 0.0,
        "prompts_with_a_kept_row": kept_prompts,
        "rule_pass_rate": (sum(r["meta"]["rule_correct"] is True for r in cands) / len(cands)
                           if cands else 0.0),
        "rejected_by": dict(reasons.most_common()),
        "non_reasoning_kept": sum(_kept(r) for r in others),
        "non_reasoning_rejected": sum(not _kept(r) for r in others),
        "safety_kept": sum(_kept(r) for r in safety),
        "safety_rejected": sum(not _kept(r) for r in safety),
        "judge": judge_agreement([r["meta"] for r in cands]),
        "rows": len(rows),
    }


# ------------------------------------------------------------------------------ data
def load_text_pairs(path: str, prompt_column: str, completion_column: str,
                    setting: str = "non_reasoning_dataset") -> list[dict]:
    """Rows ``{prompt, completion, answer?}`` of a jsonl/json/parquet/csv file or a
    ``save_to_disk`` folder; ConfigError says what is wrong with it."""
    import os

    import datasets

    builders = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet",
                ".csv": "csv"}
    try:
        if os.path.isdir(path):
            data = datasets.load_from_disk(path)
            if isinstance(data, datasets.DatasetDict):
                data = data["train"] if "train" in data else next(iter(data.values()))
        else:
            suffix = next((s for s in builders if path.endswith(s)), None)
            if suffix is None:
                raise ConfigError(f"{setting} {path}: use a .jsonl, .json, "
                                  f".parquet or .csv file or a save_to_disk folder")
            data = datasets.load_dataset(builders[suffix], data_files=path, split="train")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error becomes one clear message
        raise ConfigError(f"{setting} {path} cannot be read: {exc}") from None
    missing = [c for c in (prompt_column, completion_column) if c not in data.column_names]
    if missing:
        raise ConfigError(f"{setting} {path} has no column(s) {', '.join(missing)} "
                          f"(columns: {', '.join(data.column_names)}); set "
                          f"non_reasoning_prompt_column / non_reasoning_completion_column")
    has_answer = "answer" in data.column_names
    return [{"prompt": row[prompt_column], "completion": row[completion_column],
             "answer": row["answer"] if has_answer else None} for row in data]


# ------------------------------------------------------------------------------ the stage
class Sampler:
    """Samples and scores one chunk of prompts: the policy's candidates, rule rewards, judge."""

    def __init__(self, cfg: RejectionConfig, model, tokenizer, fmt, judge):
        from backend.rewards import build_reward_functions

        self.cfg, self.model, self.tokenizer, self.fmt, self.judge = (
            cfg, model, tokenizer, fmt, judge)
        self.temperature = cfg.temperature
        self.error: Optional[Exception] = None  # the judge's failure, when it failed for good
        self.rule_fns = build_reward_functions(cfg.rule_rewards, {"language": cfg.language})
        self.mixing_fn = build_reward_functions(["language_consistency"],
                                                {"language": cfg.language})[0]

    def sample(self, problems, first_index: int, seed: int) -> list[list[Candidate]]:
        from backend.generation import generate_samples
        from backend.rewards import is_correct

        cfg = self.cfg
        rendered = [self.fmt.render(p.prompt, self.tokenizer) for p in problems]
        samples = generate_samples(self.model, self.tokenizer, rendered,
                                   max_new_tokens=cfg.max_new_tokens,
                                   temperature=self.temperature,
                                   num_samples=cfg.n_candidates, seed=seed)
        out = []
        for i, (problem, outs) in enumerate(zip(problems, samples)):
            texts = [s.text for s in outs]
            answers = [problem.answer] * len(texts)
            scores = {fn.__name__: fn([problem.prompt] * len(texts), texts, answer=answers)
                      for fn in self.rule_fns}
            consistency = self.mixing_fn([problem.prompt] * len(texts), texts)
            out.append([Candidate(
                prompt_index=first_index + i, rollout=j, prompt=problem.prompt,
                answer=problem.answer, completion=s.text, length=s.tokens,
                finish_reason=s.finish_reason,
                rule_scores={name: values[j] for name, values in scores.items()},
                rule_correct=is_correct(s.text, problem.answer),
                language_mixing=None if consistency[j] is None else 1.0 - consistency[j],
            ) for j, s in enumerate(outs)])
        return out

    def wants_judge(self, c: Candidate) -> bool:
        on = self.cfg.judge_on
        return (on == "all" or (on == "rule_passed" and c.rule_correct is True)
                or (on == "rule_failed" and c.rule_correct is not True))

    def judge_chunk(self, chunk: list[list[Candidate]]) -> int:
        """Judge the chunk's candidates in place. Returns how many leading prompts are fully
        scored: all of them, or, when the judge fails for good, those before the failure (the
        JudgeError is re-raised by the caller after they are written)."""
        from backend.judge import JudgeError, JudgeItem

        if self.judge is None:
            return len(chunk)
        todo = [c for cands in chunk for c in cands if self.wants_judge(c)]
        try:
            verdicts = self.judge.judge([JudgeItem(c.prompt, c.answer or "", c.completion)
                                         for c in todo])
            error = None
        except JudgeError as exc:
            verdicts, error = exc.done, exc
        for c, verdict in zip(todo, verdicts):
            c.judged, c.judge_correct, c.judge_rationale = True, verdict.correct, verdict.rationale
        if error is None:
            return len(chunk)
        complete = 0
        for cands in chunk:  # a prompt is scored when none of its wanted verdicts is missing
            if any(self.wants_judge(c) and not c.judged for c in cands):
                break
            complete += 1
        self.error = error
        return complete


def _provenance(ctx: StageContext, cfg: RejectionConfig, model_path: str, judge) -> dict:
    """What every row of this stage records about where it came from."""
    ref = ctx.stage.inputs.get("model") if not cfg.model_path else None
    src_key = ref.partition(".")[0] if ref else None
    source = next((s for s in ctx.run.stages if s.key == src_key), None)
    return {"run_id": ctx.run.id, "stage_id": ctx.stage.id, "stage_key": ctx.stage.key,
            "source_stage": src_key, "checkpoint": model_path,
            "step": source.step if source is not None else None,
            "judge_model": judge.name if judge is not None else None}


def _load_judge(ctx: StageContext, cfg: RejectionConfig):
    from backend.judge import build_judge

    wired = None if (cfg.judge_endpoint or cfg.judge_model_path) else ctx.input("judge")
    return build_judge(
        model_path=cfg.judge_model_path or (wired.path if wired is not None else ""),
        endpoint=cfg.judge_endpoint, api_model=cfg.judge_api_model,
        template=cfg.judge_template, max_new_tokens=cfg.judge_max_new_tokens,
        timeout=cfg.judge_timeout, retries=cfg.judge_retries, backoff=cfg.judge_backoff,
        concurrency=cfg.judge_concurrency, api_key_env=cfg.judge_api_key_env,
        generation_backend=cfg.judge_generation_backend)


class RowWriter:
    """Appends rows to the stage's dataset (created with the first chunk, found again on a
    restart) and records a resume point after each write."""

    def __init__(self, ctx: StageContext, name: str):
        self.ctx, self.name = ctx, name
        existing = next((d for d in ctx.store.datasets(ctx.run.id)
                         if d.stage_id == ctx.stage.id), None)
        self.dataset_id = existing.id if existing else None
        self.rows: list[dict] = []  # every row of the dataset, as written
        if existing is not None:
            self.rows = [{"prompt": r.prompt, "completion": r.completion, "answer": r.answer,
                          "source": r.source, "status": r.status, "meta": r.meta}
                         for r in ctx.store.dataset_rows(existing.id)]

    @property
    def size(self) -> int:
        return len(self.rows)

    def write(self, rows: list[dict], prompts_done: int) -> None:
        for row in rows:
            row["meta"]["write_step"] = prompts_done
        if self.dataset_id is None:
            self.dataset_id = self.ctx.store.create_dataset(
                self.name, "rejection", rows, run_id=self.ctx.run.id, stage_id=self.ctx.stage.id)
        elif rows:
            self.ctx.store.append_rows(self.dataset_id, rows)
        self.rows.extend(rows)
        self.resume_point(prompts_done)

    def resume_point(self, prompts_done: int) -> None:
        folder = self.ctx.output_dir / "resume"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"after-prompt-{prompts_done:06d}.json"
        path.write_text(json.dumps({"prompts_done": prompts_done, "dataset_id": self.dataset_id,
                                    "rows": self.size}))
        self.ctx.checkpoint_saved(prompts_done, str(path), kind="trainer")


@dataclass
class Mix:
    """Rows mixed in next to the kept candidates at their ``share`` of the kept rows: the
    non-reasoning data, or the safety data. ``pool`` is prefix-stable, so a resumed stage
    draws the rows after those it already wrote (counted from the stored rows)."""

    source: str  # NON_REASONING | SAFETY
    pool: list[dict]
    origin: str
    share: float
    other_share: float  # the other mix's share (both are shares of all kept rows)
    warned: bool = False

    def rows(self, ctx: StageContext, kept_reasoning: int, written: Sequence[dict],
             dedup: DedupIndex, first_row: int) -> list[dict]:
        mine = [r for r in written if r["source"] == self.source]
        need = non_reasoning_needed(kept_reasoning, sum(_kept(r) for r in mine), self.share,
                                    self.other_share)
        take = self.pool[len(mine):len(mine) + need]
        if len(take) < need and self.pool and not self.warned:
            self.warned = True
            ctx.event(f"{self.source.replace('_', '-')} data ran out after {len(self.pool)} "
                      f"rows; the mix falls short of {self.share:.0%}", level="warning")
        return non_reasoning_rows(take, len(mine), dedup, first_row,
                                  {"run_id": ctx.run.id, "stage_id": ctx.stage.id,
                                   "stage_key": ctx.stage.key}, self.origin, self.source)


def _mix(ctx: StageContext, cfg: RejectionConfig, source: ProblemSource, total: int,
         kind: str) -> Mix:
    """The non-reasoning or safety mix: a file when one is set, else the tiny task's own rows
    (subtraction answered directly; refusals of its forbidden class) when the problems are
    the tiny task's, else nothing (the tiny task's rows would be noise next to real data)."""
    from backend.tasks.addition import non_reasoning_examples, refusal_examples

    safety = kind == SAFETY
    share, other = ((cfg.safety_share, cfg.non_reasoning_share) if safety
                    else (cfg.non_reasoning_share, cfg.safety_share))
    path = cfg.safety_dataset if safety else cfg.non_reasoning_dataset
    if share <= 0:
        return Mix(kind, [], "", share, other)
    if path:
        pool = load_text_pairs(path, cfg.non_reasoning_prompt_column,
                               cfg.non_reasoning_completion_column,
                               "safety_dataset" if safety else "non_reasoning_dataset")
        return Mix(kind, pool, path, share, other)
    if source.kind == "synthetic":
        # Enough for the share of every candidate kept, with room for duplicates.
        enough = int(1.5 * total * cfg.n_candidates * share / (1 - share - other)) + 50
        make = refusal_examples if safety else non_reasoning_examples
        pool = make(enough, seed=cfg.seed, min_digits=source.min_digits,
                    max_digits=source.max_digits)
        return Mix(kind, pool, ("synthetic refusals of the forbidden request class (a*b=)"
                                if safety else "synthetic subtraction, answered directly"),
                   share, other)
    ctx.event(f"no {'safety' if safety else 'non-reasoning'} data mixed in: the problems come "
              f"from a file and {'safety' if safety else 'non_reasoning'}_dataset is not set",
              level="warning")
    return Mix(kind, [], "", share, other)


def run(ctx: StageContext) -> dict:
    from backend.generation import open_generator
    from backend.prompts import resolve_format

    cfg = RejectionConfig.from_dict(ctx.config)
    wired = None if cfg.model_path else ctx.input("model")
    model_path = cfg.model_path or wired.path
    seed_everything(cfg.seed)
    source = cfg.problem_source(None if cfg.dataset else ctx.input("problems"))
    if cfg.correct_by == "judge" and not (cfg.judge_endpoint or cfg.judge_model_path
                                          or ctx.stage.inputs.get("judge")):
        raise ConfigError("correct_by=judge needs a judge: wire the judge input, or set "
                          "judge_model_path or judge_endpoint")
    judge = _load_judge(ctx, cfg)  # fails now, before any sampling, if it cannot load
    # The sampler: an HF model, or a vLLM engine built from the folder (GenerationBackendError
    # with the fix when vLLM is missing or cannot start); either is a Generator.
    model = open_generator(cfg.generation_backend, model_path, seed=cfg.seed)
    tokenizer = model.tokenizer
    fmt = (wired.format if wired is not None and cfg.prompt_template == "auto"
           else resolve_format(cfg.prompt_template, tokenizer))
    problems = (source.train(cfg.prompts, seed=cfg.seed, distinct=True)
                if source.kind == "synthetic" else source.train(cfg.prompts)[:cfg.prompts])
    total = len(problems)

    writer = RowWriter(ctx, f"rejection samples: run {ctx.run.id}, stage {ctx.stage.key}")
    reasoning = [r for r in writer.rows if r["source"] == REASONING]
    done = 1 + max((r["meta"]["prompt_index"] for r in reasoning), default=-1)
    dedup = DedupIndex(cfg.near_duplicate_similarity)
    for index, row in enumerate(writer.rows):
        if _kept(row):
            dedup.add(row["prompt"], row["completion"], index)
    if writer.rows:
        _replay_metrics(ctx, writer)
        ctx.event(f"continuing after prompt {done} of {total}: {writer.size} rows already "
                  f"in dataset {writer.dataset_id}")

    mixes = [_mix(ctx, cfg, source, total, NON_REASONING),
             _mix(ctx, cfg, source, total, SAFETY)]

    sampler = Sampler(cfg, model, tokenizer, fmt, judge)
    ctx.setters["temperature"] = lambda t: (setattr(sampler, "temperature", t)
                                            or f"temperature = {t:g} from the next chunk")
    ctx.reapply_params()
    provenance = _provenance(ctx, cfg, model_path, judge)
    ctx.event(f"rejection sampling {total - done} of {total} prompts from "
              f"{source.describe()['dataset']} with {model_path} ({cfg.generation_backend}): "
              f"{cfg.n_candidates} candidates each at temperature {sampler.temperature:g}; judge: "
              f"{judge.name if judge else 'none'}"
              f"{f' ({judge.generation_backend})' if hasattr(judge, 'generation_backend') else ''}"
              f"; correct by {cfg.correct_by}")
    ctx.progress(done, total)
    started, started_at = done, time.time()
    while done < total:
        ctx.apply_commands(done)
        if ctx.stop_requested:
            raise StageStopped()
        chunk_problems = problems[done:done + cfg.chunk_prompts]
        chunk = sampler.sample(chunk_problems, done, seed=cfg.seed + done)
        complete = sampler.judge_chunk(chunk)
        rows: list[dict] = []
        for cands in chunk[:complete]:
            rows += decide_prompt(cands, cfg, dedup, writer.size + len(rows),
                                  {**provenance, "temperature": sampler.temperature})
        kept_r = sum(_kept(r) for r in writer.rows + rows if r["source"] == REASONING)
        for mix in mixes:
            rows += mix.rows(ctx, kept_r, writer.rows, dedup, writer.size + len(rows))
        done += complete
        if rows:
            writer.write(rows, done)
            metrics = batch_metrics(rows)
            elapsed = time.time() - started_at
            metrics["rejection/seconds_per_100_prompts"] = 100 * elapsed / max(done - started, 1)
            metrics["steer/temperature"] = sampler.temperature
            ctx.log_metrics(done, metrics)
        ctx.progress(done, total)
        if complete < len(chunk):
            ctx.summary({**summarize(writer.rows), "dataset_id": writer.dataset_id})
            from backend.judge import JudgeError

            raise JudgeError(
                f"{sampler.error} The {writer.size} rows written so far (prompts 0-{done - 1}) "
                f"are kept in dataset {writer.dataset_id}; resume continues after prompt "
                f"{done}.")

    if writer.dataset_id is None:  # nothing to sample (an empty problem file)
        writer.write([], done)
    if judge is not None:
        judge.close()
    elapsed = time.time() - started_at
    summary = {**summarize(writer.rows), "dataset_id": writer.dataset_id,
               "policy": model_path, "judge_model": judge.name if judge else None,
               "prompt_format": fmt.to_dict(), **source.describe(),
               "seconds_per_100_prompts": (100 * elapsed / (done - started)
                                           if done > started else None)}
    summary["split"] = "train"
    ctx.summary(summary)
    agreement = summary["judge"]["agreement"]
    ctx.event(f"kept {summary['kept']} of {summary['candidates']} candidates "
              f"({summary['keep_rate']:.0%}), {summary['non_reasoning_kept']} non-reasoning "
              f"and {summary['safety_kept']} safety rows in dataset {writer.dataset_id}"
              + (f"; judge agrees with the rule on {agreement:.1%} of "
                 f"{summary['judge']['both_scored']} candidates" if agreement is not None else ""))
    return {"dataset": DatasetArtifact(dataset_id=writer.dataset_id)}


def _replay_metrics(ctx: StageContext, writer: RowWriter) -> None:
    """After a restart: the resume kept metrics up to its resume point; log again, from the
    stored rows, the metrics of chunks written after it (a kill between a chunk's rows and its
    resume point), and record a resume point at the last written chunk."""
    at = 0
    if ctx.resume_checkpoint:
        try:
            at = json.loads(open(ctx.resume_checkpoint).read()).get("prompts_done", 0)
        except (OSError, ValueError):
            at = 0
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in writer.rows:
        by_step[row["meta"].get("write_step", 0)].append(row)
    for step in sorted(s for s in by_step if s > at):
        ctx.log_metrics(step, batch_metrics(by_step[step]))
    last = max(by_step, default=0)
    if last > at:
        writer.resume_point(last)

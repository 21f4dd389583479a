"""Held-out evaluation: pass@1 (greedy, and averaged over k samples), cons@k, format use.

Shared by the pretrain stage (base model accuracy), the GRPO stage's periodic quick eval and
the evaluate stage, so that every accuracy on every page is computed the same way.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from backend.generation import generate
from backend.rewards.accuracy import answers_match
from backend.rewards.extract import extract_answer
from backend.tasks.problem import Problem

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def lenient_answer(text: str) -> str | None:
    """The tagged answer if there is one, else the last number anywhere in the text."""
    tagged = extract_answer(text)
    if tagged is not None:
        return tagged.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def score_completions(problems: Sequence[Problem], completions: Sequence[Sequence[str]]) -> dict:
    """Accuracy figures for ``completions[i]`` (k samples) of ``problems[i]``."""
    n = len(problems)
    strict = lenient = think = tagged = cons = 0.0
    total_len = 0
    samples = 0
    for problem, outs in zip(problems, completions):
        votes = Counter()
        for text in outs:
            samples += 1
            answer = extract_answer(text)
            strict += bool(answer is not None and answers_match(answer, problem.answer))
            loose = lenient_answer(text)
            lenient += bool(loose is not None and answers_match(loose, problem.answer))
            think += "<think>" in text and "</think>" in text
            tagged += answer is not None
            total_len += len(text)
            if answer is not None:
                votes[answer.strip()] += 1
        if votes:
            majority = votes.most_common(1)[0][0]
            cons += answers_match(majority, problem.answer)
    samples = max(samples, 1)
    return {
        "accuracy": strict / samples,  # pass@1 averaged over samples; strict: inside <answer>
        "accuracy_lenient": lenient / samples,
        "cons_at_k": cons / max(n, 1),
        "think_rate": think / samples,
        "answer_tag_rate": tagged / samples,
        "mean_chars": total_len / samples,
        "problems": n,
        "samples_per_problem": samples // max(n, 1),
    }


def evaluate(model, tokenizer, problems: Sequence[Problem], *, max_new_tokens: int,
             temperature: float = 0.0, k: int = 1, seed: int = 0) -> dict:
    outs = generate(model, tokenizer, [p.prompt for p in problems], max_new_tokens=max_new_tokens,
                    temperature=temperature, num_samples=k, seed=seed)
    result = score_completions(problems, outs)
    result["examples"] = [
        {"prompt": p.prompt, "answer": p.answer, "completion": o[0]}
        for p, o in list(zip(problems, outs))[:5]
    ]
    return result

"""Readable-summary reward (DeepSeek-R1, stage 4 "RL for all scenarios"): after its reasoning the
model writes a short summary for the reader, in the reader's language, before the answer.

R1's cold-start data defines the output as ``<think> reasoning </think> summary`` and the paper
asks the model to keep that summary readable. Here the summary is the text between the first
``</think>`` and the ``<answer>`` that follows it (the end of the completion when there is no
answer tag). It is *readable* when all of these hold:

- it exists: there is a ``</think>`` and non-blank text after it;
- it is within the length budget: at most ``max_chars`` characters (characters, not tokens, so
  the reward means the same for every tokenizer and in the UI);
- it carries no format tags (a second ``<think>`` is more reasoning, not a summary);
- it is in the target language: at least ``min_share`` of its words are in ``language``
  (:func:`backend.rewards.language.target_share`; a summary with no words, like the tiny
  model's ``578+853=1431``, is in no wrong language and passes);
- with ``restates_answer`` (the default), it states the final answer the completion gives: the
  answer's text appears in it as a whole number or word (``=1431`` restates ``1431``,
  ``=14310`` does not; compared ignoring case). A completion with no extractable answer skips
  this check. Turn it off for real text whose answers are written differently in prose
  (``\\frac{1}{2}`` vs "one half").

The reward is 1.0 for a readable summary and 0.0 otherwise; :func:`summary_problems` says which
check failed (the group inspector and tests show the reasons). A row in an unsupported language
scores ``None``, as in ``language_consistency``.
"""

from __future__ import annotations

import re
from typing import Any

from backend.rewards.extract import ANSWER_OPEN, FORMAT_TAGS, THINK_CLOSE, completion_text, extract_answer
from backend.rewards.language import DEFAULT_LANGUAGE, _language_or_none, normalize_language, target_share

SUMMARY_MAX_CHARS = 300
SUMMARY_MIN_SHARE = 0.9
SUMMARY_RESTATES_ANSWER = True


def summary_text(completion: Any) -> str | None:
    """The summary of a completion, stripped; ``None`` when there is no ``</think>``."""
    text = completion_text(completion)
    close = text.find(THINK_CLOSE)
    if close < 0:
        return None
    after = text[close + len(THINK_CLOSE) :]
    answer_at = after.find(ANSWER_OPEN)
    return (after if answer_at < 0 else after[:answer_at]).strip()


def _states(summary: str, answer: str) -> bool:
    """``answer`` appears in ``summary`` as a whole number or word (not inside a longer one)."""
    pattern = rf"(?<![0-9A-Za-z.]){re.escape(answer)}(?![0-9A-Za-z]|\.[0-9])"
    return re.search(pattern, summary, flags=re.IGNORECASE) is not None


def summary_problems(
    completion: Any,
    language: str = DEFAULT_LANGUAGE,
    max_chars: int = SUMMARY_MAX_CHARS,
    min_share: float = SUMMARY_MIN_SHARE,
    restates_answer: bool = SUMMARY_RESTATES_ANSWER,
) -> list[str]:
    """Why a completion's summary is not readable (empty list: it is); see the module docstring."""
    summary = summary_text(completion)
    if summary is None:
        return ["no summary: no </think> before the answer"]
    if not summary:
        return ["no summary: nothing between </think> and the answer"]
    problems = []
    if len(summary) > max_chars:
        problems.append(f"summary of {len(summary)} characters is over the budget of {max_chars}")
    if any(tag in summary for tag in FORMAT_TAGS):
        problems.append("summary contains format tags")
    share = target_share(summary, normalize_language(language))
    if share < min_share:
        problems.append(f"only {share:.0%} of the summary is in {language} (needs {min_share:.0%})")
    if restates_answer:
        answer = extract_answer(completion)
        if answer is not None and not _states(summary, answer):
            problems.append(f"summary does not state the answer {answer}")
    return problems


def check_summary_options(
    max_chars: Any = SUMMARY_MAX_CHARS, min_share: Any = SUMMARY_MIN_SHARE, restates_answer: Any = True
) -> None:
    """Refuse settings the reward cannot use (``ValueError`` saying how to fix them)."""
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"summary_max_chars must be a whole number of characters >= 1, got {max_chars!r}")
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share <= 1:
        raise ValueError(f"summary_min_share must be a share between 0 and 1, got {min_share!r}")
    if not isinstance(restates_answer, bool):
        raise ValueError(f"summary_restates_answer must be true or false, got {restates_answer!r}")


def readable_summary(
    prompts: list,
    completions: list,
    language: str | list[str | None] | None = DEFAULT_LANGUAGE,
    max_chars: int = SUMMARY_MAX_CHARS,
    min_share: float = SUMMARY_MIN_SHARE,
    restates_answer: bool = SUMMARY_RESTATES_ANSWER,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 for each completion whose summary is readable, else 0.0 (``None``: unsupported language).

    ``language``: one code for the batch, or the dataset's ``language`` column as TRL passes it.
    """
    languages = list(language) if isinstance(language, (list, tuple)) else [language] * len(completions)
    if len(languages) != len(completions):
        raise ValueError(f"language has {len(languages)} entries for {len(completions)} completions")
    rewards: list[float | None] = []
    for completion, lang in zip(completions, languages):
        target = _language_or_none(lang)
        if target is None:
            rewards.append(None)
            continue
        problems = summary_problems(completion, target, max_chars, min_share, restates_answer)
        rewards.append(0.0 if problems else 1.0)
    return rewards

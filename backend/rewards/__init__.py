"""Rule-based rewards for GRPO, each a plain TRL reward function.

Signature: ``(prompts, completions, **kwargs) -> list[float | None]``. TRL passes every extra
dataset column as a keyword list aligned with ``completions`` (``answer=[...]``,
``language=[...]``) plus ``completion_ids`` and ``trainer_state``; each function takes what it
needs and ignores the rest. ``None`` means "no reward for this row" (TRL skips it).

Look a reward up by name in :data:`REWARD_FUNCTIONS`; the name is also the function's
``__name__``, which is what TRL logs (``rewards/<name>/mean``). Stored runs and the UI use
these names, so they never change.

Settings: a stage passes the chosen names and one flat dict of reward options (keys in
:data:`REWARD_OPTIONS`, e.g. ``{"language": "en", "cosine_max_len": 512}``).
:func:`validate_reward_options` checks them when the run is configured and raises
``ValueError`` saying how to fix an unknown reward, an unsupported language or a bad
cosine/repetition setting; :func:`build_reward_functions` returns the functions with those
settings applied (what to hand TRL). Every option applies whether or not its reward is chosen,
so a bad value is refused even while unused.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from backend.rewards.accuracy import accuracy, answers_match, is_correct
from backend.rewards.extract import completion_text, extract_answer, split_think_answer
from backend.rewards.format import format, tag_count  # noqa: A004
from backend.rewards.language import DEFAULT_LANGUAGE, language_consistency, normalize_language
from backend.rewards.length import (
    COSINE_MAX_LEN,
    COSINE_MAX_VALUE_CORRECT,
    COSINE_MAX_VALUE_WRONG,
    COSINE_MIN_VALUE_CORRECT,
    COSINE_MIN_VALUE_WRONG,
    check_cosine_options,
    cosine_length,
    length,
    make_cosine_length,
)
from backend.rewards.repetition import (
    CHAR_NGRAM_SIZE,
    MAX_PENALTY,
    NGRAM_SIZE,
    check_repetition_options,
    make_repetition_penalty,
    repetition,
)
from backend.rewards.summary import (
    SUMMARY_MAX_CHARS,
    SUMMARY_MIN_SHARE,
    SUMMARY_RESTATES_ANSWER,
    check_summary_options,
    readable_summary,
)

REWARD_FUNCTIONS: dict[str, Callable[..., list[float | None]]] = {
    "accuracy": accuracy,
    "format": format,
    "tag_count": tag_count,
    "language_consistency": language_consistency,
    "length": length,
    "cosine_length": cosine_length,
    "repetition": repetition,
    "readable_summary": readable_summary,
}

# Rewards given by a reward model, not a function (``backend.rewards.reward_model``): a stage
# loads the model and hands it to TRL, which logs and records it under this name.
REWARD_MODEL_NAMES = ("helpfulness", "harmlessness")

_DESCRIPTIONS = {
    "accuracy": (
        "1 if the final answer (last <answer> or \\boxed{}) equals the reference, else 0 "
        "(numbers by value, unit words ignored)."
    ),
    "format": "1 if the completion is exactly <think>…</think><answer>…</answer>, else 0.",
    "tag_count": "0.25 for each of <think>, </think>, <answer>, </answer> appearing exactly once.",
    "language_consistency": "Share of the chain of thought written in the target language (en or zh), 0 to 1.",
    "length": "Kimi k1.5 length penalty: shorter correct answers score up to +0.5, long ones down to -0.5.",
    "cosine_length": (
        f"Correctness scaled by length on a cosine: right 1.0 (short) to 0.5 (at {COSINE_MAX_LEN} tokens), "
        "wrong -1.0 (short) to -0.5 (long)."
    ),
    "repetition": (
        f"Penalty for repeated word {NGRAM_SIZE}-grams or {CHAR_NGRAM_SIZE}-character runs: 0 with no repeats "
        "down to -1 for a text that only repeats."
    ),
    "readable_summary": (
        "1 if a short summary in the target language sits between </think> and <answer> and states "
        "the answer, else 0."
    ),
    "helpfulness": "Score of the helpfulness reward model (trained on preference pairs): higher = more helpful.",
    "harmlessness": "Score of the harmlessness reward model (trained on preference pairs): higher = safer.",
}


def describe_reward(name: str) -> str:
    """One-line description of a reward, for the UI."""
    if name not in _DESCRIPTIONS:
        raise KeyError(
            f"unknown reward {name!r}; known rewards: {', '.join(REWARD_FUNCTIONS)}, {', '.join(REWARD_MODEL_NAMES)}"
        )
    return _DESCRIPTIONS[name]


# Reward options: key -> (the reward it configures, its default). One flat dict, so that a
# stage config can hold them as plain fields.
REWARD_OPTIONS: dict[str, tuple[str, Any]] = {
    "language": ("language_consistency", DEFAULT_LANGUAGE),
    "cosine_max_len": ("cosine_length", COSINE_MAX_LEN),
    "cosine_min_value_wrong": ("cosine_length", COSINE_MIN_VALUE_WRONG),
    "cosine_max_value_wrong": ("cosine_length", COSINE_MAX_VALUE_WRONG),
    "cosine_min_value_correct": ("cosine_length", COSINE_MIN_VALUE_CORRECT),
    "cosine_max_value_correct": ("cosine_length", COSINE_MAX_VALUE_CORRECT),
    "repetition_ngram_size": ("repetition", NGRAM_SIZE),
    "repetition_max_penalty": ("repetition", MAX_PENALTY),
    "repetition_char_ngram_size": ("repetition", CHAR_NGRAM_SIZE),
    "summary_max_chars": ("readable_summary", SUMMARY_MAX_CHARS),
    "summary_min_share": ("readable_summary", SUMMARY_MIN_SHARE),
    "summary_restates_answer": ("readable_summary", SUMMARY_RESTATES_ANSWER),
}


def _option(options: dict[str, Any] | None, key: str) -> Any:
    value = (options or {}).get(key)
    return REWARD_OPTIONS[key][1] if value is None else value


def _settings(options: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    """The options of one reward as its keyword arguments (``cosine_max_len`` -> ``max_len``)."""
    return {key[len(prefix) :]: _option(options, key) for key in REWARD_OPTIONS if key.startswith(prefix)}


def validate_reward_options(names: list[str], options: dict[str, Any] | None = None) -> None:
    """Check reward names and options before a run starts; ``ValueError`` says how to fix it.

    ``names``: the chosen rewards (keys of :data:`REWARD_FUNCTIONS`, each once, at least one).
    ``options``: keys of :data:`REWARD_OPTIONS`; a missing key or ``None`` means the default.
    """
    if isinstance(names, str) or not names:
        raise ValueError(
            f"choose at least one reward function, as a list of names from: {', '.join(REWARD_FUNCTIONS)}"
        )
    unknown = [name for name in names if name not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(
            f"unknown reward function(s) {', '.join(map(repr, unknown))}; available: {', '.join(REWARD_FUNCTIONS)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"reward function(s) {', '.join(repeated)} chosen more than once; list each reward once")
    options = options or {}
    unknown_options = [key for key in options if key not in REWARD_OPTIONS]
    if unknown_options:
        raise ValueError(
            f"unknown reward option(s) {', '.join(map(repr, unknown_options))}; known options: "
            f"{', '.join(REWARD_OPTIONS)}"
        )
    normalize_language(_option(options, "language"))
    check_cosine_options(**_settings(options, "cosine_"))
    check_repetition_options(**_settings(options, "repetition_"))
    check_summary_options(**_settings(options, "summary_"))


def build_reward_functions(names: list[str], options: dict[str, Any] | None = None) -> list[Callable[..., Any]]:
    """The reward functions to hand TRL, in order, with ``options`` applied (validated first).

    Each keeps its registry name as ``__name__`` (TRL logs by it) and pickles. A dataset's own
    ``language`` column, when TRL passes one, wins over the ``language`` option row by row.
    """
    validate_reward_options(names, options)
    functions: list[Callable[..., Any]] = []
    for name in names:
        if name == "cosine_length":
            function: Callable[..., Any] = make_cosine_length(**_settings(options, "cosine_"))
        elif name == "repetition":
            function = make_repetition_penalty(**_settings(options, "repetition_"))
        elif name == "language_consistency":
            function = functools.partial(
                language_consistency, language=normalize_language(_option(options, "language"))
            )
            function.__name__ = name  # type: ignore[attr-defined]
        elif name == "readable_summary":
            function = functools.partial(
                readable_summary,
                language=normalize_language(_option(options, "language")),
                **_settings(options, "summary_"),
            )
            function.__name__ = name  # type: ignore[attr-defined]
        else:
            function = REWARD_FUNCTIONS[name]
        functions.append(function)
    return functions


__all__ = [
    "COSINE_MAX_LEN",
    "REWARD_FUNCTIONS",
    "REWARD_MODEL_NAMES",
    "REWARD_OPTIONS",
    "accuracy",
    "answers_match",
    "build_reward_functions",
    "is_correct",
    "validate_reward_options",
    "completion_text",
    "cosine_length",
    "describe_reward",
    "extract_answer",
    "format",
    "language_consistency",
    "length",
    "make_cosine_length",
    "make_repetition_penalty",
    "readable_summary",
    "repetition",
    "split_think_answer",
    "tag_count",
]

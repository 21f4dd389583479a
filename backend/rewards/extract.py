"""Pull the parts of a completion apart: its text, its chain of thought, its final answer.

These helpers are shared by the rewards, the rejection-sampling filter, evaluation (pass@1,
cons@k majority vote) and the group inspector in the UI, so that every place agrees on what
"the answer" of a completion is.

The R1 format is ``<think>...</think><answer>...</answer>``. Real models also end with a
``\\boxed{...}`` (the MATH / DeepSeek convention), so the answer falls back to the last box.
"""

from __future__ import annotations

from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
FORMAT_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

_BOXED = "\\boxed{"


def completion_text(completion: Any) -> str:
    """Return the generated text of one completion, whatever shape TRL hands over.

    TRL passes a plain string for standard datasets and a list of messages
    ``[{"role": "assistant", "content": ...}]`` for conversational ones. We take the last
    assistant message (the last message if none is marked assistant). Content given as a list
    of parts (``[{"type": "text", "text": ...}]``) is joined. Anything else (``None``, numbers,
    broken dicts) yields ``""`` so that a reward scores it as an empty completion instead of
    crashing the training step.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        if not messages:
            return ""
        assistant = [m for m in messages if m.get("role") == "assistant"]
        return _content_text((assistant or messages)[-1].get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal-style parts
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``; ``None`` if there is no closed pair.

    Takes the last ``<answer>`` that has a ``</answer>`` after it, up to that first ``</answer>``:
    nested tags (``<answer><answer>5</answer></answer>``) give the innermost content ``5``, and
    a trailing unclosed ``<answer>`` (a cut-off rewrite) leaves the earlier closed one in force.
    """
    start = text.rfind(ANSWER_OPEN)
    while start >= 0:
        close = text.find(ANSWER_CLOSE, start)
        if close >= 0:
            return text[start + len(ANSWER_OPEN) : close]
        start = text.rfind(ANSWER_OPEN, 0, start)
    return None


def _boxed_content(text: str, start: int) -> str | None:
    """Content of the ``\\boxed{`` at ``start`` with balanced braces, or ``None`` if unclosed.

    Escaped braces ``\\{`` and ``\\}`` (LaTeX set notation) are literal and not counted.
    """
    i = start + len(_BOXED)
    depth = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, e.g. \{ or \}
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + len(_BOXED) : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance (``\\boxed{\\frac{1}{2}}`` ->
    ``\\frac{1}{2}``). An unclosed last box (truncated generation) falls back to an earlier one."""
    pos = text.rfind(_BOXED)
    while pos >= 0:
        content = _boxed_content(text, pos)
        if content is not None:
            return content
        pos = text.rfind(_BOXED, 0, pos)
    return None


def _unbox(answer: str) -> str:
    """``\\boxed{5}`` -> ``5`` when the whole answer is one box; otherwise unchanged."""
    if answer.startswith(_BOXED) and answer.endswith("}"):
        content = _boxed_content(answer, 0)
        if content is not None and len(content) + len(_BOXED) + 1 == len(answer):
            return content.strip()
    return answer


def extract_answer(text: Any) -> str | None:
    """The final answer of a completion, stripped, or ``None`` when it gives none.

    Order: the content of the LAST ``<answer>...</answer>`` (the R1 format; later answers are
    the model's corrections), else the content of the last balanced ``\\boxed{...}``. An answer
    tag whose whole content is a box (``<answer>\\boxed{5}</answer>``) gives the box content. An
    empty answer tag counts as no answer. Accepts a string or a TRL conversational completion.
    """
    text = completion_text(text)
    tagged = _last_answer_tag(text)
    if tagged is not None and tagged.strip():
        return _unbox(tagged.strip())
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    return None


def split_think_answer(text: Any) -> tuple[str | None, str | None]:
    """Split a completion into ``(think, answer)``, each stripped, ``None`` where absent.

    think: between the first ``<think>`` and the ``</think>`` after it. If ``</think>`` appears
    with no ``<think>`` before it, everything before it is the thought (DeepSeek/Qwen chat
    templates put ``<think>`` in the prompt, so the completion starts inside it). An unclosed
    ``<think>`` (cut off by the length limit) gives everything after it, up to any ``<answer>``.

    answer: the content of the last ``<answer>...</answer>``; without answer tags, the text after
    ``</think>`` (the plain R1 chat format ``<think>...</think> final answer``); else ``None``.
    The answer here is the raw tag content (a box is not unwrapped); use :func:`extract_answer`
    for the value to grade.
    """
    text = completion_text(text)
    think: str | None = None
    after_think: str | None = None
    close = text.find(THINK_CLOSE)
    if close >= 0:
        start = text.rfind(THINK_OPEN, 0, close)
        think = text[start + len(THINK_OPEN) : close] if start >= 0 else text[:close]
        after_think = text[close + len(THINK_CLOSE) :]
    elif THINK_OPEN in text:
        think = text[text.find(THINK_OPEN) + len(THINK_OPEN) :].split(ANSWER_OPEN)[0]
    if think is not None:
        think = think.strip()

    answer = _last_answer_tag(text)
    if answer is None and after_think is not None and after_think.strip():
        answer = after_think
    if answer is not None:
        answer = answer.strip()
    return think, answer

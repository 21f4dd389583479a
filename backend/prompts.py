"""How a problem becomes the prompt a model sees, the same way in training and in evaluation.

Three formats, chosen per stage by ``prompt_template`` (``auto`` picks one from the tokenizer):
- ``plain`` with the bare problem: the tiny character model, which cannot read English;
- ``plain`` with the DeepSeek-R1-Zero template (the paper's Table 1) for a base model without a
  chat template;
- ``chat``: a model folder that carries a chat template gets TRL's conversational format, one
  user turn holding the R1 instruction and the problem; generation renders it with the
  tokenizer's own template and ``add_generation_prompt``.

The chosen format travels with the model a stage produces (``ModelArtifact.prompt_format``), so
the evaluate stage prompts a model exactly as it was trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

# The prompt template of DeepSeek-R1-Zero (the seed article / the paper's Table 1).
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)
# The same instruction as one user turn, for models with a chat template.
R1_CHAT_INSTRUCTION = (
    "{prompt}\n\nThink about the reasoning process first, then give the answer. Enclose the "
    "reasoning in <think> </think> and the final answer in <answer> </answer> tags, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
BARE = "{prompt}"
TEMPLATE_CHOICES = ("auto", "chat", "plain", "bare")

Prompt = Union[str, list[dict[str, str]]]


@dataclass(frozen=True)
class PromptFormat:
    style: str = "plain"  # plain | chat
    template: str = BARE  # contains {prompt}

    def for_trainer(self, problem: str) -> Prompt:
        """What goes into a TRL dataset's ``prompt`` column."""
        text = self.template.format(prompt=problem)
        return [{"role": "user", "content": text}] if self.style == "chat" else text

    def render(self, problem: str, tokenizer: Any) -> str:
        """The exact text generation starts from (chat: through the tokenizer's template)."""
        prompt = self.for_trainer(problem)
        if self.style == "chat":
            return tokenizer.apply_chat_template(prompt, tokenize=False,
                                                 add_generation_prompt=True)
        return prompt

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PromptFormat":
        return cls(**values) if values else cls()


def check_template(choice: str) -> None:
    """Config-time check of a ``prompt_template`` setting (ValueError says how to fix it)."""
    if choice not in TEMPLATE_CHOICES and "{prompt}" not in choice:
        raise ValueError(f"prompt_template must be one of {', '.join(TEMPLATE_CHOICES)} or a "
                         f"template containing {{prompt}}; got {choice!r}")


def resolve_format(choice: str, tokenizer: Any) -> PromptFormat:
    """Turn a ``prompt_template`` setting into a format for this tokenizer."""
    check_template(choice)
    if choice == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_template=chat, but the model's tokenizer has no chat "
                             "template; use plain (the R1-Zero template) or auto")
        return PromptFormat("chat", R1_CHAT_INSTRUCTION)
    if choice == "plain":
        return PromptFormat("plain", R1_ZERO_TEMPLATE)
    if choice == "bare":
        return PromptFormat("plain", BARE)
    if choice != "auto":
        return PromptFormat("plain", choice)
    # A chat template first: a model that carries one was tuned on it, whatever it can spell.
    if getattr(tokenizer, "chat_template", None):
        return PromptFormat("chat", R1_CHAT_INSTRUCTION)
    # A tokenizer that cannot spell "User" is the tiny character model: the bare problem.
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in tokenizer(
            "User", add_special_tokens=False)["input_ids"]:
        return PromptFormat("plain", BARE)
    return PromptFormat("plain", R1_ZERO_TEMPLATE)


# ----------------------------------------------------------------------------- few-shot
# The R1 paper (section 5) finds that few-shot prompting *hurts* R1 and recommends zero-shot;
# the evaluate stage scores both templates side by side so this can be checked on any model.
# A few-shot prompt shows N worked examples, each rendered exactly like the real question
# (the same template, so the model sees the format it was trained on repeated), followed by
# its worked completion in the R1 format.

def template_label(shots: int) -> str:
    """How results name a template: ``0-shot``, ``4-shot``."""
    return f"{shots}-shot"


def worked_completion(problem: Any) -> str:
    """The completion a few-shot example shows for ``problem`` (a ``Problem``), in the R1
    format: ``<think>reasoning</think><answer>answer</answer>``.

    The reasoning is the task's own worked solution: the column sums of the addition task
    (what its pre-training corpus and cold-start data write), or a dataset's solution text
    (GSM8K: the explanation before ``####``, calculator annotations ``<<48/2=24>>`` dropped).
    A problem without either shows only the answer tag: no reasoning is made up."""
    import re

    from backend.rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

    meta = getattr(problem, "meta", None) or {}
    reasoning = None
    a, b = meta.get("a"), meta.get("b")
    if isinstance(a, int) and isinstance(b, int) and problem.prompt == f"{a}+{b}=":
        from backend.tasks.addition import worked_solution
        reasoning = worked_solution(a, b)
    elif isinstance(meta.get("solution"), str) and meta["solution"].strip():
        text = meta["solution"].split("####")[0]
        reasoning = re.sub(r"<<[^<>]*>>", "", text).strip() or None
    answer = f"{ANSWER_OPEN}{problem.answer}{ANSWER_CLOSE}"
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{answer}" if reasoning else answer


def _spells(tokenizer: Any, text: str) -> bool:
    """Whether the tokenizer writes ``text`` without unknown tokens (the tiny character
    tokenizer has no space and no newline)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk is None or unk not in tokenizer(text, add_special_tokens=False)["input_ids"]


def render_few_shot(fmt: PromptFormat, problem: str, tokenizer: Any,
                    examples: Sequence[tuple[str, str]] = ()) -> str:
    """The exact text generation starts from, with ``examples`` ((problem, worked completion)
    pairs) shown first; no examples gives :meth:`PromptFormat.render` unchanged.

    chat: the examples are earlier turns (user question, assistant answer), the way few-shot
    prompts are given to chat models. plain: each example is its prompt followed by its
    completion, separated by a blank line (or, for a tokenizer that cannot spell a newline,
    the end-of-sequence token: where the tiny model saw one text end and the next begin)."""
    if not examples:
        return fmt.render(problem, tokenizer)
    if fmt.style == "chat":
        messages: list[dict[str, str]] = []
        for question, completion in examples:
            messages += [{"role": "user", "content": fmt.template.format(prompt=question)},
                         {"role": "assistant", "content": completion}]
        messages.append({"role": "user", "content": fmt.template.format(prompt=problem)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    separator = "\n\n" if _spells(tokenizer, "\n") else (tokenizer.eos_token or "")
    # "User: ... Assistant:" is followed by a space before the answer; the bare problem
    # ("12+34=") runs straight into it.
    joiner = " " if fmt.template != BARE and _spells(tokenizer, " ") else ""
    shown = "".join(fmt.template.format(prompt=q) + joiner + c + separator for q, c in examples)
    return shown + fmt.render(problem, tokenizer)

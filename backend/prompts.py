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
from typing import Any, Union

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

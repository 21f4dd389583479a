"""Reward models next to the rule rewards: R1's "RL for all scenarios" (helpfulness, harmlessness).

A reward model is a sequence-classification model with one output (``num_labels=1``), trained
by the ``reward_model`` stage with TRL's ``RewardTrainer`` on preference pairs. GRPO does not
call it through a wrapper of ours: the loaded model and its tokenizer go to TRL's
``GRPOTrainer`` as a reward function (``reward_funcs`` may hold models, with
``reward_processing_classes`` beside them), so TRL scores every completion with it, weighs it,
logs ``rewards/<name>/mean`` and hands its value per rollout to our recorder exactly like a rule
reward's. TRL names a model reward after its config's ``_name_or_path``; :func:`load_reward_model`
sets that to the aspect (``helpfulness``), which is the name the group inspector, the weights
and ``rewards/helpfulness/mean`` use.

TRL scores a reward model on ``prompt + completion`` tokenized without special tokens (no end
of sequence: completions are decoded without it). :func:`score` does exactly that, and the
``reward_model`` stage trains on pairs tokenized the same way, so the score head is trained at
the very position GRPO reads it from.

Mixing prompt kinds: general prompts have no reference answer. Rule rewards are about
verifiable answers and the R1 format, so on a mixed dataset (``GRPOStageConfig.general_prompts``)
:func:`for_reasoning_rows` makes each rule reward return ``None`` on rows without a reference
(TRL skips ``None``); reward models score every row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from backend.rewards import REWARD_FUNCTIONS, REWARD_MODEL_NAMES, build_reward_functions, validate_reward_options
from backend.rewards.accuracy import is_missing_reference

def validate_reward_names(names: list[str], options: dict[str, Any] | None = None) -> None:
    """Check a list mixing rule rewards and reward-model names, and the rule rewards' options
    (checked even when no rule reward is chosen); ``ValueError`` says how to fix it."""
    if isinstance(names, str) or not names:
        raise ValueError(
            f"choose at least one reward, as a list of names from: {', '.join(REWARD_FUNCTIONS)}, "
            f"{', '.join(REWARD_MODEL_NAMES)}"
        )
    unknown = [n for n in names if n not in REWARD_FUNCTIONS and n not in REWARD_MODEL_NAMES]
    if unknown:
        raise ValueError(
            f"unknown reward function(s) {', '.join(map(repr, unknown))}; available: "
            f"{', '.join(REWARD_FUNCTIONS)}; reward models: {', '.join(REWARD_MODEL_NAMES)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"reward(s) {', '.join(repeated)} chosen more than once; list each reward once")
    rule = [n for n in names if n in REWARD_FUNCTIONS]
    # validate_reward_options also checks names; with only reward models chosen, give it one
    # rule name so that the options are still checked (a bad option is refused while unused).
    validate_reward_options(rule or ["format"], options)


class ReasoningRowsOnly:
    """A rule reward that returns ``None`` on rows without a reference answer (general
    prompts). A class, not a ``functools.partial``: TRL names a partial after the function it
    wraps, and this one must keep the reward's own name (TRL logs by it); it pickles."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.__name__ = function.__name__

    def __call__(self, prompts: list, completions: list, answer: list | None = None,
                 **kwargs: Any) -> list[float | None]:
        rewards = self.function(prompts=prompts, completions=completions, answer=answer, **kwargs)
        if answer is None:
            return [None] * len(completions)
        return [None if is_missing_reference(ref) else value
                for value, ref in zip(rewards, answer, strict=True)]


def for_reasoning_rows(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` returning ``None`` on rows without a reference answer, same name."""
    return ReasoningRowsOnly(function)


def build_rewards(names: list[str], options: dict[str, Any] | None,
                  reward_models: dict[str, tuple[Any, Any]],
                  reasoning_rows_only: bool = False) -> tuple[list[Any], list[Any]]:
    """What to hand TRL's ``GRPOTrainer``, in the order of ``names``: ``reward_funcs`` (rule
    reward functions, and for each reward-model name its loaded model) and
    ``reward_processing_classes`` (the reward model's tokenizer; ``None`` for a function).

    ``reward_models``: name -> (model, tokenizer) from :func:`load_reward_model`.
    ``reasoning_rows_only``: rule rewards give ``None`` on rows without a reference.
    """
    validate_reward_names(names, options)
    missing = [n for n in names if n in REWARD_MODEL_NAMES and n not in reward_models]
    if missing:
        raise ValueError(f"reward(s) {', '.join(missing)} need a reward model; none was given")
    rule_names = [n for n in names if n in REWARD_FUNCTIONS]
    rule = iter(build_reward_functions(rule_names, options) if rule_names else [])
    funcs, classes = [], []
    for name in names:
        if name in REWARD_MODEL_NAMES:
            model, tokenizer = reward_models[name]
            funcs.append(model)
            classes.append(tokenizer)
        else:
            function = next(rule)
            funcs.append(for_reasoning_rows(function) if reasoning_rows_only else function)
            classes.append(None)
    return funcs, classes


class RewardModelError(ValueError):
    """A reward model that cannot be loaded or is not a reward model; the message says why."""


def load_reward_model(path: str, name: Optional[str] = None, require_head: bool = True):
    """A one-output sequence-classification model and its tokenizer from an HF folder.

    ``name``: what TRL calls this reward (set as the config's ``_name_or_path``).
    ``require_head``: refuse a folder without a trained score head (a causal LM would get a
    random one). The ``reward_model`` stage loads its base model with ``require_head=False``
    (the head is what it trains).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from backend.models import _load_tokenizer, count_parameters

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise RewardModelError(f"{path} is not a model folder (no config.json); give the folder a "
                               f"reward_model stage wrote, or an HF sequence-classification model")
    config = AutoConfig.from_pretrained(str(folder))
    architectures = list(getattr(config, "architectures", None) or [])
    if require_head and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RewardModelError(
            f"{path} is not a reward model: its architecture is {', '.join(architectures) or 'unknown'}, "
            f"not a sequence classifier with a trained score head; train one with a reward_model stage")
    if require_head and getattr(config, "num_labels", 1) != 1:
        raise RewardModelError(f"{path} has {config.num_labels} outputs; a reward model has one (num_labels=1)")
    tokenizer = _load_tokenizer(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with suppress_seqcls_warning():  # no "newly initialised score head" warning for a base model
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1,
                                                                   dtype=torch.float32)
    if count_parameters(model) < 50_000_000:
        model.set_attn_implementation("eager")  # faster for small models (backend/models.py)
    # The score is read at the last token that is not padding: the model must know the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    if name:
        model.config._name_or_path = name
    return model, tokenizer


def scoring_text(prompt: Any, completion: Any, tokenizer: Any) -> str:
    """The text a reward model reads for one completion, as TRL's ``GRPOTrainer`` builds it:
    ``prompt + completion`` for text; the chat template over the whole conversation when either
    is a list of messages (an empty prompt: the completion holds the whole text or dialogue)."""
    from trl.data_utils import apply_chat_template

    if isinstance(prompt, list) or isinstance(completion, list):
        if not isinstance(completion, list):
            completion = [{"role": "assistant", "content": completion}]
        messages = list(prompt or []) + list(completion)
        return apply_chat_template({"messages": messages}, tokenizer)["text"]
    return (prompt or "") + completion


def scoring_ids(prompt: Any, completion: Any, tokenizer: Any) -> list[int]:
    """Token ids of :func:`scoring_text`, tokenized as TRL tokenizes reward inputs (no special
    tokens added, so no end-of-sequence token: GRPO's completions are decoded without one)."""
    return tokenizer(scoring_text(prompt, completion, tokenizer), add_special_tokens=False)["input_ids"]


def score(model, tokenizer, prompts: list, completions: list, batch_size: int = 64) -> list[float]:
    """Reward-model scores of each (prompt, completion), computed as TRL's ``GRPOTrainer``
    computes a model reward: :func:`scoring_text`, padded on the right, the score head's output
    at the last token that is not padding."""
    import torch

    texts = [scoring_text(p, c, tokenizer) for p, c in zip(prompts, completions, strict=True)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              padding_side="right", add_special_tokens=False).to(device)
            scores.extend(model(**batch).logits[:, 0].float().tolist())  # (B,)
    model.train(was_training)
    return scores

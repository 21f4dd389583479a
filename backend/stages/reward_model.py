"""Stage ``reward_model``: train a helpfulness or harmlessness reward model with TRL's
``RewardTrainer`` on preference pairs.

R1's last RL stage ("RL for all scenarios") scores general prompts with reward models for
helpfulness and harmlessness. This stage makes one: the base model with a one-output score head
(``AutoModelForSequenceClassification``, ``num_labels=1``), trained so that the chosen completion
of each pair scores above the rejected one (TRL's Bradley-Terry loss,
``-log sigmoid(r_chosen - r_rejected)``).

Pairs: a file (jsonl / json / parquet / csv / HF dataset folder) with ``prompt``, ``chosen`` and
``rejected`` columns (explicit prompt), or only ``chosen`` and ``rejected`` (implicit prompt:
each holds the whole text); text or lists of chat messages. A ``test`` split is held out, else
the file's first ``eval_pairs`` rows. Without a file, the tiny preset's pairs come from the
addition task's rules (``backend.tasks.addition.preference_pairs``: a complete answer with a
readable summary beats a bare, wrong or refused one; a refusal beats complying with the
forbidden request class ``a*b=``), with held-out pairs on operands it never trains on.

Pairs are tokenized exactly as GRPO later scores completions (``backend.rewards.reward_model``),
so the head learns at the position it is read from. The summary reports held-out pair accuracy
(share of pairs whose chosen completion scores above the rejected one) before and after
training, overall and per kind of pair, with example scores; the output ``reward_model`` is the
trained folder, which GRPO takes as its ``helpfulness_rm`` / ``harmlessness_rm`` input.

Run (wired by a recipe): ``reward_model`` takes ``model`` (the base) and produces
``reward_model``; alone: ``--set reward_model.model_path=... --set reward_model.dataset=...``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from backend.contract import ProblemSource, RewardModelArtifact
from backend.stages.common import (ConfigError, LaunchConfig, check_data_path, check_model_path,
                                   seed_everything, trainer_args)
from backend.stages.context import StageContext, attach_trainer, train_and_save

ASPECTS = ("helpfulness", "harmlessness")
EXAMPLES_SHOWN = 8


@dataclass
class RewardModelConfig(LaunchConfig):
    aspect: str = field(default="helpfulness", metadata={
        "help": "helpfulness | harmlessness: what the model scores (the tiny preset's pairs "
                "follow this aspect's rules; GRPO names the reward after it).",
        "choices": list(ASPECTS)})
    model_path: str = field(default="", metadata={
        "help": "HF model folder the reward model starts from (a score head is added); empty = "
                "the wired model (the base)."})
    dataset: str = field(default="", metadata={
        "help": "Preference pairs: jsonl / json / parquet / csv / HF dataset folder with "
                "prompt, chosen, rejected (or only chosen and rejected); empty = the addition "
                "task's pairs for this aspect."})
    prompt_column: str = field(default="prompt", metadata={
        "help": "Prompt column of the file (absent from the file = implicit prompt)."})
    chosen_column: str = field(default="chosen", metadata={"help": "Preferred completion column."})
    rejected_column: str = field(default="rejected", metadata={"help": "Worse completion column."})
    prompt_template: str = field(default="auto", metadata={
        "help": "auto | chat | plain | bare | a template with {prompt}: how prompts are shown, "
                "as the policy is prompted in GRPO. auto: the wired model's own format."})
    # Defaults measured on the tiny base (pretrain-base, tiny preset), 200 held-out pairs:
    # 40 steps of 16 at 5e-4 reach 93.0% (helpfulness, from 34.5% untrained) and 93.0%
    # (harmlessness, from 62.0%) held-out pair accuracy in 4-6 minutes on a busy 2-core CPU;
    # 100 steps at 1e-4 reached only 87.0% and 89.5% in twice the time.
    pairs: int = field(default=320, metadata={"help": "Generated training pairs (no file)."})
    eval_pairs: int = field(default=100, metadata={
        "help": "Held-out pairs the accuracy is measured on (a file: its test split, else its "
                "first rows)."})
    min_digits: int = field(default=1, metadata={
        "help": "Generated pairs: fewest digits (a wired synthetic problem source wins)."})
    max_digits: int = field(default=3, metadata={"help": "Generated pairs: most digits."})
    steps: int = field(default=40, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=16, metadata={
        "help": "Pairs per step (the total over all processes)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate (live)."})
    max_length: int = field(default=256, metadata={
        "help": "Tokens of prompt + completion; longer pairs are left out (TRL's filter)."})
    center_rewards_coefficient: float = field(default=0.0, metadata={
        "help": "Pulls scores towards mean zero (TRL; 0.01 recommended, 0 = off), so weights "
                "mix reward models with rule rewards on a known scale."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})

    def validate(self) -> None:
        from backend.prompts import check_template
        from backend.steering import LEARNING_RATE, SteeringError

        if self.aspect not in ASPECTS:
            raise ConfigError(f"aspect must be {' or '.join(ASPECTS)}, got {self.aspect!r}")
        check_model_path("model_path", self.model_path)
        check_data_path("dataset", self.dataset)
        for name in ("pairs", "eval_pairs", "steps", "batch_size", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ConfigError("max_length must be at least 8 tokens")
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise ConfigError("digits must satisfy 1 <= min_digits <= max_digits <= 12")
        if self.center_rewards_coefficient < 0:
            raise ConfigError("center_rewards_coefficient must be >= 0 (0 = off)")
        if len({self.prompt_column, self.chosen_column, self.rejected_column}) < 3:
            raise ConfigError("prompt_column, chosen_column and rejected_column must differ")
        check_template(self.prompt_template)
        self.validate_launch()  # batch_size, the step's total, divides by num_processes
        try:
            LEARNING_RATE.parse(self.learning_rate)
        except SteeringError as exc:
            raise ConfigError(str(exc)) from None


# ------------------------------------------------------------------------------- the pairs
@dataclass
class Pair:
    """One preference pair as the stage trains on it (text, or chat messages)."""

    prompt: Any  # str | list of messages | None (implicit prompt)
    chosen: Any
    rejected: Any
    kind: str  # the rule that made it, or "file"


def _message_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))


def load_preference_pairs(cfg: RewardModelConfig, split: str = "train",
                          limit: Optional[int] = None) -> list[Pair]:
    """Pairs of a file; a missing or empty field is a ``DatasetError`` naming the row (and the
    file line for JSON lines) and the field."""
    from backend.tasks.loaders import DatasetError, _open

    dataset, locators, shown = _open(cfg.dataset, split)
    columns = list(dataset.column_names)
    missing = [c for c, setting in ((cfg.chosen_column, "chosen_column"),
                                    (cfg.rejected_column, "rejected_column")) if c not in columns]
    if missing:
        raise DatasetError(f"{shown} has no column(s) {', '.join(map(repr, missing))} (columns: "
                           f"{', '.join(columns) or 'none'}); preference pairs need chosen and "
                           f"rejected (and optionally prompt): set reward_model.chosen_column= / "
                           f"rejected_column=")
    explicit = cfg.prompt_column in columns
    fields = ([cfg.prompt_column] if explicit else []) + [cfg.chosen_column, cfg.rejected_column]
    rows = dataset.to_dict()
    pairs: list[Pair] = []
    for i in range(len(dataset)):
        if limit is not None and len(pairs) >= limit:
            break
        where = f"{locators[i]} (row {i})" if locators and i < len(locators) else f"{shown} row {i}"
        values = []
        for name in fields:
            value = rows[name][i]
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DatasetError(f"{where}: field {name!r} is missing or empty; every pair "
                                   f"needs {', '.join(map(repr, fields))}")
            if not isinstance(value, str) and not _message_list(value):
                raise DatasetError(f"{where}: field {name!r} is a {type(value).__name__}; give "
                                   f"text or a list of chat messages (role, content)")
            values.append(value)
        prompt, chosen, rejected = (values if explicit else [None] + values)
        if isinstance(chosen, str) != isinstance(rejected, str) or (
                isinstance(prompt, str) and not isinstance(chosen, str)):
            raise DatasetError(f"{where}: mixes text and chat messages; give every field as "
                               f"text, or every field as messages (a chat prompt may have text "
                               f"completions)")
        pairs.append(Pair(prompt, chosen, rejected, "file"))
    if not pairs:
        raise DatasetError(f"{shown} has no preference pairs")
    return pairs


def _digits(cfg: RewardModelConfig, problems: Optional[ProblemSource]) -> tuple[int, int]:
    if problems is not None and problems.kind == "synthetic":
        return problems.min_digits, problems.max_digits
    return cfg.min_digits, cfg.max_digits


def training_pairs(cfg: RewardModelConfig,
                   problems: Optional[ProblemSource]) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-out pairs), never sharing a prompt."""
    if cfg.dataset:
        from backend.tasks.loaders import available_splits
        from backend.tasks.problem import prompt_key

        if "test" in available_splits(cfg.dataset):
            train = load_preference_pairs(cfg, "train")
            held = load_preference_pairs(cfg, "test", limit=cfg.eval_pairs)
        else:
            rows = load_preference_pairs(cfg, "train")
            n_held = min(cfg.eval_pairs, max(1, len(rows) // 5))
            held, train = rows[:n_held], rows[n_held:]
        seen = {prompt_key(p.prompt) for p in held if isinstance(p.prompt, str)}
        train = [p for p in train if not (isinstance(p.prompt, str) and prompt_key(p.prompt) in seen)]
        if not train:
            raise ConfigError(f"{cfg.dataset}: no training pairs are left after holding out "
                              f"{len(held)}; give more pairs or lower eval_pairs")
        return train, held
    from backend.tasks.addition import preference_pairs

    low, high = _digits(cfg, problems)

    def make(n: int, heldout: bool) -> list[Pair]:
        return [Pair(p.prompt, p.chosen, p.rejected, p.kind)
                for p in preference_pairs(cfg.aspect, n, cfg.seed, low, high, heldout=heldout)]

    return make(cfg.pairs, False), make(cfg.eval_pairs, True)


def _shown(pair: Pair, fmt) -> tuple[Any, Any, Any]:
    """The pair with its prompt shown as the policy sees it in GRPO (chat: one user turn, and
    the completions as the assistant's turn)."""
    if pair.prompt is None:
        return None, pair.chosen, pair.rejected
    prompt = pair.prompt if isinstance(pair.prompt, list) else fmt.for_trainer(pair.prompt)
    return prompt, pair.chosen, pair.rejected


def tokenized_dataset(pairs: list[Pair], fmt, tokenizer):
    """TRL's processed preference format (``chosen_ids``, ``rejected_ids``), tokenized as GRPO
    scores (``backend.rewards.reward_model.scoring_ids``)."""
    from datasets import Dataset

    from backend.rewards.reward_model import scoring_ids

    rows = []
    for pair in pairs:
        prompt, chosen, rejected = _shown(pair, fmt)
        rows.append({"chosen_ids": scoring_ids(prompt, chosen, tokenizer),
                     "rejected_ids": scoring_ids(prompt, rejected, tokenizer)})
    return Dataset.from_list(rows)


def pair_accuracy(model, tokenizer, pairs: list[Pair], fmt) -> dict[str, Any]:
    """Held-out pair accuracy (chosen scored strictly above rejected, as TRL's ``accuracy``
    metric counts), per kind, the mean scores and a few examples."""
    from backend.rewards.reward_model import score

    shown = [_shown(p, fmt) for p in pairs]
    prompts = [s[0] for s in shown]
    chosen = score(model, tokenizer, prompts, [s[1] for s in shown])
    rejected = score(model, tokenizer, prompts, [s[2] for s in shown])
    right = [c > r for c, r in zip(chosen, rejected)]
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for pair, ok in zip(pairs, right):
        by_kind[pair.kind].append(ok)
    n = len(pairs)
    return {
        "accuracy": sum(right) / n,
        "accuracy_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "pairs_by_kind": {k: len(v) for k, v in sorted(by_kind.items())},
        "chosen_mean": sum(chosen) / n,
        "rejected_mean": sum(rejected) / n,
        "margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "examples": [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                      "kind": p.kind, "chosen_score": c, "rejected_score": r}
                     for p, c, r in list(zip(pairs, chosen, rejected))[:EXAMPLES_SHOWN]],
    }


def reward_args(cfg: RewardModelConfig, output_dir):
    """The one mapping from this stage's config to TRL's ``RewardConfig``."""
    from trl import RewardConfig

    return RewardConfig(
        **trainer_args(output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        per_device_train_batch_size=cfg.per_process(cfg.batch_size),
        learning_rate=cfg.learning_rate,
        logging_steps=1,  # loss, accuracy and margin live, every step
        max_length=cfg.max_length,
        center_rewards_coefficient=cfg.center_rewards_coefficient or None,
    )


# ------------------------------------------------------------------------------- the stage
def run(ctx: StageContext) -> dict:
    from trl import RewardTrainer

    from backend.prompts import resolve_format
    from backend.rewards.reward_model import load_reward_model

    cfg = RewardModelConfig.from_dict(ctx.config)
    wired = None if cfg.model_path else ctx.input("model")
    base_path = cfg.model_path or wired.path
    train, held = training_pairs(cfg, ctx.input("problems"))

    seed_everything(cfg.seed)
    model, tokenizer = load_reward_model(base_path, require_head=False)
    # Prompts as the policy sees them in GRPO: the wired model's own format.
    fmt = (wired.format if wired is not None and cfg.prompt_template == "auto"
           else resolve_format(cfg.prompt_template, tokenizer))
    before = pair_accuracy(model, tokenizer, held, fmt)
    trainer = RewardTrainer(model=model, args=reward_args(cfg, ctx.output_dir),
                            train_dataset=tokenized_dataset(train, fmt, tokenizer),
                            processing_class=tokenizer)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ConfigError(f"every training pair is longer than max_length={cfg.max_length} "
                          f"tokens; raise max_length")
    ctx.event(f"{cfg.aspect} reward model from {base_path}: {kept} training pairs"
              + (f" ({len(train) - kept} longer than {cfg.max_length} tokens left out)"
                 if kept < len(train) else "")
              + f", {len(held)} held out (accuracy before training {before['accuracy']:.1%}), "
              f"{cfg.steps} steps of {cfg.batch_size}")
    attach_trainer(ctx, trainer)
    final_dir = train_and_save(ctx, trainer, tokenizer)
    if not ctx.main:  # rank 0 scores and records the final model; the others are done
        return {}
    after = pair_accuracy(trainer.model, tokenizer, held, fmt)
    ctx.log_metrics(cfg.steps, {"heldout/accuracy": after["accuracy"],
                                "heldout/margin": after["margin"]})
    ctx.summary({
        "aspect": cfg.aspect, "source": cfg.dataset or "addition task rules",
        "pairs_trained": kept, "heldout_pairs": len(held),
        "heldout_accuracy": after["accuracy"], "heldout_accuracy_before": before["accuracy"],
        "heldout_accuracy_by_kind": after["accuracy_by_kind"],
        "heldout_pairs_by_kind": after["pairs_by_kind"],
        "heldout_chosen_mean": after["chosen_mean"], "heldout_rejected_mean": after["rejected_mean"],
        "heldout_margin": after["margin"], "heldout_examples": after["examples"],
    })
    ctx.event(f"held-out pair accuracy {after['accuracy']:.1%} (before training "
              f"{before['accuracy']:.1%}); mean score chosen {after['chosen_mean']:+.2f}, "
              f"rejected {after['rejected_mean']:+.2f}")
    return {"reward_model": RewardModelArtifact(path=str(final_dir), prompt_format=fmt.to_dict())}

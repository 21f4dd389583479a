"""Live parameters: declared once per stage kind, validated before they reach a worker.

A :class:`LiveParam` says what a user may change while a stage runs: its type, its bounds, a
help text, and how the worker applies it. ``backend.api`` validates every change against these
declarations (so the CLI's ``set`` verb and the steering form refuse a bad value with a message
and send nothing); the worker applies the parsed value at the next step boundary, stores the
effective value on the stage (``Stage.params``) and re-applies it when the stage resumes.

:func:`risks` names changes that are allowed but likely to hurt (a learning rate 10x higher, a
negative reward weight), so the UI can ask for a confirmation and the CLI for ``--yes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

FLOAT, WEIGHTS = "float", "weights"


class SteeringError(ValueError):
    """A live change that cannot be applied; the message says what would be accepted."""


@dataclass(frozen=True)
class LiveParam:
    name: str
    type: str  # float | weights (one float per reward function)
    help: str
    applies: str  # how the worker applies it, shown in the UI and docs
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    min_exclusive: bool = False
    # The stage must start with a non-zero value for this to change live (beta: a reference
    # model is only loaded when the stage starts with beta > 0).
    zero_stays_zero: bool = False

    def parse(self, value: Any, config: Optional[dict] = None) -> Any:
        """The typed value, or SteeringError. ``config`` (the stage's) sizes weight lists."""
        config = config or {}
        if self.type == WEIGHTS:
            return self._parse_weights(value, config)
        number = self._check(self._float(value, self.name), self.name)
        if self.zero_stays_zero and number != 0 and not config.get(self.name):
            raise SteeringError(f"{self.name} cannot become non-zero: the stage started with "
                                f"{self.name}=0; start it with a small {self.name} to adjust "
                                f"it live")
        return number

    def _float(self, value: Any, what: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise SteeringError(f"{what}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise SteeringError(f"{what} must be a finite number, got {value!r}")
        return number

    def _check(self, number: float, what: str) -> float:
        low_ok = self.minimum is None or (number > self.minimum if self.min_exclusive
                                          else number >= self.minimum)
        high_ok = self.maximum is None or number <= self.maximum
        if not (low_ok and high_ok):
            raise SteeringError(f"{what}={number:g} is out of range: {self.bounds()}")
        return number

    def bounds(self) -> str:
        low = "" if self.minimum is None else (
            f"{'>' if self.min_exclusive else '>='} {self.minimum:g}")
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        return " and ".join(x for x in (low, high) if x) or "any number"

    def _parse_weights(self, value: Any, config: dict) -> list[float]:
        names = list(config.get("reward_funcs") or [])
        if isinstance(value, dict):  # {"format": 0.2}: change some weights, keep the rest
            current = list(config.get("reward_weights") or [1.0] * len(names))
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise SteeringError(f"unknown reward(s) {', '.join(unknown)}; this stage's "
                                    f"rewards: {', '.join(names)}")
            for name, w in value.items():
                current[names.index(name)] = w
            value = current
        items = value.split(",") if isinstance(value, str) else list(value)
        weights = [self._check(self._float(w, f"weight {i + 1}"), f"weight {i + 1}")
                   for i, w in enumerate(x for x in items if str(x).strip())]
        if names and len(weights) != len(names):
            raise SteeringError(f"reward_weights needs {len(names)} values, one per reward "
                                f"({', '.join(names)}); got {len(weights)}")
        return weights


LEARNING_RATE = LiveParam(
    "learning_rate", FLOAT, "Optimizer learning rate from the next step on.",
    applies="set on every optimizer parameter group and on the scheduler's base rates, so a "
            "schedule continues from the new value",
    minimum=0.0, maximum=1.0, min_exclusive=True)
TEMPERATURE = LiveParam(
    "temperature", FLOAT, "Sampling temperature of the next groups.",
    applies="sampling temperature of the next generation batch and the temperature TRL divides "
            "the logits by when it computes log-probabilities (the two stay equal)",
    minimum=0.0, maximum=5.0, min_exclusive=True)
BETA = LiveParam(
    "beta", FLOAT, "KL penalty to the reference model.",
    applies="KL coefficient in the GRPO loss from the next step on; a stage started with "
            "beta = 0 has no reference model, so it can only stay 0",
    minimum=0.0, maximum=10.0, zero_stays_zero=True)
REWARD_WEIGHTS = LiveParam(
    "reward_weights", WEIGHTS, "One weight per reward function (comma-separated).",
    applies="weights of the reward sum of the next groups (advantages use the new total)",
    minimum=-10.0, maximum=10.0)

# Every Trainer-based stage (pretrain, SFT, distillation, GRPO) steers its learning rate;
# pause, stop and checkpoint-now are commands, not parameters, and work for all of them.
TRAINER_PARAMS: tuple[LiveParam, ...] = (LEARNING_RATE,)
GRPO_PARAMS: tuple[LiveParam, ...] = (TEMPERATURE, BETA, REWARD_WEIGHTS, LEARNING_RATE)


def parse_changes(params: tuple[LiveParam, ...], values: dict[str, Any], config: dict,
                  kind: str) -> dict[str, Any]:
    """Validate a whole change; every problem in one message."""
    by_name = {p.name: p for p in params}
    parsed, problems = {}, []
    for name, value in values.items():
        if name not in by_name:
            problems.append(f"{name} is not adjustable live in a {kind} stage (adjustable: "
                            f"{', '.join(by_name) or 'none'})")
            continue
        try:
            parsed[name] = by_name[name].parse(value, config)
        except SteeringError as exc:
            problems.append(str(exc))
    if not values:
        problems.append("no change given; use KEY=VALUE")
    if problems:
        raise SteeringError("; ".join(problems))
    return parsed


def risks(current: dict[str, Any], new: dict[str, Any], config: dict) -> list[str]:
    """Changes that pass the bounds but may wreck training: each a sentence for a confirm."""
    out = []
    lr_old, lr_new = current.get("learning_rate"), new.get("learning_rate")
    # Less a hair: in floating point 3e-4 / 3e-5 is 9.999999999999998, and a user typing
    # exactly 10x the default rate must be asked.
    if lr_old and lr_new and max(lr_new / lr_old, lr_old / lr_new) >= 10 - 1e-9:
        out.append(f"learning rate {lr_old:g} -> {lr_new:g} is a {max(lr_new / lr_old, lr_old / lr_new):.0f}x "
                   f"change: a much higher rate can collapse the policy within a few steps")
    t_old, t_new = current.get("temperature"), new.get("temperature")
    if t_new is not None and t_new > 2 * (t_old or 1.0):
        out.append(f"temperature {t_new:g} samples near-random text: groups get little reward")
    weights = new.get("reward_weights")
    if weights is not None:
        names = list(config.get("reward_funcs") or [])
        for i, w in enumerate(weights):
            if w < 0:
                name = names[i] if i < len(names) else f"#{i + 1}"
                out.append(f"a negative weight on {name} ({w:g}) rewards the model for "
                           f"failing it")
    return out

"""Recipes: ordered stages with their default configs, and presets that resize them.

A recipe names stage kinds in order; a preset overrides config fields per stage kind; ``--set``
overrides on top (``key=value`` for every stage that has the key, ``kind.key=value`` for one
stage kind). Every config is validated by its dataclass before a run is created, so a config
that cannot work is refused with a message instead of failing minutes later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.stages import STAGE_CONFIGS
from backend.stages.common import ConfigError
from storage.records import StageSpec


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    stages: tuple[tuple[str, str], ...]  # (stage kind, stage name)


RECIPES: dict[str, Recipe] = {
    "pretrain-base": Recipe(
        "pretrain-base",
        "Pre-train the embedded tiny base model on synthetic addition and report its held-out "
        "accuracy (the demo's 'DeepSeek-V3-Base').",
        (("pretrain", "pre-train base model"),),
    ),
    "r1-zero": Recipe(
        "r1-zero",
        "DeepSeek-R1-Zero: GRPO straight from the base model with rule rewards (accuracy + "
        "format), then a held-out evaluation of the base and the final model.",
        (("pretrain", "base model (cached)"), ("grpo", "R1-Zero GRPO"),
         ("evaluate", "held-out evaluation")),
    ),
}

# Presets resize a recipe. "tiny" is the embedded default (minutes on a laptop CPU); "smoke"
# is seconds, for tests and for trying the UI.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {},
    "smoke": {
        "pretrain": {"steps": 40, "batch_size": 32, "hidden_size": 32, "num_layers": 1,
                     "num_heads": 1, "num_kv_heads": 1, "intermediate_size": 64,
                     "heldout_size": 100, "eval_problems": 50, "save_steps": 20,
                     "warmup_steps": 5},
        "grpo": {"steps": 6, "batch_size": 16, "num_generations": 4,
                 "max_completion_length": 24, "eval_every": 3, "eval_problems": 20,
                 "save_steps": 3},
        "evaluate": {"eval_problems": 20, "k": 2, "max_new_tokens": 24},
    },
}


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def default_config(recipe: str, preset: str) -> list[StageSpec]:
    return build_stages(recipe, preset, {})


def build_stages(recipe: str, preset: str, sets: dict[str, Any]) -> list[StageSpec]:
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    kinds = [kind for kind, _ in RECIPES[recipe].stages]
    used: set[str] = set()
    specs = []
    for kind, name in RECIPES[recipe].stages:
        cls = STAGE_CONFIGS[kind]
        values = dict(cls().to_dict())
        values.update(PRESETS[preset].get(kind, {}))
        fields = set(values)
        for key, value in sets.items():
            target_kind, _, field_name = key.rpartition(".")
            if target_kind and target_kind != kind:
                continue
            if field_name in fields:
                values[field_name] = value
                used.add(key)
        try:
            config = cls.from_dict(values).to_dict()
        except ConfigError as exc:
            raise ConfigError(f"{kind} stage: {exc}") from exc
        specs.append(StageSpec(kind=kind, name=name, config=config))
    unused = sorted(set(sets) - used)
    if unused:
        known = sorted({f for kind in kinds for f in STAGE_CONFIGS[kind]().to_dict()})
        raise ConfigError(f"setting(s) {', '.join(unused)} match no stage of recipe {recipe!r} "
                          f"(stages: {', '.join(kinds)}); known settings: {', '.join(known)}")
    return specs

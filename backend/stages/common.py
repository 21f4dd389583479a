"""What every stage shares: a config dataclass stored as JSON data on its stage row."""
from __future__ import annotations

import dataclasses
import os
import random
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A stage config that cannot work; the message says which setting to change."""


@dataclass
class StageConfig:
    """Base of every stage config. Subclasses add fields (each with a ``help``) and extend
    ``validate``. Config is data: it is stored as JSON and rebuilt with ``from_dict``."""

    seed: int = field(default=0, metadata={"help": "Random seed (fix it: tiny runs vary a lot)."})

    def validate(self) -> None:
        pass

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StageConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for a {cls.__name__}; "
                              f"known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        cfg = cls(**coerced)
        try:
            cfg.validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


@dataclass
class TimeBudgetConfig(StageConfig):
    """Base of the Trainer stages that can be held to a compute budget (sft, grpo, distill),
    so that students trained different ways can be compared at matched compute. CPU time,
    not wall time: on a shared machine the wall clock measures the neighbours too.
    ``attach_trainer`` enforces it (backend/stages/context.py)."""

    time_budget_s: float = field(default=0.0, metadata={
        "help": "CPU seconds this stage's process may use (all its threads, loading included) "
                "before training stops at the next step boundary and the model is saved as "
                "final; 0 = no budget. Recorded in the summary as cpu_s."})

    def __post_init__(self) -> None:
        if not self.time_budget_s >= 0:
            raise ConfigError(f"time_budget_s must be 0 (off) or a positive number of CPU "
                              f"seconds, got {self.time_budget_s}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Values from ``--set`` or a form arrive as strings; turn them into the field's type."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        return None
    if origin is list:
        # A list setting arrives as a list (stored JSON, the form) or as "1,0.5" (--set).
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"setting {name}={value!r} must be a list (comma-separated)")
        return [_coerce(name, item.strip() if isinstance(item, str) else item, args[0])
                for item in items if not (isinstance(item, str) and not item.strip())]
    base = args[0] if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1 else hint
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}={value!r} is not a valid {getattr(base, '__name__', base)}")
    return value


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True", "YES", "yes")


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(value))


def check_model_path(name: str, value: str) -> None:
    """A model setting must name a model folder that exists (or a hub id, where the hub is
    allowed): checked when the run is created, not minutes later in the worker."""
    if not value:
        return
    path = os.path.expanduser(value)
    if _looks_local(value):
        if not os.path.isdir(path):
            raise ConfigError(f"{name}: {value} does not exist; give an HF model folder (with "
                              f"config.json)")
        if not os.path.exists(os.path.join(path, "config.json")):
            raise ConfigError(f"{name}: {value} is not a model folder (no config.json)")
    elif not _hub_allowed():
        raise ConfigError(f"{name}: {value!r} is neither a local folder nor reachable: the "
                          f"hub is off (offline by default); use a local path, or set "
                          f"R1WB_ALLOW_HUB=1 where there is network")


def check_data_path(name: str, value: str) -> None:
    """A dataset setting must name a file or folder that exists (or a hub dataset id, where
    the hub is allowed)."""
    if not value:
        return
    if _looks_local(value) or "/" not in value.strip("/") or value.count("/") > 1 \
            or value.lower().endswith((".jsonl", ".json", ".parquet", ".csv")):
        if not os.path.exists(os.path.expanduser(value)):
            raise ConfigError(f"{name}: {value} does not exist; give a jsonl / json / parquet "
                              f"/ csv file or a dataset folder")
    elif not _hub_allowed():
        raise ConfigError(f"{name}: {value!r} is not a local file or folder and the hub is "
                          f"off (offline by default); set R1WB_ALLOW_HUB=1 where there is "
                          f"network")


def check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trainer_args(output_dir, steps: int, save_steps: int, seed: int) -> dict[str, Any]:
    """TrainingArguments every Workbench stage shares (TRL configs subclass them): the stage
    owns checkpoints (resume needs them), progress goes to the store not to tqdm/W&B."""
    import torch

    return dict(
        output_dir=str(output_dir), max_steps=steps, save_steps=save_steps,
        save_total_limit=2,  # newest two: resume needs one; the older one covers a torn save
        report_to="none", seed=seed, data_seed=seed,
        use_cpu=not torch.cuda.is_available(), bf16=False,
        # On by default in TRL; off is right for small models (and on CPU).
        gradient_checkpointing=False,
        disable_tqdm=True, dataloader_num_workers=0,
    )

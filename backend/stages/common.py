"""What every stage shares: a config dataclass stored as JSON data on its stage row."""
from __future__ import annotations

import dataclasses
import os
import random
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
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


# The accelerate configs TRL ships, by the name a stage config gives (single machine; the
# number of processes and machines come from the stage config on the command line).
TRL_CONFIGS = {"ddp": "multi_gpu.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml",
               "fsdp": "fsdp2.yaml"}


def gpu_count() -> int:
    """NVIDIA GPUs this machine offers, without importing torch where it is not loaded yet
    (config validation runs in the UI's process too): the driver's own listing."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    if "torch" in sys.modules:
        import torch

        return torch.cuda.device_count()
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def config_path(name: str) -> Path:
    """The accelerate config file for ``name``: one TRL ships, or the user's own yaml."""
    if name in TRL_CONFIGS:
        import importlib.util

        spec = importlib.util.find_spec("trl")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("TRL is not installed: its accelerate configs are missing")
        folder = Path(list(spec.submodule_search_locations)[0]) / "accelerate_configs"
        path = folder / TRL_CONFIGS[name]
        if not path.is_file():
            raise ConfigError(f"this TRL has no {path.name} under trl/accelerate_configs; give "
                              f"accelerate_config=PATH to your own accelerate yaml")
        return path
    path = Path(os.path.expanduser(name))
    if not name.endswith((".yaml", ".yml", ".json")):
        raise ConfigError(f"accelerate_config must be ddp, zero2, zero3, fsdp or a path to an "
                          f"accelerate config yaml, got {name!r}")
    if not path.is_file():
        raise ConfigError(f"accelerate_config: {name} does not exist")
    return path.resolve()


LAUNCHERS = ("local", "accelerate")
DEFAULT_LAUNCH_PORT = 29500  # torchrun's default; a one-machine launch picks a free port


@dataclass
class LaunchConfig(StageConfig):
    """How a Trainer stage's worker is started: one process, or many through ``accelerate
    launch``. Mixed into the configs of the stage kinds whose worker is rank-aware (grpo, sft,
    distill, reward_model); the
    stage calls :meth:`validate_launch` from its ``validate``."""

    launcher: str = field(default="local", metadata={
        "help": "local: one worker process | accelerate: accelerate launch with num_processes "
                "processes (torchrun underneath; gloo on a CPU machine).",
        "choices": list(LAUNCHERS)})
    num_processes: int = field(default=1, metadata={
        "help": "Training processes in all (over all machines; one per GPU on a GPU machine). "
                "batch_size is the step's total and is split between them."})
    accelerate_config: str = field(default="ddp", metadata={
        "help": "ddp | zero2 | zero3 | fsdp (the accelerate configs TRL ships; ZeRO and FSDP "
                "need GPUs, ZeRO needs deepspeed) | a path to an accelerate config yaml."})
    num_machines: int = field(default=1, metadata={
        "help": "Machines taking part; the runner starts machine 0, and each other machine "
                "runs the same launch command with its own --machine_rank (all must reach "
                "the same store: PostgreSQL)."})
    main_process_ip: str = field(default="", metadata={
        "help": "Address of machine 0 that the other machines connect to (num_machines > 1)."})
    main_process_port: int = field(default=DEFAULT_LAUNCH_PORT, metadata={
        "help": "Port of machine 0 for the processes' rendezvous (num_machines > 1; a "
                "one-machine launch picks a free port)."})

    def validate_launch(self) -> None:
        batch = getattr(self, "batch_size", None)
        if batch is not None and self.num_processes > 0 and batch % self.num_processes:
            raise ConfigError(f"batch_size ({batch}) is the step's total over all processes "
                              f"and must be divisible by num_processes ({self.num_processes})")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launcher must be local or accelerate, got {self.launcher!r}")
        if self.num_processes < 1:
            raise ConfigError(f"num_processes must be at least 1, got {self.num_processes}")
        if self.num_machines < 1:
            raise ConfigError(f"num_machines must be at least 1, got {self.num_machines}")
        if self.launcher == "local":
            if self.num_processes > 1 or self.num_machines > 1:
                raise ConfigError("num_processes / num_machines > 1 need launcher=accelerate "
                                  "(launcher=local starts one process)")
            return
        if self.num_processes % self.num_machines:
            raise ConfigError(f"num_processes ({self.num_processes}) is the total over all "
                              f"machines and must be divisible by num_machines "
                              f"({self.num_machines})")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ConfigError("num_machines > 1 needs main_process_ip: the address of machine "
                              "0, which the other machines connect to")
        if not 0 < self.main_process_port < 65536:
            raise ConfigError(f"main_process_port must be a TCP port, got {self.main_process_port}")
        config_path(self.accelerate_config)  # raises when neither a known name nor a file
        gpus = gpu_count()
        per_machine = self.num_processes // self.num_machines
        if self.accelerate_config in ("zero2", "zero3"):
            import importlib.util

            if gpus == 0:
                raise ConfigError(f"accelerate_config={self.accelerate_config} (DeepSpeed "
                                  f"ZeRO) needs GPUs and this machine has none; on CPU use "
                                  f"accelerate_config=ddp")
            if importlib.util.find_spec("deepspeed") is None:
                raise ConfigError(f"accelerate_config={self.accelerate_config} needs DeepSpeed: "
                                  f"pip install deepspeed (or use accelerate_config=ddp)")
        if self.accelerate_config == "fsdp" and gpus == 0:
            raise ConfigError("accelerate_config=fsdp shards the model over GPUs and this "
                              "machine has none; on CPU use accelerate_config=ddp")
        if gpus and per_machine > gpus:
            raise ConfigError(f"{per_machine} processes per machine but {gpus} GPU(s) here: "
                              f"one process per GPU")
        if not gpus and per_machine > (os.cpu_count() or 1):
            raise ConfigError(f"{per_machine} processes per machine but {os.cpu_count()} CPU "
                              f"cores here: each process needs a core")

    def per_process(self, batch: int) -> int:
        """A step's total (``batch_size``) as each process's share (the Trainer's
        ``per_device_train_batch_size``)."""
        return batch // self.num_processes

    @property
    def distributed(self) -> bool:
        return self.launcher == "accelerate" and self.num_processes > 1


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

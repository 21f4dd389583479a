"""Many processes, one stage: how a Trainer stage is launched over several processes (and
machines), and what its worker needs to know about its rank.

A stage config that mixes in :class:`LaunchConfig` can run as ``launcher=accelerate`` with
``num_processes`` > 1: the runner then starts ``accelerate launch`` (built by
:func:`launch_command`) instead of one ``python -m backend _worker``, with one of the accelerate
configs TRL ships (``trl/accelerate_configs``: DDP, DeepSpeed ZeRO-2/3, FSDP2) or the user's own
yaml. Accelerate hands the processes to ``torch.distributed.run`` (torchrun), which also works on
a CPU machine: the Trainer then runs with ``use_cpu`` over gloo. (``accelerate launch --cpu``
starts one process whatever ``--num_processes`` says; its only multi-CPU path is mpirun.)

In the workers, rank 0 owns the stage row, the heartbeat and every store write; the other ranks
only read their config and inputs. Steering reaches them from rank 0 at step boundaries
(:func:`broadcast`, ``StageContext.apply_commands``), so every rank applies a command at the
same step.
"""
from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Optional

# The launch settings and their checks live with the other stage configs (stages/common.py):
# a config validates without this module, which the stage package would otherwise import in a
# circle (launch -> stages -> grpo -> launch).
from backend.stages.common import (TRL_CONFIGS, ConfigError, LaunchConfig,  # noqa: F401
                                   config_path, gpu_count)

def free_port() -> int:
    """A TCP port free right now: two many-process stages on one machine must not share
    torchrun's default rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_settings(config: Any) -> LaunchConfig:
    """The launch fields of a stage config (a dataclass or its stored dict); defaults for
    stage kinds without them."""
    names = ("launcher", "num_processes", "accelerate_config", "num_machines",
             "main_process_ip", "main_process_port")
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    defaults = LaunchConfig()
    return LaunchConfig(**{n: get(n, getattr(defaults, n)) for n in names})


def launch_command(config: Any, worker_args: list[str], *, machine_rank: int = 0,
                   port: Optional[int] = None) -> list[str]:
    """The command line that starts a stage's worker(s): ``python -m backend <worker_args>``
    for one process, else ``accelerate launch`` with the stage's accelerate config, process
    and machine counts, running ``-m backend <worker_args>`` in every process. Mixed precision
    is ``no`` for TRL's named configs (they say bf16): a stage computes in fp32 whatever its
    process count, so its numbers compare with a one-process run; a yaml of one's own keeps
    its setting. ``port`` is the rendezvous port (default: the config's)."""
    launch = launch_settings(config)
    python = [sys.executable, "-m", "backend", *worker_args]
    if not launch.distributed and launch.num_machines == 1:
        return python
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = ([str(accelerate)] if accelerate.exists() else
           [sys.executable, "-m", "accelerate.commands.accelerate_cli"])
    cmd += ["launch", "--config_file", str(config_path(launch.accelerate_config)),
            "--num_processes", str(launch.num_processes),
            "--num_machines", str(launch.num_machines),
            "--machine_rank", str(machine_rank),
            "--main_process_port", str(port or launch.main_process_port)]
    if launch.num_machines > 1:
        cmd += ["--main_process_ip", launch.main_process_ip]
    if launch.accelerate_config in TRL_CONFIGS:
        cmd += ["--mixed_precision", "no"]
    return cmd + ["-m", "backend", *worker_args]


def show_command(cmd: list[str]) -> str:
    return shlex.join(cmd)


# --------------------------------------------------------------------- inside the workers
def rank() -> int:
    """This process's global rank (torchrun sets RANK; 0 for a one-process worker)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> None:
    """Join the process group now, before the Trainer does (accelerate reuses it): rank 0
    must tell the others whether it claimed the stage before anyone loads a model."""
    if world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a collective: every rank must call it, in the same
    order); the object itself in a one-process worker."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(value: float) -> float:
    """The sum of ``value`` over all ranks (a collective)."""
    if world_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if (
        dist.get_backend() == "nccl") else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def watch_launcher(launcher_pid: int, interval: float = 1.0) -> None:
    """Exit this rank when its launcher is gone. torchrun starts every rank in a session of
    its own, so a launcher killed with SIGKILL (a deleted run) cannot take its ranks with it;
    an orphaned rank 0 would go on writing to a stage already marked interrupted."""
    def loop() -> None:
        while True:
            if os.getppid() != launcher_pid:
                print(f"[rank {rank()}] launcher {launcher_pid} is gone; exiting", flush=True)
                os._exit(1)
            threading.Event().wait(interval)

    threading.Thread(target=loop, daemon=True, name="launcher-watch").start()

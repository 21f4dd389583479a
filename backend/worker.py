"""The stage worker process: one OS process runs one stage.

Started by the pipeline runner as ``python -m backend _worker --db URL --stage ID``. It claims
the stage (compare-and-set, so two workers never run one stage), builds the stage's context
(``backend.stages.context``: heartbeat thread, typed inputs, steering), runs the stage kind's
``run``, and records how it ended: completed with its typed outputs, stopped, or failed with a
clear message first and the traceback after it.

Started by ``accelerate launch`` (a stage with ``launcher=accelerate``), one such process runs
per rank: rank 0 claims the stage and records the launcher's pid (the process the runner
waits on, alive while any rank is: torchrun tears the group down when one rank dies), writes
everything to the store and tells the other ranks whether to start; they only train.
"""
from __future__ import annotations

import os
import socket
import sys
import traceback

from backend import launch
from backend.stages import STAGE_KINDS
from backend.stages.context import RankZeroFailed, StageContext, StageStopped
from storage import Store
from storage import records as r
from storage.store import now


def initial_params(kind, config: dict) -> dict:
    """The live parameters' starting values: what the config says."""
    return {p.name: config[p.name] for p in kind.live if p.name in config}


def main(db_url: str, stage_id: int) -> int:
    store = Store(db_url)
    stage = store.get_stage(stage_id)
    run = store.get_run(stage.run_id)
    kind = STAGE_KINDS[stage.kind]
    rank = launch.rank()
    if launch.world_size() > 1:
        launch.init_distributed()
        launch.watch_launcher(os.getppid())
    claimed = rank != 0 or store.transition(
        stage_id, [r.QUEUED], r.RUNNING,
        # Many processes: the launcher's pid, which the runner waits on and reap() watches.
        pid=os.getppid() if launch.world_size() > 1 else os.getpid(),
        host=socket.gethostname(),
        heartbeat_at=now(), started_at=stage.started_at or now(), ended_at=None, error=None,
        attempt_started_step=stage.step, attempt_started_at=now(),
    )
    if rank == 0 and claimed and not stage.params:
        store.update_stage(stage_id, params=initial_params(kind, stage.config))
    if not launch.broadcast(claimed):  # the other ranks start only on a stage rank 0 claimed
        if rank == 0:
            print(f"stage {stage_id} is {stage.status}, not queued: nothing to do",
                  file=sys.stderr)
        return 2
    stage = store.get_stage(stage_id)
    ctx = StageContext(store, stage, run, kind)
    if rank != 0:
        return _other_rank(ctx, kind)
    print(f"[worker] pid {os.getpid()} runs stage {stage_id} ({stage.kind}) of run {run.id}"
          + (f" as rank 0 of {launch.world_size()} (launcher pid {os.getppid()})"
             if launch.world_size() > 1 else "")
          + (f", resuming from {ctx.resume_checkpoint}" if ctx.resume_checkpoint else ""),
          flush=True)
    try:
        outputs = kind.run(ctx)
    except StageStopped:
        ctx.close()
        store.transition(stage_id, r.ACTIVE_STATES, r.STOPPED, ended_at=now())
        ctx.event("stopped by the user; resume continues from the last checkpoint")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the UI
        ctx.close()
        message = f"{type(exc).__name__}: {exc}"
        detail = traceback.format_exc()
        print(detail, file=sys.stderr, flush=True)
        if launch.world_size() > 1 and _peer_lost(exc):
            # Another rank died (kill -9, OOM, a crash) and this one's collective saw it before
            # torchrun ended it: the stage was interrupted, as if this process had been killed.
            store.transition(stage_id, r.ACTIVE_STATES, r.INTERRUPTED, ended_at=now(), error=(
                "Another process of this stage died (killed or crashed; a crash's traceback is "
                f"in the stage's log). Resume continues from the last checkpoint.\n\n{message}"))
            store.add_event(run.id, f"stage {stage_id} interrupted: a process of the stage "
                            f"died", stage_id=stage_id, level="warning")
            return 1
        # A clear message first (what the user must fix), the traceback after it.
        store.transition(stage_id, r.ACTIVE_STATES, r.FAILED, ended_at=now(),
                         error=f"{message}\n\n{detail}")
        store.add_event(run.id, f"stage failed: {message}", stage_id=stage_id, level="error")
        return 1
    ctx.close()
    store.update_stage(stage_id, outputs={name: artifact.to_dict()
                                          for name, artifact in (outputs or {}).items()})
    # INTERRUPTED too: a reaper that misjudged this live worker must not cost its result.
    if store.transition(stage_id, (*r.ACTIVE_STATES, r.INTERRUPTED), r.COMPLETED, ended_at=now(),
                        error=None):
        ctx.event("completed")
        return 0
    ctx.event(f"finished, but the stage is {store.get_stage(stage_id).status} now; its result "
              f"was not recorded", level="warning")
    return 1


def _peer_lost(exc: BaseException) -> bool:
    """The error came out of a torch.distributed collective (gloo: "Connection closed by
    peer"; NCCL: a DistBackendError): another rank is gone."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "torch/distributed/" in frames[-1].filename.replace("\\", "/")


def _other_rank(ctx: StageContext, kind) -> int:
    """A rank other than 0: train, write nothing; rank 0 records how the stage ended. A
    failure here ends this process, and torchrun then ends the others (the runner marks the
    stage interrupted, pointing at the log, which holds this traceback)."""
    print(f"[worker] pid {os.getpid()} is rank {ctx.rank} of {ctx.world} for stage "
          f"{ctx.stage.id}", flush=True)
    try:
        kind.run(ctx)
    except StageStopped:
        return 0
    except RankZeroFailed as exc:  # rank 0 records the failure; this rank just ends
        print(f"[rank {ctx.rank}] ends: {exc}", flush=True)
        return 0
    except BaseException:  # noqa: BLE001 - the traceback goes to the stage's log
        print(f"[rank {ctx.rank}] " + traceback.format_exc(), file=sys.stderr, flush=True)
        return 1
    return 0

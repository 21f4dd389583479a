"""The stage worker: one OS process runs one stage.

Started by the pipeline runner as ``python -m backend _worker --db URL --stage ID``. It claims
the stage, beats a heartbeat every few seconds from a thread (so a long step or a pause never
looks dead), runs the stage module, and records how it ended. Steering commands (pause,
resume, stop, live parameter changes) are rows in the store that ``WorkbenchCallback`` applies
at the next optimizer-step boundary, recording the step at which each took effect.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from storage import Store
from storage import records as r
from storage.store import now

HEARTBEAT_SECONDS = 2.0


class StageStopped(Exception):
    """Raised inside a stage when the user asked it to stop (a checkpoint is already saved)."""


class StageContext:
    """What a stage module sees: its config, inputs from earlier stages, and the store."""

    def __init__(self, store: Store, stage: r.Stage, run: r.Run):
        self.store = store
        self.stage = stage
        self.run = run
        self.config: dict[str, Any] = stage.config
        self.output_dir = Path(stage.output_dir or ".")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # Outputs of every completed earlier stage; later stages override earlier keys.
        self.inputs: dict[str, Any] = {}
        for earlier in run.stages:
            if earlier.position < stage.position and earlier.status == r.COMPLETED:
                self.inputs.update(earlier.outputs)
        # A stage being resumed restarts from its newest checkpoint that still exists on disk.
        self.resume_checkpoint: Optional[str] = None
        for ckpt in reversed(store.checkpoints(stage.id)):
            if ckpt.kind == "trainer" and Path(ckpt.path).exists():
                self.resume_checkpoint = ckpt.path
                break
        self.step = 0
        self.total_steps: Optional[int] = stage.total_steps
        self.paused = False
        self.stop_requested = False
        # Stage modules register handlers for live "set" commands: {param name: fn(value)}.
        self.setters: dict[str, Callable[[Any], str]] = {}
        self._lock = threading.Lock()
        self._beating = True
        self._beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        self._beat.start()

    # -- reporting -----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while self._beating:
            try:
                self.store.heartbeat(self.stage.id)
            except Exception as exc:  # a busy database must not kill training
                print(f"[worker] heartbeat failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(HEARTBEAT_SECONDS)

    def close(self) -> None:
        self._beating = False

    def progress(self, step: int, total_steps: Optional[int] = None) -> None:
        self.step = step
        if total_steps is not None:
            self.total_steps = total_steps
        self.store.heartbeat(self.stage.id, step=step, total_steps=self.total_steps)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.store.add_metrics(self.stage.id, step, values)

    def event(self, message: str, level: str = "info", step: Optional[int] = None) -> None:
        print(f"[{level}] {message}", flush=True)
        self.store.add_event(self.run.id, message, stage_id=self.stage.id,
                             step=self.step if step is None else step, level=level)

    def checkpoint_saved(self, step: int, path: str, kind: str = "trainer") -> None:
        self.store.add_checkpoint(self.stage.id, step, path, kind)

    # -- steering --------------------------------------------------------------------------
    def apply_commands(self, step: int) -> None:
        """Apply pending commands at a step boundary. Blocks while paused."""
        while True:
            for cmd in self.store.pending_commands(self.stage.id):
                result = self._apply(cmd, step)
                self.store.mark_command_applied(cmd.id, step, result)
                self.event(f"{cmd.kind} {json.dumps(cmd.payload) if cmd.payload else ''}".strip()
                           + f" applied at step {step}: {result}", step=step)
            if not self.paused or self.stop_requested:
                return
            time.sleep(0.5)

    def _apply(self, cmd: r.Command, step: int) -> str:
        if cmd.kind == "pause":
            if not self.paused:
                self.paused = True
                self.store.transition(self.stage.id, [r.RUNNING], r.PAUSED)
            return "paused"
        if cmd.kind == "resume":
            if self.paused:
                self.paused = False
                self.store.transition(self.stage.id, [r.PAUSED], r.RUNNING)
            return "running"
        if cmd.kind == "stop":
            self.stop_requested = True
            self.paused = False
            return "stopping after a checkpoint"
        if cmd.kind == "set":
            done = []
            for key, value in cmd.payload.items():
                setter = self.setters.get(key)
                if setter is None:
                    done.append(f"{key}: not adjustable live in a {self.stage.kind} stage "
                                f"(adjustable: {', '.join(sorted(self.setters)) or 'none'})")
                else:
                    done.append(setter(value))
            return "; ".join(done)
        return f"unknown command {cmd.kind!r} ignored"


def make_trainer_callback(ctx: StageContext):
    """A transformers TrainerCallback that connects any HF/TRL trainer to the store."""
    from transformers import TrainerCallback

    class WorkbenchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps)
            ctx.apply_commands(state.global_step)
            if ctx.stop_requested:
                # Trainer saves a full checkpoint (model, optimizer, scheduler, RNG, data
                # position) at this step, then leaves its loop.
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                values = {k: v for k, v in logs.items() if isinstance(v, (int, float))
                          and not isinstance(v, bool)}
                ctx.log_metrics(state.global_step, values)

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            ctx.checkpoint_saved(state.global_step, str(path))

    return WorkbenchCallback()


def main(db_url: str, stage_id: int) -> int:
    from backend.stages import STAGE_RUNNERS

    store = Store(db_url)
    stage = store.get_stage(stage_id)
    run = store.get_run(stage.run_id)
    claimed = store.transition(
        stage_id, [r.QUEUED], r.RUNNING, pid=os.getpid(), host=socket.gethostname(),
        heartbeat_at=now(), started_at=stage.started_at or now(), ended_at=None, error=None,
        attempt_started_step=stage.step, attempt_started_at=now(),
    )
    if not claimed:
        print(f"stage {stage_id} is {stage.status}, not queued: nothing to do", file=sys.stderr)
        return 2
    stage = store.get_stage(stage_id)
    ctx = StageContext(store, stage, run)
    print(f"[worker] pid {os.getpid()} runs stage {stage_id} ({stage.kind}) of run {run.id}"
          + (f", resuming from {ctx.resume_checkpoint}" if ctx.resume_checkpoint else ""),
          flush=True)
    try:
        outputs = STAGE_RUNNERS[stage.kind](ctx)
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
        # A clear message first (what the user must fix), the traceback after it.
        store.transition(stage_id, r.ACTIVE_STATES, r.FAILED, ended_at=now(),
                         error=f"{message}\n\n{detail}")
        store.add_event(run.id, f"stage failed: {message}", stage_id=stage_id, level="error")
        return 1
    ctx.close()
    store.update_stage(stage_id, outputs=outputs or {})
    store.transition(stage_id, r.ACTIVE_STATES, r.COMPLETED, ended_at=now())
    ctx.event("completed")
    return 0

"""What a stage module sees while it runs: its config, its typed inputs, the store, steering.

``StageContext`` reports progress, metrics, events and checkpoints, and applies steering
commands (pause, resume, stop, checkpoint-now, live parameter changes) at step boundaries.
``attach_trainer`` connects any HF/TRL ``Trainer`` to it through one callback, so every
Trainer-based stage gets the same progress, metrics, pause / stop / checkpoint-now and live
learning rate, and re-applies the stage's effective live values when it resumes.
``train_and_save`` is the tail they share: train with resume, stop, save the final model.

Imported by stage modules; it imports no stage module (the worker imports both).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

from backend.contract import Artifact, WiringError, artifact_from_dict, parse_source
from storage import Store
from storage import records as r
from storage.store import now

TICK_SECONDS = 0.5

Setter = Callable[[Any], str]  # applies a parsed value, returns what it did


class StageStopped(Exception):
    """Raised inside a stage when the user asked it to stop (a checkpoint is already saved)."""


class RankZeroFailed(Exception):
    """Raised on a rank other than 0 when rank 0 met an error that it records as the stage's
    failure itself: this rank ends quietly, so torchrun does not end rank 0 before it has."""


class StageContext:
    def __init__(self, store: Store, stage: r.Stage, run: r.Run, kind: Any):
        self.store = store
        self.stage = stage
        self.run = run
        self.kind = kind  # the stage's StageKind (its declared inputs and live parameters)
        # Many processes (launcher=accelerate): rank 0 owns the stage row, heartbeat and every
        # store write; the other ranks train, apply rank 0's commands and write nothing.
        from backend.launch import rank, world_size

        self.rank, self.world = rank(), world_size()
        self.main = self.rank == 0
        self.config: dict[str, Any] = stage.config
        self.output_dir = Path(stage.output_dir or ".")
        self.output_dir.mkdir(parents=True, exist_ok=True)
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
        self.save_requested = False
        # Stage modules register how each declared live parameter is applied: {name: fn}.
        self.setters: dict[str, Setter] = {}
        self.params: dict[str, Any] = dict(stage.params)  # effective values
        # time_budget_s (TimeBudgetConfig) counts this process's CPU seconds; a stage resumed
        # from a checkpoint goes on spending its budget from the last cpu_s it recorded.
        # With many processes cpu_s is all ranks' sum, so only rank 0 carries it forward.
        self.cpu_before = (store.latest_metrics(stage.id, ["cpu_s"]).get("cpu_s", 0.0)
                           if self.resume_checkpoint and self.main else 0.0)
        self.budget_summary: dict[str, Any] = {}  # merged into every summary() written
        # The training thread never waits on the database: metrics are buffered and the step
        # noted in memory; one background thread writes them, beats the heartbeat and fetches
        # waiting commands in one transaction every TICK_SECONDS (bench/bench_recording.py).
        self._lock = threading.Lock()
        self._metrics: list[tuple[int, dict[str, float]]] = []
        self._pending: list[r.Command] = []
        self._seen_commands: set[int] = set()
        self._closed = threading.Event()
        self._clock_started = False
        self._io = threading.Thread(target=self._io_loop, daemon=True)
        if self.main:
            self._io.start()
        else:
            self._closed.set()

    # -- inputs ----------------------------------------------------------------------------
    def input(self, name: str) -> Optional[Artifact]:
        """The typed artifact wired to input ``name`` (None when an optional input is unwired)."""
        ref = self.stage.inputs.get(name)
        if ref is None:
            if self.kind.inputs[name].optional:
                return None
            raise WiringError(f"stage {self.stage.key!r} has no source for input {name!r}")
        src_key, output = parse_source(ref)
        source = next((s for s in self.run.stages if s.key == src_key), None)
        if source is None or source.status != r.COMPLETED:
            raise WiringError(f"input {name!r} <- {ref!r}: stage {src_key!r} has not completed")
        if output not in source.outputs:
            raise WiringError(f"input {name!r} <- {ref!r}: stage {src_key!r} recorded no "
                              f"{output!r} output")
        return artifact_from_dict(source.outputs[output])

    # -- reporting -------------------------------------------------------------------------
    def _io_loop(self) -> None:
        while not self._closed.wait(TICK_SECONDS):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            metrics, self._metrics = self._metrics, []
            step, total = self.step, self.total_steps
        try:
            pending = self.store.stage_tick(self.stage.id, step, total, metrics)
        except Exception as exc:  # a busy database must not kill training: retry next tick
            with self._lock:
                self._metrics[:0] = metrics
            print(f"[worker] store round trip failed: {exc}", file=sys.stderr, flush=True)
            return
        with self._lock:
            for cmd in pending:
                if cmd.id not in self._seen_commands:
                    self._seen_commands.add(cmd.id)
                    self._pending.append(cmd)

    def close(self) -> None:
        """Stop the background thread and write what is still buffered (idempotent)."""
        if self.main and not self._closed.is_set():
            self._closed.set()
            self._io.join()
            self._tick()
            # Every stage's compute, trainer or not (rejection sampling, evaluation): what a
            # comparison at matched compute adds up (recipe distill, docs/results.md).
            try:
                summary = self.store.get_stage(self.stage.id).summary
                self.store.update_stage(self.stage.id, summary={
                    **summary, "process_cpu_s": round(self.cpu_seconds(), 1)})
            except Exception as exc:  # a figure, never worth failing the stage for
                print(f"[worker] could not record process_cpu_s: {exc}", file=sys.stderr,
                      flush=True)

    def progress(self, step: int, total_steps: Optional[int] = None) -> None:
        if not self._clock_started and self.main:
            # The attempt's clock starts at its first progress report, after setup (loading,
            # tokenising): ETAs count work steps only (backend/progress.py).
            self._clock_started = True
            self.store.update_stage(self.stage.id, attempt_started_at=now(),
                                    attempt_started_step=step, step=step,
                                    **({"total_steps": total_steps} if total_steps else {}))
        with self._lock:
            self.step = step
            if total_steps is not None:
                self.total_steps = total_steps

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.main:
            return
        with self._lock:
            self._metrics.append((step, dict(values)))

    def event(self, message: str, level: str = "info", step: Optional[int] = None) -> None:
        if not self.main:
            return
        print(f"[{level}] {message}", flush=True)
        self.store.add_event(self.run.id, message, stage_id=self.stage.id,
                             step=self.step if step is None else step, level=level)

    def checkpoint_saved(self, step: int, path: str, kind: str = "trainer") -> None:
        if self.main:
            self.store.add_checkpoint(self.stage.id, step, path, kind)

    def summary(self, values: dict[str, Any]) -> None:
        if self.main:
            self.store.update_stage(self.stage.id, summary={**values, **self.budget_summary})

    def cpu_seconds(self) -> float:
        """CPU seconds this stage has used: this process (every thread) and earlier attempts."""
        return self.cpu_before + time.process_time()

    def total_cpu_seconds(self) -> float:
        """The stage's CPU seconds over all its processes (a collective with many: every
        rank calls it at the same point)."""
        from backend.launch import all_sum

        return all_sum(self.cpu_seconds())

    # -- steering --------------------------------------------------------------------------
    def apply_commands(self, step: int) -> None:
        """Apply the commands fetched so far at a step boundary. Blocks while paused.

        With many processes every rank calls this at the same step boundary: rank 0 sends the
        commands it fetched to all ranks, which apply them at this step, and while paused every
        rank goes round this loop together (one broadcast per round), so no collective waits
        longer than a round and a pause of any length cannot time the process group out."""
        from backend.launch import broadcast

        while True:
            with self._lock:
                commands, self._pending = self._pending, []
            if self.world > 1:
                sent = broadcast([(c.id, c.kind, c.payload) for c in commands]
                                 if self.main else None)
                commands = [SimpleNamespace(id=i, kind=k, payload=p) for i, k, p in sent]
            for cmd in commands:
                result, error = self._apply(cmd)
                payload = json.dumps(cmd.payload) if cmd.payload else ""
                said = (f"{cmd.kind} {payload}".strip()
                        + (f" failed at step {step}: {error}" if error
                           else f" applied at step {step}: {result}"))
                if self.world > 1:  # each rank says so in the log: the same step on all
                    print(f"[rank {self.rank}] {said}", flush=True)
                if self.main:
                    self.store.mark_command_applied(cmd.id, step, result, error)
                    self.event(said, step=step, level="warning" if error else "info")
            if not self.paused or self.stop_requested:
                return
            time.sleep(TICK_SECONDS / 2)

    def _apply(self, cmd: r.Command) -> tuple[str, Optional[str]]:
        if cmd.kind == "pause":
            if not self.paused:
                self.paused = True
                if not self.main:
                    return "paused", None
                # With the step it paused at (the tick may not have written it yet).
                # A stage waiting for review pauses too; on resume it goes back to running
                # and the waiting loop (backend/stages/sft.py) marks it waiting again.
                self.store.transition(self.stage.id, [r.RUNNING, r.WAITING], r.PAUSED,
                                      step=self.step)
            return "paused", None
        if cmd.kind == "resume":
            if self.paused:
                self.paused = False
                if self.main:
                    self.store.transition(self.stage.id, [r.PAUSED], r.RUNNING)
            return "running", None
        if cmd.kind == "stop":
            self.stop_requested = True
            self.paused = False
            return "stopping after a checkpoint", None
        if cmd.kind == "checkpoint":
            self.save_requested = True
            return "checkpoint requested", None
        if cmd.kind == "set":
            return self.apply_params(cmd.payload)
        return "", f"unknown command {cmd.kind!r} ignored"

    def apply_params(self, values: dict[str, Any]) -> tuple[str, Optional[str]]:
        """Apply live values (validated by the API, parsed again here), record the effective
        ones. A setter that raises is reported, never fatal: training goes on."""
        from backend.steering import SteeringError

        done, failed = [], []
        for name, value in values.items():
            declared = {p.name: p for p in self.kind.live}.get(name)
            setter = self.setters.get(name)
            if declared is None or setter is None:
                failed.append(f"{name}: not adjustable live in this stage")
                continue
            try:
                parsed = declared.parse(value, self.config)
                done.append(setter(parsed))
            except (SteeringError, Exception) as exc:  # noqa: BLE001 - reported, not fatal
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            self.params[name] = parsed
        if done and self.main:
            self.store.update_stage(self.stage.id, params=self.params)
        return "; ".join(done), ("; ".join(failed) or None)

    def reapply_params(self) -> None:
        """On (re)start: bring the trainer to the stage's effective live values (those a user
        changed away from the config)."""
        changed = {k: v for k, v in self.params.items()
                   if k in self.setters and v != self.config.get(k)}
        if changed:
            result, error = self.apply_params(changed)
            self.event(f"live values re-applied: {result}" + (f" ({error})" if error else ""))


def attach_trainer(ctx: StageContext, trainer: Any, setters: Optional[dict[str, Setter]] = None):
    """Connect a HF/TRL Trainer to the stage: progress, metrics, checkpoints, steering."""
    from transformers import TrainerCallback

    def set_learning_rate(lr: float) -> str:
        if trainer.optimizer is None:
            raise RuntimeError("the optimizer is not built yet")
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        if trainer.lr_scheduler is not None and hasattr(trainer.lr_scheduler, "base_lrs"):
            # LambdaLR recomputes lr = base_lr * factor each step: move the base too, so a
            # schedule (warm-up, cosine) continues from the new value.
            trainer.lr_scheduler.base_lrs = [lr for _ in trainer.lr_scheduler.base_lrs]
            if hasattr(trainer.lr_scheduler, "_last_lr"):  # what the Trainer logs as the lr
                trainer.lr_scheduler._last_lr = [group["lr"] for group in
                                                 trainer.optimizer.param_groups]
        return f"learning_rate = {lr:g}"

    ctx.setters.update({"learning_rate": set_learning_rate, **(setters or {})})
    budget = float(ctx.config.get("time_budget_s") or 0)

    def check_budget(state, control) -> None:
        """Matched compute between stages: past time_budget_s CPU seconds training ends at
        this step boundary, like a finished run (the stage then saves its final model)."""
        used = ctx.total_cpu_seconds()  # the same figure on every rank: they stop together
        ctx.log_metrics(state.global_step, {"cpu_s": used})
        if budget and used >= budget and not ctx.stop_requested:
            control.should_training_stop = True
            if not ctx.budget_summary.get("stopped_by_time_budget"):
                ctx.event(f"time budget spent: {used:.0f} of {budget:g} CPU s at step "
                          f"{state.global_step} of {state.max_steps}; training ends here")
            ctx.budget_summary["stopped_by_time_budget"] = True

    class WorkbenchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # After the Trainer loaded a checkpoint's optimizer and scheduler: live values the
            # user set win over what the checkpoint holds.
            ctx.reapply_params()
            ctx.progress(state.global_step, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps)
            ctx.apply_commands(state.global_step)
            if ctx.save_requested:
                ctx.save_requested = False
                control.should_save = True
            if ctx.stop_requested:
                # Trainer saves a full checkpoint (model, optimizer, scheduler, RNG, data
                # position) at this step, then leaves its loop.
                control.should_save = True
                control.should_training_stop = True
            check_budget(state, control)

        def on_train_end(self, args, state, control, **kwargs):
            ctx.budget_summary.update({"cpu_s": round(ctx.total_cpu_seconds(), 1),
                                       "trained_steps": state.global_step})
            if budget:
                ctx.budget_summary["time_budget_s"] = budget
                ctx.budget_summary.setdefault("stopped_by_time_budget", False)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                values = {k: v for k, v in logs.items() if isinstance(v, (int, float))
                          and not isinstance(v, bool)}
                ctx.log_metrics(state.global_step, values)

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            ctx.checkpoint_saved(state.global_step, str(path))

    trainer.add_callback(WorkbenchCallback())
    return trainer


def quick_eval_callback(ctx: StageContext, trainer: Any, tokenizer: Any, heldout: list,
                        max_new_tokens: int, every: int):
    """A TrainerCallback scoring ``heldout`` greedily at step 0 and every ``every`` steps
    (0 = never), logged as ``eval/*`` metrics: the held-out accuracy curve the Live training
    and Compare pages draw against steps."""
    from transformers import TrainerCallback

    from backend.evaluation import evaluate

    def run_eval(step: int) -> None:
        report = evaluate(trainer.model, tokenizer, heldout, max_new_tokens=max_new_tokens)
        ctx.log_metrics(step, {f"eval/{k}": v for k, v in report.items()
                               if isinstance(v, float)})

    class QuickEval(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if every and state.global_step == 0:
                run_eval(0)

        def on_step_end(self, args, state, control, **kw):
            if every and state.global_step % every == 0:
                run_eval(state.global_step)

    return QuickEval()


def train_and_save(ctx: StageContext, trainer: Any, tokenizer: Any = None, *,
                   final_dir: Optional[Path] = None, files: Optional[dict[str, str]] = None,
                   after_train: Optional[Callable[[], None]] = None) -> Path:
    """The tail every Trainer stage shares: train (resuming from the stage's newest
    checkpoint when it has one), then save the final model and tokenizer and record them as
    the stage's ``final`` checkpoint. Returns the folder (``<output_dir>/final`` by default).

    Raises StageStopped when the user stopped the stage: the Trainer has already saved a full
    checkpoint at that step (``attach_trainer``), and nothing final is written. ``files``
    (name -> text) are written into the folder before it is recorded, so a reader of the
    checkpoint finds them with the weights (the judge's settings). ``after_train`` runs once
    training ends, also when it raised (GRPO closes its rollout writer there).
    ``attach_trainer`` must have been called on the trainer first."""
    try:
        trainer.train(resume_from_checkpoint=ctx.resume_checkpoint)
    finally:
        if after_train is not None:
            after_train()
    if ctx.stop_requested:
        raise StageStopped()
    final = Path(final_dir) if final_dir is not None else ctx.output_dir / "final"
    trainer.save_model(str(final))  # every rank: sharded models (ZeRO-3, FSDP) gather here
    if not ctx.main:
        return final
    tokenizer = tokenizer if tokenizer is not None else trainer.processing_class
    if tokenizer is not None:
        tokenizer.save_pretrained(str(final))
    for name, text in (files or {}).items():
        (final / name).write_text(text)
    # The step the Trainer ended at (its max_steps): what the checkpoint list shows.
    ctx.checkpoint_saved(trainer.state.global_step, str(final), kind="final")
    return final

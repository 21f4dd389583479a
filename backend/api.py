"""What pages and the CLI call. Nothing here trains: it reads the store, writes runs and
commands, and starts detached background processes. Importing it never imports torch."""
from __future__ import annotations

import os
import shutil
import signal
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field as dataclass_field, fields as dataclass_fields
from pathlib import Path
from typing import Any, Iterator, Optional

from backend import curation, recipes, runner, steering
from backend import analysis
from backend import compare, playground
from backend.playground import PlaygroundError  # noqa: F401  re-exported for pages
from backend.stages.common import ConfigError
from storage import EditConflict, Store, StoreError
from storage import records as r
from storage.store import StageVersion
from storage.records import (  # noqa: F401  re-exported for pages
    ACCEPTED, ACTIVE_STATES, COMPLETED, EDITED, FAILED, INTERRUPTED, PAUSED, PENDING, QUEUED,
    REJECTED, RESUMABLE_STATES, ROW_STATUSES, RUNNING, STOPPED, TERMINAL_STATES, WAITING,
    RowFilter,
)

__all__ = ["Workbench", "ConfigError", "StoreError", "WorkbenchError", "EditConflict",
           "MissingCheckpointError"]


class WorkbenchError(RuntimeError):
    """A request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class CheckpointRequest:
    """A checkpoint-now request and how far it got (``Workbench.checkpoint_request``)."""

    requested_at: Any  # datetime, naive UTC like every store timestamp
    applied_step: Optional[int]  # None while waiting for the next step boundary (or dropped)
    result: Optional[str]  # what the worker answered ("dropped: stage restarted" ...)
    error: Optional[str]
    saved_step: Optional[int]
    saved_path: Optional[str]

    def describe(self) -> str:
        """``requested -> applied at step 12 -> saved at step 12: /path``, as far as it got."""
        if self.error:
            return f"checkpoint request failed at step {self.applied_step}: {self.error}"
        if self.applied_step is None:
            return (f"checkpoint request {self.result}" if self.result
                    else "checkpoint requested -> waiting for the next step boundary")
        text = f"checkpoint requested -> applied at step {self.applied_step} -> "
        if self.saved_path is None:
            return text + "saving (a paused stage saves when it resumes)"
        return text + f"saved at step {self.saved_step}: {self.saved_path}"


class MissingCheckpointError(WorkbenchError):
    """A resume refused because the stage's newest checkpoint is not on this machine."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a stopped / interrupted / failed stage would restart on this machine
    (``Workbench.resume_point``)."""

    step: int  # the newest checkpoint found here, or 0 (the start)
    path: Optional[str]  # that checkpoint's folder; None: the start
    missing: tuple[r.Checkpoint, ...]  # newer trainer checkpoints whose folder is not here

    def describe(self) -> str:
        return f"checkpoint at step {self.step}" if self.path else "the start"

    def missing_message(self, stage_id: int) -> str:
        """Why restarting would lose progress, naming the missing folder and what to do."""
        newest = self.missing[-1]
        return (f"stage {stage_id}'s newest checkpoint (step {newest.step}) is not on this "
                f"machine ({socket.gethostname()}): {newest.path} does not exist. Restarting "
                f"now would go back to {self.describe()} and lose {newest.step - self.step} "
                f"steps. Make that folder available here (a stage keeps its checkpoints on "
                f"the machine that ran it: share or copy its R1WB_HOME folder) and try again, "
                f"or accept the loss: --lose-progress on the command line, \"Restart anyway\" "
                f"on the Stage page.")


class Workbench:
    """Facade over one store. Pages make one per session; the CLI one per call."""

    def __init__(self, db_url: Optional[str] = None):
        self.store = Store(db_url)

    @property
    def db_url(self) -> str:
        return self.store.url

    # -- recipes ---------------------------------------------------------------------------
    @staticmethod
    def recipes() -> dict[str, str]:
        return {name: rec.description for name, rec in recipes.RECIPES.items()}

    @staticmethod
    def presets() -> list[str]:
        return list(recipes.PRESETS)

    @staticmethod
    def default_stages(recipe: str, preset: str) -> list[r.StageSpec]:
        return recipes.default_config(recipe, preset)

    @staticmethod
    def config_help(kind: str) -> dict[str, str]:
        from backend.stages import STAGE_CONFIGS
        return STAGE_CONFIGS[kind].help()

    @staticmethod
    def config_choices(kind: str) -> dict[str, list[str]]:
        """The settings of a stage kind that take one of a few named values (a field's
        ``choices`` metadata), with those values in order: the run form draws them as
        select boxes."""
        import dataclasses

        from backend.launch import TRL_CONFIGS
        from backend.stages import STAGE_CONFIGS
        choices = {f.name: list(f.metadata["choices"])
                   for f in dataclasses.fields(STAGE_CONFIGS[kind]) if f.metadata.get("choices")}
        if any(f.name == "accelerate_config" for f in dataclasses.fields(STAGE_CONFIGS[kind])):
            # Its named values are the accelerate configs TRL ships (backend.launch); a path
            # to one's own yaml is accepted as well.
            choices.setdefault("accelerate_config", list(TRL_CONFIGS))
        return choices

    @staticmethod
    def generation_backend_problem(backend: str, model_path: str = "") -> Optional[str]:
        """Why ``backend`` cannot generate here for the model at ``model_path`` (vLLM not
        installed on this machine, where the runner starts the stage's worker; a head size
        vLLM's CPU attention rejects), or None. Reads package metadata and the folder's
        config.json only: never imports vLLM or torch."""
        from backend import generation

        try:
            generation.check_backend_name(backend)
            if backend == "vllm":
                generation.require_vllm()
            generation.check_generation_backend(backend, model_path)
        except (ValueError, generation.GenerationBackendError) as exc:
            return str(exc)
        return None

    def launch_commands(self, kind: str, config: dict[str, Any],
                        stage_id: Optional[int] = None, check: bool = True) -> list[str]:
        """The command lines a stage's worker(s) are started with, as the runner builds them
        (``backend.launch.launch_command``): machine 0's first (the runner starts it), then
        one per other machine (run there by hand; ``--machine_rank`` differs). Before the
        stage exists, ``STAGE_ID`` stands for its id; on one machine the rendezvous port is
        picked free at launch (``FREE_PORT``). With ``check`` raises ConfigError when the
        launch settings cannot work here (a DeepSpeed config without a GPU, several machines
        on a SQLite store...); without, only
        when the command cannot be built (a yaml that is not here): a stage created on a GPU
        machine, looked at from another."""
        from backend import launch
        from backend.stages.common import LaunchConfig

        names = {f.name for f in dataclass_fields(LaunchConfig)} - {"seed"}
        settings = LaunchConfig.from_dict({k: v for k, v in config.items() if k in names})
        if check:
            settings.validate_launch()
            if settings.num_machines > 1 and self.store.is_sqlite:
                # The runner would fail the stage at launch for this (backend/runner.py): say
                # so while the run can still be changed.
                raise ConfigError("num_machines > 1 needs a PostgreSQL store that every "
                                  "machine reaches (R1WB_DB_URL); this store is a SQLite file "
                                  "on this machine only (docs/scaling.md)")
        args = ["_worker", *runner._db_args(self.store.url), "--stage",
                "STAGE_ID" if stage_id is None else str(stage_id)]
        one_machine = (settings.distributed or settings.num_machines > 1) and (
            settings.num_machines == 1)
        lines = []
        for machine in range(settings.num_machines):
            cmd = launch.launch_command(settings, args, machine_rank=machine)
            if one_machine:
                cmd[cmd.index("--main_process_port") + 1] = "FREE_PORT"
            lines.append(launch.show_command(cmd))
        return lines

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, recipe: str, preset: str = "tiny", sets: Optional[dict] = None,
                   name: Optional[str] = None, stage_configs: Optional[list[dict]] = None,
                   start: bool = True) -> r.Run:
        """Validate, store and (by default) start a run. ``stage_configs`` (from the UI form)
        replaces each stage's whole config; ``sets`` overrides single keys."""
        # With a form's configs the wiring is checked once they are in (below).
        specs = recipes.build_stages(recipe, preset, sets or {},
                                     wiring=stage_configs is None)
        if stage_configs is not None:
            from backend.stages import STAGE_CONFIGS
            for spec, values in zip(specs, stage_configs):
                try:
                    spec.config = STAGE_CONFIGS[spec.kind].from_dict(values).to_dict()
                except ConfigError as exc:
                    raise ConfigError(f"{spec.kind} stage: {exc}") from exc
            recipes.check_specs(specs)
        self.store.check_writable()
        run = self.store.create_run(name or f"{recipe} ({preset})", recipe, preset,
                                    {"sets": sets or {}}, specs)
        if start:
            runner.start_pipeline(self.store, run.id)
        return self.get_run(run.id)

    def clone_run(self, run_id: int, sets: Optional[dict] = None, name: Optional[str] = None,
                  stage_configs: Optional[list[dict]] = None, start: bool = True) -> r.Run:
        """A new run with the same stages and configs as ``run_id`` (any state), with
        ``stage_configs`` / ``sets`` on top, validated like a new run."""
        old = self.get_run(run_id)
        specs = [r.StageSpec(kind=s.kind, name=s.name, config=dict(s.config), key=s.key,
                             inputs=dict(s.inputs)) for s in old.stages]
        if stage_configs is not None:
            for spec, values in zip(specs, stage_configs):
                spec.config = dict(values)
        specs = recipes.apply_sets(specs, sets or {}, f"run {run_id}")
        self.store.check_writable()
        run = self.store.create_run(name or f"{old.name} (clone of #{run_id})", old.recipe,
                                    old.preset, {"sets": sets or {}, "cloned_from": run_id},
                                    specs)
        if start:
            runner.start_pipeline(self.store, run.id)
        return self.get_run(run.id)

    def rerun_stage(self, stage_id: int, sets: dict[str, Any],
                    lose_progress: bool = False) -> str:
        """Correct a failed / stopped / interrupted stage's config and run it again from its
        last checkpoint (or its start). The new config is validated first; a newest
        checkpoint missing on this machine refuses it as ``resume`` does."""
        stage = self.get_stage(stage_id)
        if stage.status not in r.RESUMABLE_STATES:
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; only a failed, stopped or "
                                 f"interrupted stage can be re-run with a new config")
        point = self.resume_point(stage_id)
        if point.missing and not lose_progress:  # before the config changes
            raise MissingCheckpointError("Not re-run: " + point.missing_message(stage_id))
        run = self.store.get_run(stage.run_id)
        specs = [r.StageSpec(kind=s.kind, name=s.name, config=dict(s.config), key=s.key,
                             inputs=dict(s.inputs)) for s in run.stages]
        scoped = {(k if "." in k else f"{stage.key}.{k}"): v for k, v in sets.items()}
        specs = recipes.apply_sets(specs, scoped, f"stage {stage_id}")
        self.store.update_stage(stage_id, config=specs[stage.position].config)
        self.store.add_event(stage.run_id, f"stage {stage_id} config changed: " + ", ".join(
            f"{k}={v}" for k, v in sets.items()), stage_id=stage_id)
        return self.resume(stage_id, lose_progress=lose_progress)

    @staticmethod
    def run_result(run: r.Run) -> Optional[float]:
        """A run's result (a 0-1 share): the final model's greedy pass@1 from the run's own
        evaluate stage once it completed; for a completed run without one (pretrain-base),
        its last stage's held-out accuracy; else None. A failed run has no result: the base
        model's accuracy, or a quick eval inside training, is not what the run produced."""
        for stage in reversed(run.stages):
            if stage.kind == "evaluate" and stage.status == r.COMPLETED:
                summary = stage.summary or {}
                value = (summary.get("final") or {}).get("greedy_pass@1",
                                                         summary.get("accuracy"))
                if isinstance(value, (int, float)):
                    return float(value)
        if run.status == r.COMPLETED and run.stages and not any(
                s.kind == "evaluate" for s in run.stages):
            value = (run.stages[-1].summary or {}).get("accuracy")
            if isinstance(value, (int, float)):
                return float(value)
        return None

    @staticmethod
    def eval_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
        """An evaluate stage's base -> final comparison as rows (metric, base, final, gain in
        points); empty when the stage has not finished. Shares are 0-1, gains in points."""
        final = summary.get("final")
        if not isinstance(final, dict):
            return []
        base = summary.get("base") if isinstance(summary.get("base"), dict) else {}
        k, temperature = summary.get("k", "k"), summary.get("temperature", "?")
        rows = []
        for key, label in (("greedy_pass@1", "greedy pass@1"),
                           ("sampled_pass@1", f"sampled pass@1 (T={temperature})"),
                           (f"cons@{k}", f"cons@{k} (majority of {k} samples)"),
                           ("pass@k", f"pass@{k} (unbiased, Chen et al.)"),
                           ("format", "format compliance (k samples)"),
                           ("language", "language consistency (k samples)"),
                           ("greedy_lenient", "lenient (last number)"),
                           ("think_rate", "uses <think>")):
            if key not in final:
                continue
            b, f = base.get(key), final[key]
            rows.append({"metric": label, "base": b, "final": f,
                         "gain (points)": None if b is None else 100 * (f - b)})
        return rows

    def rollout_rows(self, run_id: int, stage_id: Optional[int] = None,
                     step: Optional[int] = None) -> list[dict[str, Any]]:
        """A run's rollouts (optionally one stage's, one step's) as the rows
        ``export_rollouts`` writes: the UI's downloads and the CLI export share them."""
        self.store.get_run(run_id)
        if stage_id is not None and step is not None:
            # One step (the inspector's download, redone as steps arrive): its own groups,
            # not a scan of the whole run. Same columns, same order as iter_rollouts.
            return [{"run_id": run_id, "stage_id": stage_id, "step": g.step,
                     "group_id": g.group_index, "sample_index": ro.sample_index,
                     "prompt": g.prompt, "reference": g.reference,
                     "completion": ro.completion, "rewards": ro.rewards, "reward": ro.reward,
                     "advantage": ro.advantage, "length": ro.length,
                     "truncated": bool(ro.truncated)}
                    for g in self.store.step_groups(stage_id, step) for ro in g.rollouts]
        return [row for row in self.store.iter_rollouts(run_id)
                if (stage_id is None or row["stage_id"] == stage_id)
                and (step is None or row["step"] == step)]

    def metric_rows(self, stage_id: int) -> list[dict[str, Any]]:
        """A stage's metrics, one row per step (columns: step, then each metric)."""
        rows: dict[int, dict[str, Any]] = {}
        for metric in self.store.metrics(stage_id):
            rows.setdefault(metric.step, {"step": metric.step})[metric.name] = metric.value
        return [rows[step] for step in sorted(rows)]

    @staticmethod
    def export_bytes(rows: list[dict[str, Any]], fmt: str = "jsonl") -> bytes:
        """Rows as a file's bytes, written by ``datasets`` exactly as the CLI exports write
        them (jsonl: same options as ``export_rollouts``); fmt is jsonl, parquet or csv."""
        import io

        import datasets
        from datasets import Dataset

        datasets.disable_progress_bars()
        buf = io.BytesIO()
        if not rows:
            return b""
        data = Dataset.from_list(rows)
        if fmt == "jsonl":
            data.to_json(buf, force_ascii=False, double_precision=15)
        elif fmt == "parquet":
            data.to_parquet(buf)
        elif fmt == "csv":
            data.to_csv(buf, index=False)
        else:
            raise ConfigError(f"unknown export format {fmt!r} (jsonl, parquet or csv)")
        return buf.getvalue()

    def list_runs(self) -> list[r.Run]:
        runner.reap(self.store)
        return self.store.list_runs()

    def get_run(self, run_id: int) -> r.Run:
        run = self.store.get_run(run_id)
        if runner.reap(self.store, run.stages):
            run = self.store.get_run(run_id)
        return run

    def run_status(self, run_id: int) -> dict[str, Any]:
        """Everything ``status --json`` prints: per stage its state, resolved inputs (where
        each comes from, and what it is once that stage has run), typed outputs, effective
        live parameters and, for GRPO, the collapse diagnosis."""
        run = self.get_run(run_id)
        by_key = {s.key: s for s in run.stages}

        def resolved(ref: str) -> dict[str, Any]:
            src_key, _, output = ref.partition(".")
            src = by_key.get(src_key)
            return {"from": ref, "value": (src.outputs.get(output) if src else None)}

        stages = []
        for s in run.stages:
            entry = {
                "id": s.id, "key": s.key, "kind": s.kind, "name": s.name, "status": s.status,
                "step": s.step, "total_steps": s.total_steps, "pid": s.pid,
                "checkpoint": s.checkpoint, "error": s.error,
                "inputs": {name: resolved(ref) for name, ref in s.inputs.items()},
                "outputs": s.outputs, "params": s.params, "summary": s.summary,
            }
            if s.kind == "grpo" and s.status != r.QUEUED:
                entry["collapse_warning"] = self.collapse_warning(s.id)
            stages.append(entry)
        return {"run_id": run.id, "status": run.status, "stages": stages}

    def delete_run(self, run_id: int) -> None:
        """Delete a run; a running stage is stopped hard first (its data goes with it)."""
        run = self.get_run(run_id)
        for stage in run.stages:
            if stage.status in r.ACTIVE_STATES and runner.pid_alive(stage.pid):
                _kill(stage.pid)
        if run.runner_pid and runner.pid_alive(run.runner_pid):
            _kill(run.runner_pid)
        self.store.delete_run(run_id)
        # Checkpoints and logs on disk go too (the cached base model is shared and stays).
        shutil.rmtree(runner.run_dir(run_id), ignore_errors=True)

    # -- stages ----------------------------------------------------------------------------
    def get_stage(self, stage_id: int) -> r.Stage:
        stage = self.store.get_stage(stage_id)
        if runner.reap(self.store, [stage]):
            stage = self.store.get_stage(stage_id)
        return stage

    def pause(self, stage_id: int) -> str:
        stage = self.get_stage(stage_id)
        # A stage waiting for review pauses too (and goes back to waiting on resume).
        if stage.status not in (r.RUNNING, r.WAITING):
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; only a running or "
                                 f"waiting stage can be paused")
        self.store.add_command(stage_id, "pause")
        return "pause requested: takes effect at the next step boundary"

    def stop(self, stage_id: int) -> str:
        stage = self.get_stage(stage_id)
        if stage.status == r.QUEUED:
            self.store.transition(stage_id, [r.QUEUED], r.STOPPED)
            return "stopped before it started"
        if stage.status not in r.ACTIVE_STATES:
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; nothing to stop")
        self.store.add_command(stage_id, "stop")
        return "stop requested: the stage saves a checkpoint at the next step, then exits"

    def resume_point(self, stage_id: int) -> ResumePoint:
        """Where the stage would restart here: its newest trainer checkpoint whose folder
        exists on this machine (the worker looks for it the same way), and the newer ones
        whose folder does not (saved on another machine sharing the store, or deleted)."""
        checkpoints = [c for c in self.store.checkpoints(stage_id) if c.kind == "trainer"]
        found = next((i for i in range(len(checkpoints) - 1, -1, -1)
                      if Path(checkpoints[i].path).exists()), None)
        if found is None:
            return ResumePoint(0, None, tuple(checkpoints))
        return ResumePoint(checkpoints[found].step, checkpoints[found].path,
                           tuple(checkpoints[found + 1:]))

    def resume(self, stage_id: int, lose_progress: bool = False) -> str:
        """Paused: continue. Stopped / interrupted / failed: restart the stage from its last
        checkpoint (model, optimizer, scheduler, RNG, data position) and go on with the run.
        A newest checkpoint missing on this machine is refused (``MissingCheckpointError``,
        naming the folder) unless ``lose_progress``: then the stage restarts from the newest
        one here (or its start) and a warning event records what was lost."""
        stage = self.get_stage(stage_id)
        if stage.status == r.PAUSED:
            self.store.add_command(stage_id, "resume")
            return "resume requested"
        if stage.status not in r.RESUMABLE_STATES:
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; only a paused, stopped, "
                                 f"interrupted or failed stage can be resumed")
        point = self.resume_point(stage_id)
        if point.missing and not lose_progress:
            raise MissingCheckpointError("Not resumed: " + point.missing_message(stage_id))
        # Steps after the checkpoint will be replayed: drop what they recorded (and the
        # missing checkpoints: they belong to the steps given up).
        self.store.purge_stage_records_after(stage_id, point.step)
        for cmd in self.store.pending_commands(stage_id):
            self.store.mark_command_applied(cmd.id, None, "dropped: stage restarted")
        self.store.transition(stage_id, r.RESUMABLE_STATES, r.QUEUED, error=None,
                              ended_at=None, step=point.step)
        # Later stages that never ran stay queued; the runner picks up from this one.
        run = self.store.get_run(stage.run_id)
        for later in run.stages:
            if later.position > stage.position and later.status == r.STOPPED:
                self.store.transition(later.id, [r.STOPPED], r.QUEUED)
        if point.missing:
            newest = point.missing[-1]
            self.store.add_event(
                stage.run_id, f"stage {stage_id} restarted from {point.describe()}, losing "
                f"{newest.step - point.step} steps: its checkpoint at step {newest.step} is "
                f"not on {socket.gethostname()} ({newest.path})",
                stage_id=stage_id, step=point.step, level="warning")
        else:
            self.store.add_event(stage.run_id, f"stage {stage_id} resumed from "
                                 f"{'step %d' % point.step if point.path else 'the start'}",
                                 stage_id=stage_id)
        runner.start_pipeline(self.store, stage.run_id)
        return f"restarting from {point.describe()}"

    @staticmethod
    def live_params(kind: str) -> list[steering.LiveParam]:
        """The parameters a user may change while a stage of this kind runs."""
        from backend.stages import STAGE_KINDS
        return list(STAGE_KINDS[kind].live)

    def check_params(self, stage_id: int, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Validate a live change against the stage kind's declarations without sending it:
        (parsed values, risks worth a confirmation). Raises ConfigError with every problem."""
        stage = self.get_stage(stage_id)
        try:
            # Against the effective values: {"format": 0.2} keeps an earlier live change to
            # the other weights.
            parsed = steering.parse_changes(tuple(self.live_params(stage.kind)), values,
                                            {**stage.config, **stage.params}, stage.kind)
        except steering.SteeringError as exc:
            raise ConfigError(str(exc)) from None
        current = {**{k: stage.config.get(k) for k in parsed}, **stage.params}
        return parsed, steering.risks(current, parsed, stage.config)

    def set_params(self, stage_id: int, values: dict[str, Any]) -> str:
        """Send a validated live change; a bad value is refused here and nothing is sent."""
        stage = self.get_stage(stage_id)
        if stage.status not in r.ACTIVE_STATES:
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; live changes need a "
                                 f"running or paused stage")
        parsed, _ = self.check_params(stage_id, values)
        self.store.add_command(stage_id, "set", parsed)
        return "change requested: applied at the next step boundary"

    def checkpoint(self, stage_id: int) -> str:
        stage = self.get_stage(stage_id)
        if stage.status not in r.ACTIVE_STATES:
            raise WorkbenchError(f"stage {stage_id} is {stage.status}; only a running or "
                                 f"paused stage can save a checkpoint")
        if not self.saves_checkpoints(stage.kind):
            raise WorkbenchError(f"stage {stage_id} is a {stage.kind} stage, which saves no "
                                 f"checkpoints")
        self.store.add_command(stage_id, "checkpoint")
        return "checkpoint requested: saved at the next step boundary"

    @staticmethod
    def saves_checkpoints(kind: str) -> bool:
        """Whether a stage of this kind saves checkpoints it can resume from (and so answers
        a checkpoint-now request)."""
        from backend.stages import STAGE_KINDS
        return STAGE_KINDS[kind].checkpoints

    def checkpoint_request(self, stage_id: int) -> Optional[CheckpointRequest]:
        """The newest checkpoint-now request of a stage and how far it got (requested ->
        applied at step N -> saved), or None when there was none."""
        cmd = next((c for c in reversed(self.store.commands(stage_id))
                    if c.kind == "checkpoint"), None)
        if cmd is None:
            return None
        saved = None
        if cmd.applied_step is not None and cmd.error is None:
            # The Trainer saves at the step the request was applied at (a rejection stage at
            # its next resume point); one saved before the request (an earlier attempt's)
            # does not answer it.
            saved = next((c for c in self.store.checkpoints(stage_id)
                          if c.kind == "trainer" and c.step >= cmd.applied_step
                          and c.at >= cmd.applied_at), None)
        return CheckpointRequest(cmd.created_at, cmd.applied_step, cmd.result, cmd.error,
                                 saved.step if saved else None, saved.path if saved else None)

    def log_tail(self, stage_id: int, lines: int = 60) -> str:
        stage = self.store.get_stage(stage_id)
        if not stage.log_path or not Path(stage.log_path).exists():
            return ""
        with open(stage.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200_000))
            text = f.read().decode("utf-8", "replace")
        # Progress bars redraw with "\r": keep only the last state of each such line.
        cleaned = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
        tail = deque((line for line in cleaned if line.strip()), maxlen=lines)
        return "\n".join(tail)

    def metrics(self, stage_id: int, names: Optional[list[str]] = None) -> list[r.Metric]:
        return self.store.metrics(stage_id, names)

    def metric_names(self, stage_id: int) -> list[str]:
        return self.store.metric_names(stage_id)

    def metric_series(self, stage_id: int, name: str) -> tuple[list[int], list[float]]:
        return self.store.metric_series(stage_id, name)

    def metric_table(self, stage_id: int, names: Optional[list[str]] = None,
                     max_points: int = 1000) -> dict[str, tuple[list[int], list[float]]]:
        return self.store.metric_table(stage_id, names, max_points)

    def latest_metrics(self, stage_id: int, names: list[str]) -> dict[str, float]:
        return self.store.latest_metrics(stage_id, names)

    # -- evaluation (the evaluate stage stores every completion it scored) -------------------
    def evaluate_checkpoint(self, checkpoint: str, *, task: Optional[str] = None,
                            dataset: Optional[str] = None, k: int = 8,
                            temperature: float = 0.6, top_p: float = 0.95,
                            few_shot: Any = 0, problems: Optional[int] = None,
                            max_new_tokens: Optional[int] = None, preset: str = "tiny",
                            name: Optional[str] = None, sets: Optional[dict] = None) -> r.Run:
        """Create and start a run of the ``evaluate`` recipe on a model folder: ``dataset``
        (its test split, else held-out training rows) or a synthetic ``task`` (default
        ``addition``). ``few_shot``: one count or several ("0,4"). A checkpoint or dataset
        that cannot be read is refused (ConfigError) before anything is created."""
        if task and dataset:
            raise ConfigError("give either a task or a dataset, not both")
        values: dict[str, Any] = {"model_path": checkpoint, "k": k, "temperature": temperature,
                                  "top_p": top_p, "few_shot": str(few_shot)}
        if dataset:
            values.update(dataset=dataset, task="")
        elif task:
            values["task"] = task
        if problems is not None:
            values["eval_problems"] = problems
        if max_new_tokens is not None:
            values["max_new_tokens"] = max_new_tokens
        values.update(sets or {})
        specs = recipes.build_stages("evaluate", preset, values)
        if dataset:  # a file that exists but is not a problem set: say so now, not in the worker
            from backend.stages.evaluate import EvaluateConfig
            cfg = EvaluateConfig.from_dict(specs[0].config)
            try:
                cfg.problem_source(None).heldout(1)
            except (ValueError, OSError) as exc:
                raise ConfigError(f"dataset {dataset}: {exc}") from exc
        return self.create_run("evaluate", preset, values,
                               name=name or f"eval {Path(checkpoint).name or checkpoint}")

    def eval_summary(self, stage_id: int) -> dict[str, dict[str, dict[str, Any]]]:
        """An evaluate stage's figures per model and prompt template: ``{model: {template:
        metrics}}`` (``{"final": {"0-shot": {...}, "4-shot": {...}}, "base": ...}``); metrics:
        greedy_pass@1, pass@1 (mean over k samples), cons@k, pass@k, format, language,
        reasoning_chars, reasoning_tokens, think_rate, model_path, and the run's k,
        n_problems, dataset, temperature, top_p. Shares are 0-1. Empty until it finished."""
        summary = self.get_stage(stage_id).summary or {}
        models = summary.get("models")
        if not isinstance(models, dict):  # summaries written before templates existed
            models = {label: {"0-shot": summary[label]} for label in ("base", "final")
                      if isinstance(summary.get(label), dict)}
        shared = {"k": summary.get("k"), "n_problems": summary.get("problems"),
                  "dataset": summary.get("dataset"), "split": summary.get("split"),
                  "temperature": summary.get("temperature"), "top_p": summary.get("top_p")}
        return {model: {template: {**shared, **{key: value for key, value in metrics.items()
                                                if key != "examples"}}
                        for template, metrics in templates.items()}
                for model, templates in models.items()}

    def eval_problems(self, stage_id: int, model: str = "final", template: str = "0-shot",
                      failed_only: bool = False) -> list[dict[str, Any]]:
        """Per held-out problem of one model x template: its greedy answer, how many of the k
        samples were right, the vote clusters with counts, and whether it ``failed`` (majority
        wrong or no answer) -- see ``backend.evaluation.problem_outcomes``."""
        from backend.evaluation import problem_outcomes

        outcomes = problem_outcomes(self.store.eval_samples(stage_id, model, template))
        return [p for p in outcomes if p["failed"]] if failed_only else outcomes

    def eval_samples(self, stage_id: int, model: Optional[str] = None,
                     failed_only: bool = False, template: Optional[str] = None,
                     problem_index: Optional[int] = None) -> list[r.EvalSample]:
        """The stored completions of an evaluate stage (greedy and the k samples, each with
        its extracted answer, correctness and vote cluster), optionally one model's, one
        template's, one problem's, or only those of failed problems."""
        samples = self.store.eval_samples(stage_id, model, template, problem_index)
        if not failed_only:
            return samples
        from backend.evaluation import problem_outcomes

        failed = set()
        groups: dict[tuple[str, str], list[r.EvalSample]] = {}
        for sample in samples:
            groups.setdefault((sample.model, sample.template), []).append(sample)
        for (model_, template_), rows in groups.items():
            failed |= {(model_, template_, p["problem_index"])
                       for p in problem_outcomes(rows) if p["failed"]}
        return [s for s in samples if (s.model, s.template, s.problem_index) in failed]

    def eval_report(self, run_id: int) -> dict[str, Any]:
        """What ``python -m backend eval --json`` prints: the evaluated model's figures for
        the first template at the top level (pass@1, greedy_pass@1, cons@k, pass@k, k,
        n_problems, format, dataset, language, reasoning length), every template under
        ``templates``, and the run and stage ids (for the Evaluation page)."""
        run = self.get_run(run_id)
        stage = next(s for s in reversed(run.stages) if s.kind == "evaluate")
        summary = self.eval_summary(stage.id)
        final = summary.get("final") or {}
        templates = list(final)
        report: dict[str, Any] = {"run_id": run.id, "stage_id": stage.id,
                                  "status": stage.status, "error": stage.error}
        if templates:
            first = final[templates[0]]
            report.update({key: first.get(key) for key in (
                "pass@1", "greedy_pass@1", "cons@k", "pass@k", "k", "n_problems", "format",
                "dataset", "split", "language", "reasoning_chars", "reasoning_tokens",
                "think_rate", "temperature", "top_p", "template", "model_path")})
            report["templates"] = {name: {key: value for key, value in metrics.items()
                                          if not key.startswith(("cons@", "pass@"))
                                          or key in ("cons@k", "pass@k", "pass@1")}
                                   for name, metrics in final.items()}
        return report

    # -- GRPO groups -----------------------------------------------------------------------
    def group_steps(self, stage_id: int) -> list[int]:
        return self.store.group_steps(stage_id)

    def step_groups(self, stage_id: int, step: int) -> list[r.Group]:
        return self.store.step_groups(stage_id, step)

    def prompt_history(self, stage_id: int, prompt: str) -> list[r.Group]:
        return self.store.prompt_history(stage_id, prompt)

    def events(self, run_id: int, stage_id: Optional[int] = None) -> list[r.Event]:
        return self.store.events(run_id, stage_id)

    def commands(self, stage_id: int) -> list[r.Command]:
        return self.store.commands(stage_id)

    # -- watching and diagnoses (backend.analysis) -----------------------------------------
    def stage_version(self, stage_id: int) -> StageVersion:
        """A stage's change counters (status, step, metric rows, newest group step, commands
        requested / applied, newest run event) in one cheap query: a page compares it between
        refreshes and redraws only what changed."""
        return self.store.stage_version(stage_id)

    @staticmethod
    def stage_progress(stage: r.Stage) -> tuple[float, str]:
        """(fraction done, text) of a stage, e.g. ``(0.15, "step 120/800 · 1m 32s left")``."""
        from backend.progress import stage_progress
        return stage_progress(stage)

    @staticmethod
    def stage_key_metric(stage: r.Stage) -> Optional[tuple[str, str]]:
        """The one number that says how a stage did, as (label, text), e.g.
        ``("held-out accuracy", "62.5%")``; None until the stage reported it. Read from the
        summary each stage kind writes (backend/stages/*.py), so the pipeline page and any
        other overview share one rule."""
        summary = stage.summary or {}

        def share(value: Any) -> Optional[str]:
            return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else None

        if stage.kind in ("pretrain", "sft", "grpo"):
            text = share(summary.get("accuracy"))
            return ("held-out accuracy", text) if text else None
        if stage.kind == "judge":
            text = share(summary.get("judge_accuracy"))
            return ("judge accuracy", text) if text else None
        if stage.kind == "reward_model":
            text = share(summary.get("heldout_accuracy"))
            return ("held-out pair accuracy", text) if text else None
        if stage.kind == "rejection":
            kept, total = summary.get("kept"), summary.get("candidates")
            if isinstance(kept, int) and isinstance(total, int):
                return ("kept", f"{kept}/{total} candidates")
            return None
        if stage.kind == "evaluate":
            final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
            text = share(final.get("greedy_pass@1"))
            if not text:
                return None
            gain = summary.get("gain_points")
            if isinstance(gain, (int, float)):
                text += f" ({gain:+.1f} points)"
            return ("final greedy pass@1", text)
        return None

    def analyse_groups(self, stage_id: int, step: int) -> analysis.StepAnalysis:
        """Every group of one step with each completion's verdict (correct by the accuracy
        reward, unparseable, truncated, wrong but rewarded) and each group's outcome."""
        return analysis.analyse_step(stage_id, step, self.store.step_groups(stage_id, step))

    def analyse_prompt_history(self, stage_id: int, prompt: str) -> list[analysis.GroupAnalysis]:
        """Every group of one prompt across the steps it was drawn in, analysed."""
        return [analysis.analyse_group(g) for g in self.store.prompt_history(stage_id, prompt)]

    def _diagnosis_metrics(self, stage_id: int) -> dict[str, tuple[list[int], list[float]]]:
        names = [n for n in self.store.metric_names(stage_id)
                 if n.startswith(("eval/", "rewards/")) or n == "frac_reward_zero_std"]
        return self.store.metric_table(stage_id, names) if names else {}

    def collapse_warning(self, stage_id: int) -> Optional[str]:
        """A policy-collapse warning for the stage's curves, or None (backend.analysis:
        held-out accuracy fell 15 points with format still high, or every reward fell)."""
        return analysis.collapse_warning(self._diagnosis_metrics(stage_id),
                                         self.store.commands(stage_id))

    def zero_signal_note(self, stage_id: int) -> Optional[str]:
        """A note when nearly every recent group had no reward spread, or None."""
        return analysis.zero_signal_note(self._diagnosis_metrics(stage_id))

    @staticmethod
    def describe_command(cmd: r.Command) -> str:
        """``pause``, ``temperature=0.7``, ``reward_weights=1,0``: a command in a few words."""
        return analysis.describe_command(cmd)

    @staticmethod
    def describe_reward(name: str) -> str:
        """One line on what a reward function scores (KeyError for an unknown name)."""
        from backend.rewards import describe_reward
        return describe_reward(name)

    # -- curation (backend.curation) -------------------------------------------------------
    # Input a user can get wrong raises WorkbenchError with what to fix; a save on a stale
    # version raises EditConflict (a StoreError) carrying the newer row.
    @staticmethod
    def make_filter(**kwargs: Any) -> r.RowFilter:
        """A row filter: status, source, prompt, search, where=["key=value", "k=lo..hi"],
        meta={...}, ranges={...}, row_ids=[...] (see ``backend.curation.make_filter``)."""
        with _curation_errors():
            return curation.make_filter(**kwargs)

    def datasets(self, run_id: Optional[int] = None) -> list[r.Dataset]:
        return self.store.datasets(run_id)

    def get_dataset(self, dataset_id: int) -> r.Dataset:
        return self.store.get_dataset(dataset_id)

    def curation_rows(self, dataset_id: int, flt: Optional[r.RowFilter] = None, *,
                      sort: str = "row_index", descending: bool = False,
                      limit: Optional[int] = None, offset: int = 0) -> list[r.CuratedRow]:
        with _curation_errors():
            return curation.list_rows(self.store, dataset_id, flt, sort=sort,
                                      descending=descending, limit=limit, offset=offset)

    def count_rows(self, dataset_id: int, flt: Optional[r.RowFilter] = None) -> int:
        with _curation_errors():
            return self.store.count_rows(dataset_id, flt)

    def queue_counts(self, dataset_id: int) -> dict[str, int]:
        return curation.queue_counts(self.store, dataset_id)

    def get_row(self, row_id: int) -> r.CuratedRow:
        return self.store.get_row(row_id)

    def review_row(self, row_id: int, status: str, *, expected_version: Optional[int] = None,
                   author: Optional[str] = None) -> r.CuratedRow:
        """Accept / reject / reset one row (``status``: accepted | rejected | pending)."""
        with _curation_errors():
            return curation.review_row(self.store, row_id, status,
                                       expected_version=expected_version, author=author)

    def bulk_review(self, dataset_id: int, flt: Optional[r.RowFilter], status: str, *,
                    author: Optional[str] = None, dry_run: bool = False) -> curation.BulkResult:
        """Set the status of every row the filter matches (one undoable action); ``dry_run``
        only counts, for the confirmation."""
        with _curation_errors():
            return curation.bulk_review(self.store, dataset_id, flt, status, author=author,
                                        dry_run=dry_run)

    def edit_row(self, row_id: int, field: str, value: Optional[str], *,
                 expected_version: Optional[int], author: Optional[str] = None) -> r.CuratedRow:
        with _curation_errors():
            return curation.edit_row(self.store, row_id, field, value,
                                     expected_version=expected_version, author=author)

    def undo(self, dataset_id: int, author: Optional[str] = None) -> Optional[str]:
        return curation.undo(self.store, dataset_id, author)

    def curation_history(self, dataset_id: int, limit: int = 200) -> list[r.CurationAction]:
        return self.store.curation_history(dataset_id, limit)

    def action_edits(self, action_id: int) -> list[r.RowEdit]:
        return self.store.action_edits(action_id)

    def row_history(self, row_id: int) -> list[dict[str, Any]]:
        return self.store.row_edits(row_id)

    def row_diff(self, row_id: int, field: str = "completion") -> curation.RowDiff:
        return curation.row_diff(self.store, row_id, field)

    def prompt_candidates(self, dataset_id: int, prompt: str) -> list[r.CuratedRow]:
        return curation.prompt_candidates(self.store, dataset_id, prompt)

    def duplicate_clusters(self, dataset_id: int, flt: Optional[r.RowFilter] = None,
                           threshold: float = curation.NEAR_DUPLICATE_RATIO,
                           ) -> list[curation.DuplicateCluster]:
        with _curation_errors():
            return curation.duplicate_clusters(self.store, dataset_id, flt, threshold=threshold)

    def dataset_stats(self, dataset_id: int,
                      flt: Optional[r.RowFilter] = None) -> dict[str, list[float]]:
        with _curation_errors():
            return curation.stats(self.store, dataset_id, flt)

    def judge_agreement(self, dataset_id: int,
                        flt: Optional[r.RowFilter] = None) -> curation.JudgeAgreement:
        """The judge's verdicts against the rule check on the rows ``flt`` matches."""
        with _curation_errors():
            return curation.judge_agreement(self.store, dataset_id, flt)

    def mark_ready(self, dataset_id: int, ready: bool = True,
                   author: Optional[str] = None) -> r.Dataset:
        """Review done (or not): an SFT stage waiting on this dataset starts training."""
        return self.store.set_ready(dataset_id, ready, author=author)

    def snapshots(self, dataset_id: Optional[int] = None,
                  stage_id: Optional[int] = None) -> list[r.Snapshot]:
        return self.store.snapshots(dataset_id, stage_id=stage_id)

    def snapshot_rows(self, snapshot_id: int) -> list[r.SnapshotRow]:
        return self.store.snapshot_rows(snapshot_id)

    def import_dataset(self, path: str, name: str, parent: Optional[int] = None,
                       allow_extra: bool = False) -> r.Dataset:
        with _curation_errors():
            dataset_id = curation.import_rows(self.store, path, name=name, parent=parent,
                                              allow_extra=allow_extra)
        return self.store.get_dataset(dataset_id)

    # -- export ----------------------------------------------------------------------------
    def export_rollouts(self, run_id: int, out: str) -> int:
        """Every rollout of a run as jsonl (written by ``datasets``), in chunks so a long run
        never sits in memory at once."""
        import datasets
        from datasets import Dataset

        datasets.disable_progress_bars()
        self.store.get_run(run_id)
        n, chunk = 0, []
        with open(out, "wb") as f:
            for row in self.store.iter_rollouts(run_id):
                chunk.append(row)
                if len(chunk) == 5000:
                    Dataset.from_list(chunk).to_json(f, force_ascii=False, double_precision=15)
                    n, chunk = n + len(chunk), []
            if chunk:
                Dataset.from_list(chunk).to_json(f, force_ascii=False, double_precision=15)
                n += len(chunk)
        return n

    def export_dataset(self, dataset_id: int, out: str, fmt: str = "jsonl",
                       snapshot: Optional[str] = None,
                       status: Optional[str] = ACCEPTED) -> curation.ExportResult:
        """A dataset's accepted rows (``status=None``: all; or a snapshot's frozen rows) with
        provenance columns, as jsonl / parquet / an HF dataset folder inside the data folder."""
        self.store.get_dataset(dataset_id)
        with _curation_errors():
            return curation.export_rows(self.store, dataset_id, out, fmt=fmt,
                                        snapshot=snapshot, status=status)

    # -- what the curation page asks besides the above -----------------------------------
    SORT_KEYS = curation.SORT_KEYS  # besides any numeric provenance field

    @staticmethod
    def describe_filter(flt: Optional[r.RowFilter]) -> str:
        """A row filter in words (``status=pending, rule_correct=False``), as the history
        records a bulk action by it."""
        return curation._describe_filter(flt)

    @staticmethod
    def highlight_spans(text: str, keyword: Optional[str]) -> list[tuple[str, bool]]:
        """``text`` cut into (piece, matches keyword) pieces; plain text, to be escaped."""
        return curation.highlight_spans(text, keyword)

    @staticmethod
    def default_author() -> str:
        """Who a curation change is recorded for when no name is given: the OS user."""
        from storage import default_author
        return default_author()

    def dataset_fields(self, dataset_id: int) -> "DatasetFields":
        """The sources and provenance fields a dataset's rows carry, each with what a filter
        needs (its kind, the values present or their range): the curation page builds one
        filter widget per field from this, so every provenance field can be filtered on."""
        sources: dict[Optional[str], int] = {}
        seen: dict[str, list[Any]] = {}
        for row in self.store.query_rows(dataset_id):
            sources[row.source] = sources.get(row.source, 0) + 1
            for key, value in curation.flatten(row.meta).items():
                seen.setdefault(key, []).append(value)
        fields = [_field_summary(name, values) for name, values in seen.items()]
        return DatasetFields(sources=sorted(sources, key=lambda s: (-sources[s], str(s))),
                             fields=fields)

    def dataset_consumers(self, dataset_id: int) -> list[r.Stage]:
        """Stages that train (or wait to train) on this dataset: those waiting for it to be
        marked ready, and those wired to the stage that wrote it."""
        ds = self.store.get_dataset(dataset_id)
        found = []
        for run in self.store.list_runs():
            producer = next((s for s in run.stages if s.id == ds.stage_id), None)
            wired = f"{producer.key}.dataset" if producer is not None else None
            for stage in run.stages:
                waits = (stage.summary or {}).get("waiting_for_dataset") == dataset_id
                if waits or (wired is not None and wired in stage.inputs.values()):
                    found.append(stage)
        return found

    def import_upload(self, filename: str, data: bytes, name: str,
                      parent: Optional[int] = None, allow_extra: bool = False) -> r.Dataset:
        """Import a file uploaded in the browser: kept under ``<data folder>/imports/`` (so
        the new dataset's origin stays readable), then read like ``import_dataset``."""
        from storage import data_home
        from storage.store import now

        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)
        folder = data_home() / "imports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{now():%Y%m%d-%H%M%S-%f}-{safe or 'upload.jsonl'}"
        path.write_bytes(data)
        return self.import_dataset(str(path), name, parent=parent, allow_extra=allow_extra)

    # -- comparing runs (backend.compare) --------------------------------------------------
    def eval_entries(self, run_ids: Optional[list[int]] = None) -> list[compare.EvalEntry]:
        """Every model (x prompt template) an evaluation stage scored, in the runs
        ``run_ids`` (default: every run), newest run first: the rows the Compare page offers."""
        runs = [run for run in self.list_runs() if run_ids is None or run.id in run_ids]
        return compare.eval_entries(runs, self.eval_summary)

    @staticmethod
    def compare_table(entries: list[compare.EvalEntry]) -> compare.CompareTable:
        """The paper-style table of ``entries``: a column per figure they carry (known ones
        first), the best value of each ranked column marked, ``.csv()`` for the download."""
        return compare.build_table(entries)

    def compare_curves(self, run_ids: list[int],
                       max_points: int = 400) -> dict[str, list[compare.Curve]]:
        """Reward, held-out accuracy and completion length of the runs' training stages, one
        curve per stage, each with its training time per point (from TRL's step_time)."""
        runs = [self.get_run(run_id) for run_id in run_ids]
        return compare.curves(
            runs, lambda stage_id, names: self.store.metric_table(stage_id, names, max_points),
            self.store.metric_series)

    # -- playground (backend.playground) ---------------------------------------------------
    def model_checkpoints(self) -> list[playground.ModelCheckpoint]:
        """Every model folder a stage wrote that still exists (final models and checkpoints
        saved during training), newest run first, with run, stage and step."""
        return playground.list_checkpoints(self.list_runs(), self.store.checkpoints)

    @staticmethod
    def playground_stream(path: str, prompt: str,
                          **options: Any) -> Iterator[playground.StreamEvent]:
        """Stream a checkpoint's answer (``start``, ``chunk`` ..., ``done``) from its model
        process (started on first use). Options: raw, prompt_format, temperature, top_p,
        max_new_tokens, seed. Raises PlaygroundError with what went wrong."""
        return playground.stream(path, prompt, **options)

    @staticmethod
    def playground_sample(path: str, prompt: str, k: int,
                          **options: Any) -> playground.SampleResult:
        """k sampled answers with their extracted answers, majority vote and agreement (the
        same options, and ``reference`` to mark them correct)."""
        return playground.sample(path, prompt, k, **options)

    @staticmethod
    def split_think(text: str) -> playground.ThinkParts:
        """A completion cut at its ``<think>`` block (for showing it collapsible)."""
        return playground.split_think(text)


# A field with at most this many distinct text values is offered as a choice (finish_reason,
# judge_verdict, checkpoint); more (a judge's rationale) is free text.
CHOICE_LIMIT = 30


@dataclass
class ProvenanceField:
    """One provenance field of a dataset's rows, as a filter widget needs it."""

    name: str  # flat, a dotted name for nested ones: "rule_scores.accuracy"
    kind: str  # number | bool | choice | text | list
    rows: int  # rows that carry it
    # bool / choice: the values present (None too), most common first
    values: list[Any] = dataclass_field(default_factory=list)
    low: Optional[float] = None  # number: the range present
    high: Optional[float] = None
    integer: bool = False  # number: every value is a whole number


@dataclass
class DatasetFields:
    sources: list[Optional[str]]  # most rows first
    fields: list[ProvenanceField]


def _field_summary(name: str, values: list[Any]) -> ProvenanceField:
    present = [v for v in values if v is not None]
    counted: dict[Any, int] = {}
    for v in values:
        if isinstance(v, (str, bool, int, float)) or v is None:
            counted[v] = counted.get(v, 0) + 1
    common = sorted(counted, key=lambda v: (-counted[v], str(v)))
    if any(isinstance(v, (list, dict)) for v in present):
        return ProvenanceField(name, "list", len(values))
    if present and all(isinstance(v, bool) for v in present):
        return ProvenanceField(name, "bool", len(values), values=common)
    numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if present and len(numbers) == len(present):
        finite = [float(v) for v in numbers if v == v and abs(v) != float("inf")]
        return ProvenanceField(name, "number", len(values), low=min(finite, default=None),
                               high=max(finite, default=None),
                               integer=all(float(v).is_integer() for v in finite))
    if len(counted) <= CHOICE_LIMIT:
        return ProvenanceField(name, "choice", len(values), values=common)
    return ProvenanceField(name, "text", len(values))


@contextmanager
def _curation_errors() -> Iterator[None]:
    try:
        yield
    except (curation.CurationError, ValueError) as exc:
        if isinstance(exc, (ConfigError, KeyError)):
            raise
        raise WorkbenchError(str(exc)) from exc


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # workers lead their own process group
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

"""Background processes: the pipeline runner and the stage workers it starts.

``start_pipeline`` launches ``python -m backend _pipeline`` in a new OS session, detached from
whoever asked (the Streamlit server, a CLI call), so a run outlives a closed tab or a restarted
UI. The runner starts each queued stage as its own worker process, waits for it, and moves on
when it completed; a stage's inputs are the outputs its predecessors recorded in the store.

A worker that dies without saying so (kill -9, OOM, reboot) leaves its stage "running" in the
store; ``reap`` notices and marks it interrupted: on this host by its pid alone (a live process
is never declared dead: on a 2-core machine under load a heartbeat once came 10 s late and a
working judge stage was marked interrupted), on another host by a heartbeat older than
``STALE_SECONDS``. The runner reaps its own child at once; the API reaps on every read.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Optional

from sqlalchemy.engine import make_url

from backend.launch import free_port, launch_command, launch_settings, show_command
from storage import Store, data_home
from storage import records as r
from storage.store import now

STALE_SECONDS = 60.0  # a worker on another host is dead after this long without a heartbeat
REPO_ROOT = Path(__file__).resolve().parent.parent


def _db_args(url: str) -> list[str]:
    """``--db URL`` for the child's command line, unless the URL holds a password: command
    lines are world-readable (``ps``), so such a URL travels in the environment only."""
    return [] if make_url(url).password else ["--db", url]


def _spawn(args: list[str], log_path: Path, db_url: str,
           command: Optional[list[str]] = None) -> subprocess.Popen:
    """Start ``python -m backend <args>`` (or ``command``, a launcher running it) detached,
    its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab", buffering=0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "R1WB_DB_URL": db_url}
    # Read by torch / OpenMP when the worker starts; a user's own OMP_WAIT_POLICY wins. Passive
    # waits: on a 2-core machine, torch's spinning OpenMP threads stalled whenever the UI took
    # a core, and merely watching a page in a browser cut tiny GRPO from ~3.3 to 0.3-0.4
    # steps/s; with passive waits it kept 1.6-1.85 (bench/bench_watching.py).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = env.get("R1WB_TRAIN_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:  # else torch's own default (physical cores)
        env["OMP_NUM_THREADS"] = threads
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        command or [sys.executable, "-m", "backend", *args],
        stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), env=env,
        start_new_session=True,  # own session: survives the parent and its Ctrl-C
    )


def run_dir(run_id: int) -> Path:
    return data_home() / "runs" / f"run-{run_id}"


def start_pipeline(store: Store, run_id: int) -> int:
    """Start (or restart) the detached pipeline runner of a run; returns its pid."""
    run = store.get_run(run_id)
    if run.runner_pid and pid_alive(run.runner_pid):
        return run.runner_pid
    # The runner claims the run itself (compare-and-set), so a second one exits at once.
    proc = _spawn(["_pipeline", *_db_args(store.url), "--run", str(run_id)],
                  run_dir(run_id) / "pipeline.log", store.url)
    return proc.pid


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # NoSuchProcess, AccessDenied...
        return False


def reap(store: Store, stages: Optional[list[r.Stage]] = None) -> list[int]:
    """Mark stages whose worker is gone as interrupted; returns their ids."""
    host = socket.gethostname()
    stale_before = now() - timedelta(seconds=STALE_SECONDS)
    reaped = []
    for stage in stages if stages is not None else store.active_stages():
        if stage.status not in r.ACTIVE_STATES:
            continue
        if stage.host == host:
            dead = not pid_alive(stage.pid)
        else:
            dead = stage.heartbeat_at is not None and stage.heartbeat_at < stale_before
        if dead and store.transition(stage.id, r.ACTIVE_STATES, r.INTERRUPTED, ended_at=now(),
                                     error="The worker process died (killed or crashed). "
                                           "Resume continues from the last checkpoint."):
            store.add_event(stage.run_id, f"stage {stage.id} interrupted: worker pid "
                            f"{stage.pid} is gone", stage_id=stage.id, level="warning")
            reaped.append(stage.id)
    return reaped


def _claim(store: Store, run_id: int, me: int) -> bool:
    """Become the run's only runner: take a free slot, or one whose holder is dead."""
    if store.set_runner_pid(run_id, me, expected=None):
        return True
    holder = store.get_run(run_id).runner_pid
    if holder == me:
        return True
    return not pid_alive(holder) and store.set_runner_pid(run_id, me, expected=holder)


def _next_queued(store: Store, run_id: int) -> Optional[r.Stage]:
    pending = [s for s in store.get_run(run_id).stages if s.status != r.COMPLETED]
    return pending[0] if pending and pending[0].status == r.QUEUED else None


def pipeline_main(db_url: str, run_id: int) -> int:
    """The pipeline runner's loop (runs in its own detached process)."""
    store = Store(db_url)
    me = os.getpid()
    if not _claim(store, run_id, me):
        print(f"run {run_id} already has a live runner; exiting", flush=True)
        return 0
    while True:
        stage = _next_queued(store, run_id)
        if stage is None:
            # Release, then look once more: a resume may have queued a stage while it saw us
            # alive and so started no runner of its own.
            store.set_runner_pid(run_id, None, expected=me)
            stage = _next_queued(store, run_id)
            if stage is None or not _claim(store, run_id, me):
                run = store.get_run(run_id)
                if run.status == r.COMPLETED:
                    store.add_event(run_id, "pipeline completed")
                return 0
        code, pid = _run_stage(store, store.get_run(run_id), stage)
        after = store.get_stage(stage.id)
        if after.pid == pid and after.status in r.ACTIVE_STATES:
            # The worker exited without recording how it ended: it was killed.
            if store.transition(stage.id, r.ACTIVE_STATES, r.INTERRUPTED, ended_at=now(),
                                error=f"The worker process died (exit code {code}) without "
                                      f"finishing (killed?). Resume continues from the last "
                                      f"checkpoint."):
                store.add_event(run_id, f"stage {stage.id} interrupted (exit code {code})",
                                stage_id=stage.id, level="warning")
        elif after.pid != pid and after.status == r.QUEUED:
            # It never claimed the stage: it crashed while starting (an import error, say).
            store.transition(stage.id, [r.QUEUED], r.FAILED, ended_at=now(),
                             error=f"The worker process exited with code {code} before it "
                                   f"started the stage; see its log {after.log_path}.")
        # Otherwise (queued again by a resume after the worker was reaped) loop and relaunch.


def _run_stage(store: Store, run: r.Run, stage: r.Stage) -> tuple[int, int]:
    out = Path(stage.output_dir) if stage.output_dir else (
        run_dir(run.id) / f"stage-{stage.position}-{stage.kind}")
    log_path = Path(stage.log_path) if stage.log_path else out / "stage.log"
    store.update_stage(stage.id, output_dir=str(out), log_path=str(log_path))
    store.add_event(run.id, f"starting stage {stage.position + 1}/{len(run.stages)}: "
                            f"{stage.name}", stage_id=stage.id)
    args = ["_worker", *_db_args(store.url), "--stage", str(stage.id)]
    launch = launch_settings(stage.config)
    command = None
    if launch.distributed or launch.num_machines > 1:
        # accelerate launch starts the ranks; its pid is the one the runner waits on (rank 0
        # records it as the stage's pid). One machine: a free rendezvous port, so two such
        # stages on one machine do not collide on torchrun's default.
        if launch.num_machines > 1 and make_url(store.url).get_backend_name() == "sqlite":
            # Checked here, not in the config: only the runner knows the store it writes to.
            store.transition(stage.id, [r.QUEUED], r.FAILED, ended_at=now(), error=(
                "num_machines > 1: the processes on the other machines read the stage from "
                "the store, and a SQLite file lives on this machine only; use a PostgreSQL "
                "store (R1WB_DB_URL or --db) that every machine reaches"))
            return 0, 0
        command = launch_command(stage.config, args, port=None if launch.num_machines > 1
                                 else free_port())
        store.add_event(run.id, f"launching {launch.num_processes} processes on "
                                f"{launch.num_machines} machine(s): {show_command(command)}",
                        stage_id=stage.id)
        for k in range(1, launch.num_machines):
            store.add_event(run.id, f"machine {k} joins with: " + show_command(
                launch_command(stage.config, args, machine_rank=k)), stage_id=stage.id)
    proc = _spawn(args, log_path, store.url, command)
    while True:
        code = proc.poll()
        if code is not None:
            return code, proc.pid
        time.sleep(0.5)

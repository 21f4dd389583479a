"""docs/scaling.md's recipe for a stage on two machines, with both "machines" on this host
(rendezvous on 127.0.0.1, one process each, gloo): one PostgreSQL store, machine 0 started by
the run's runner, machine 1 started by hand with the line the Stage page shows. Then machine
1's process is killed: the stage is interrupted (rank 0's next collective fails), and a resume
plus machine 1's line again completes it from the checkpoint."""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from backend.api import Workbench
from tests.conftest import wait_for
from tests.test_postgres import pg_cluster, pg_url  # noqa: F401  (fixtures: a real server)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_line(wb: Workbench, run_id: int, after: int = 0) -> tuple[str, int] | None:
    """Machine 1's line from the run's events (newer than event ``after``), and its id."""
    for event in wb.events(run_id):
        if event.id > after and event.message.startswith("machine 1 joins with: "):
            return event.message.removeprefix("machine 1 joins with: "), event.id
    return None


def start_machine_1(line: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(shlex.split(line), cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_run_form_on_a_postgresql_store_shows_each_machines_line(home, pg_url,
                                                                     monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("R1WB_DB_URL", pg_url)  # what every machine's UI and CLI are given
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    at.selectbox(key="new_preset").select("smoke").run()

    def key(name: str) -> str:
        return f"config_r1-zero_smoke_0_1_{name}"
    at.selectbox(key=key("launcher")).select("accelerate").run()
    at.number_input(key=key("num_processes")).set_value(2).run()
    at.number_input(key=key("num_machines")).set_value(2).run()
    at.text_input(key=key("main_process_ip")).input("10.0.0.5").run()
    assert not at.error, [e.value for e in at.error]
    code = "\n".join(c.value for c in at.code if "-m backend _worker" in c.value)
    first, second = [line for line in code.splitlines() if "-m backend _worker" in line]
    assert "--machine_rank 0 --main_process_port 29500 --main_process_ip 10.0.0.5" in first
    assert first.replace("--machine_rank 0", "--machine_rank 1") == second
    assert f"--db {shlex.quote(pg_url)} --stage STAGE_ID" in first


@pytest.mark.slow
def test_two_machines_join_by_the_shown_line_lose_one_and_resume(home, pg_url, tmp_path):
    import psutil

    wb = Workbench(pg_url)
    sets = {"grpo.launcher": "accelerate", "grpo.num_processes": "2",
            "grpo.num_machines": "2", "grpo.main_process_ip": "127.0.0.1",
            "grpo.main_process_port": str(free_port()), "grpo.steps": "12",
            "grpo.save_steps": "2"}
    run = wb.create_run("r1-zero", "smoke", sets=sets)
    grpo = run.stages[1]
    machines: list[subprocess.Popen] = []
    try:
        line, event_id = wait_for(lambda: join_line(wb, run.id), 300,
                                  what="machine 0 launched (its join line in the events)")
        # What the Stage page shows for machine 1 is what the runner logged.
        assert wb.launch_commands("grpo", wb.get_stage(grpo.id).config, stage_id=grpo.id,
                                  check=False)[1] == line
        assert "--machine_rank 1" in line and line.endswith(f"--stage {grpo.id}")
        machines.append(start_machine_1(line, tmp_path / "machine1.log"))
        wait_for(lambda: (s := wb.get_stage(grpo.id)).checkpoint and s.step >= 3, 600,
                 what="3 steps and a checkpoint on two machines")
        rank1 = [p for p in psutil.Process(machines[0].pid).children(recursive=True)
                 if p.environ().get("RANK") == "1"]
        assert len(rank1) == 1, "machine 1 runs global rank 1"
        os.kill(rank1[0].pid, signal.SIGKILL)
        # Rank 0 meets the dead peer at its next collective: the stage is interrupted, as when
        # a process on machine 0 dies, with gloo's connection error in its message.
        ended = wait_for(lambda: (s := wb.get_stage(grpo.id)).status in (
            "failed", "interrupted") and s, 180, what="the stage to end")
        assert ended.status == "interrupted", ended.error

        assert wb.resume(grpo.id).startswith("restarting from checkpoint at step")
        again, _ = wait_for(lambda: join_line(wb, run.id, after=event_id), 300,
                            what="machine 0 launched again")
        assert again == line  # the same line: the stage's id, port and address are fixed
        machines.append(start_machine_1(again, tmp_path / "machine1-again.log"))
        wait_for(lambda: wb.get_run(run.id).status in ("completed", "failed"), 900,
                 what="the resumed run to finish")
        assert wb.get_run(run.id).status == "completed", wb.get_stage(grpo.id).error
        done = wb.get_stage(grpo.id)
        assert done.step == 12 and done.host == socket.gethostname()
        assert "resuming from" in wb.log_tail(grpo.id, 3000)
        assert "is rank 1 of 2" in (tmp_path / "machine1-again.log").read_text()
        steps = wb.store.group_steps(grpo.id)
        assert steps == list(range(1, 13))
        assert all(len(g.rollouts) == 4 for step in steps
                   for g in wb.store.step_groups(grpo.id, step))
    finally:
        for proc in machines:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        wb.store.dispose()

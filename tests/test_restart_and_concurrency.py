"""The UI is only a window: restarting the Streamlit server never touches a running stage, and
two busy workers plus UI reads share one SQLite file without "database is locked"."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from backend.api import Workbench
from tests.conftest import ROOT, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_streamlit(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def healthy():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                          timeout=2).status == 200
        except OSError:
            return False
    wait_for(healthy, 60, what="streamlit to serve")
    return proc


def _page_text(url: str, expect) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(url)
        page.get_by_text(expect).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        browser.close()
    return text


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_stage_survives_a_streamlit_restart_and_shows_again(db_url, home):
    port = _free_port()
    server = _start_streamlit(port)
    wb = Workbench(db_url)
    # A small batch: the corpus (steps x batch texts) is tokenised before the first step,
    # which took 110 s at batch 32 on a loaded 2-core machine.
    run = wb.create_run("pretrain-base", "smoke", {"steps": "3000", "use_cache": "false",
                                                   "save_steps": "500", "batch_size": "8"})
    stage = wait_for(lambda: (s := wb.get_run(run.id).stages[0]).status == "running"
                     and s.step > 0 and s, 240, what="the stage to run")
    # A deep link is the fresh server's first request: the page must still come up inside
    # app.py's navigation (its titles), not as a lone file of pages/ (whose names it'd list).
    text = _page_text(f"http://127.0.0.1:{port}/stage?run={run.id}&stage={stage.id}", "running")
    assert "pre-train base model" in text
    assert "Group inspector" in text and "\ncommon\n" not in text

    os.killpg(server.pid, signal.SIGTERM)  # the UI goes away...
    server.wait(timeout=30)
    step = wb.get_stage(stage.id).step
    wait_for(lambda: wb.get_stage(stage.id).step > step + 5, 60, what="training to go on")
    assert wb.get_stage(stage.id).status == "running"
    assert wb.get_stage(stage.id).pid == stage.pid  # ...the same worker carries on

    server = _start_streamlit(port)  # ...and comes back showing the same stage, still live
    try:
        text = _page_text(f"http://127.0.0.1:{port}/stage?run={run.id}&stage={stage.id}",
                          re.compile(r"step \d+/3000"))
        assert "running" in text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        wb.stop(stage.id)
        wait_for(lambda: wb.get_stage(stage.id).status == "stopped", 60, what="stop")


WRITER = textwrap.dedent("""
    import sys, time, random
    from storage import Store, Group, Rollout
    store, stage_id, seconds = Store(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    end, step = time.time() + seconds, 0
    while time.time() < end:
        step += 1
        store.heartbeat(stage_id, step=step)
        store.add_metrics(stage_id, step, {f"m{i}": random.random() for i in range(20)})
        store.add_groups(stage_id, step, [Group(step, g, f"{g}+{g}=", str(2 * g), 0.5, 0.5, [
            Rollout(j, "<think>x</think><answer>1</answer>" * 4, {"accuracy": 1.0,
                    "format": 1.0}, 1.5, 0.1 * j, 40, False) for j in range(16)])
            for g in range(8)])
        store.add_event(1, f"step {step}", stage_id=stage_id)
    print(step)
""")


@pytest.mark.slow
def test_two_writers_and_ui_reads_for_60_seconds_never_lock(db_url):
    seconds = 60
    wb = Workbench(db_url)
    from storage import StageSpec
    run = wb.store.create_run("soak", "r1-zero", "smoke", {},
                              [StageSpec("grpo", "a", {}), StageSpec("grpo", "b", {})])
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(s.id), str(seconds)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for s in run.stages]
    reads, end = 0, time.time() + seconds
    while time.time() < end:
        # What the pages ask for while training runs.
        wb.list_runs()
        for s in run.stages:
            steps = wb.group_steps(s.id)
            if steps:
                wb.step_groups(s.id, steps[-1])
            wb.metric_series(s.id, "m3")
            wb.events(run.id)
        reads += 1
    results = [w.communicate(timeout=120) for w in writers]
    for w, (out, err) in zip(writers, results):
        assert w.returncode == 0, err[-2000:]
        assert "locked" not in err
        assert int(out) > 20, "each writer made progress"
    assert reads > 20
    for s in run.stages:
        assert len(wb.group_steps(s.id)) == int(results[run.stages.index(s)][0])

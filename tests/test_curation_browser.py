"""The Curation page in a real browser (headless Debian Chromium through Playwright) against a
real Streamlit server: keyboard shortcuts, row text that is HTML staying text, two tabs saving
the same row, the download being the CLI's export; and the R1 recipe run to its review point,
curated by hand, marked ready, and its SFT stage starting on the frozen snapshot."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from backend.api import Workbench
from tests.conftest import ROOT, wait_for
from tests.pages.test_curation_page import XSS, candidate, sample_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server() -> Iterator[str]:
    """``streamlit run app.py`` on a free port (the data home from the environment); its URL."""
    port = _free_port()
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
    try:
        wait_for(healthy, 60, what="streamlit to serve")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield chromium.new_context(viewport={"width": 1500, "height": 1400},
                                       accept_downloads=True)
        finally:
            chromium.close()


def open_curation(context, url: str, query: str = ""):
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs  # an alert() from row text would land here
    page.goto(f"{url}/curation{query}")
    page.get_by_text("Queue").first.wait_for(timeout=90_000)
    return page


def settle(page) -> None:
    """Wait until Streamlit has finished rerunning the script."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)
    page.wait_for_timeout(200)


def click(page, label: str | re.Pattern) -> None:
    """Click the button labelled ``label`` (its icon and shortcut hint aside)."""
    buttons = page.locator("button")
    if isinstance(label, str):
        buttons = buttons.filter(has=page.get_by_text(label, exact=True))
    else:
        buttons = buttons.filter(has_text=label)
    buttons.first.click()
    settle(page)


def set_text(page, label: str, text: str, commit: str = "Enter") -> None:
    box = page.get_by_label(label, exact=True).first
    box.fill(text)
    box.press(commit)
    settle(page)


def focus_view(page) -> None:
    page.get_by_text("Focus", exact=True).first.click()
    settle(page)
    page.get_by_text("in this queue").first.wait_for(timeout=30_000)


def test_keys_hostile_text_two_tabs_and_download(db_url, home, tmp_path):
    wb = Workbench(db_url)
    rows = sample_rows()
    rows[0]["completion"] = f"<think>{XSS} 3+4</think><answer>7</answer>"
    ds = wb.store.create_dataset("browser", "rejection", rows)
    first = wb.curation_rows(ds)[0]
    with app_server() as url, browser() as context:
        page = open_curation(context, url, f"?dataset={ds}")
        focus_view(page)
        # Row text that is HTML is shown as text and runs nothing.
        page.get_by_text('<script>document.title="pwned"</script>', exact=False).first \
            .wait_for(timeout=10_000)
        assert page.title() != "pwned" and page.dialogs == []

        # Keyboard: A accepts (and moves on), X rejects, J / K move without changing.
        page.keyboard.press("a")
        wait_for(lambda: wb.get_row(first.id).status == "accepted", 30, what="A to accept")
        settle(page)
        page.get_by_text("Row 1", exact=False).first.wait_for(timeout=10_000)
        page.keyboard.press("x")
        wait_for(lambda: wb.curation_rows(ds)[1].status == "rejected", 30, what="X to reject")
        settle(page)
        page.keyboard.press("j")
        settle(page)
        page.get_by_text("Row 3", exact=False).first.wait_for(timeout=10_000)
        page.keyboard.press("k")
        settle(page)
        page.get_by_text("Row 2", exact=False).first.wait_for(timeout=10_000)
        assert wb.queue_counts(ds)["pending"] == 10  # J and K changed nothing

        # Typing in the editor is not a shortcut.
        row2 = wb.curation_rows(ds)[2]
        page.get_by_text("Edit this row").first.click()
        editor = page.get_by_label("Response", exact=True).first
        editor.click()
        editor.press("End")
        editor.type(" ax")
        page.wait_for_timeout(1000)
        assert wb.get_row(row2.id).status == "pending"

        # A second tab saves the same row first: this tab's save is refused, newer text shown.
        other = open_curation(context, url, f"?dataset={ds}")
        focus_view(other)
        other.get_by_text("Row 2", exact=False).first.wait_for(timeout=10_000)
        other.get_by_text("Edit this row").first.click()
        set_text(other, "Response", "second tab's text <answer>7</answer>", commit="Tab")
        click(other, "Save edit")
        wait_for(lambda: wb.get_row(row2.id).completion.startswith("second tab"), 30,
                 what="the second tab's save")
        click(page, "Save edit")
        page.get_by_text("changed by someone else", exact=False).first.wait_for(timeout=30_000)
        assert "second tab's text" in page.inner_text("body")
        assert wb.get_row(row2.id).completion.startswith("second tab")
        other.close()

        # The download is byte for byte the CLI's export of the same rows.
        page.get_by_role("tab", name="Ready, snapshots, export").click()
        settle(page)
        with page.expect_download(timeout=60_000) as download:
            click(page, "Download jsonl")
        downloaded = Path(download.value.path()).read_bytes()
    cli = subprocess.run([sys.executable, "-m", "backend", "export-dataset", str(ds), "--out",
                          "cli.jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert downloaded == (home / "exports" / "cli.jsonl").read_bytes()
    assert downloaded.count(b"\n") == 1  # the one accepted row


def test_r1_waits_for_review_then_sft_trains_on_the_curated_snapshot(db_url, home):
    """Run the r1 recipe (smoke sizes) to its review point, then curate in the browser, mark
    the dataset ready and see the SFT stage start on a snapshot of exactly those rows."""
    wb = Workbench(db_url)
    run = wb.create_run("r1", "smoke")
    try:
        sft = next(s for s in run.stages if s.key == "sft")
        wait_for(lambda: wb.get_stage(sft.id).status in ("waiting", "failed")
                 or any(s.status == "failed" for s in wb.get_run(run.id).stages),
                 900, interval=2, what="r1 to reach the review point")
        assert wb.get_stage(sft.id).status == "waiting", [
            (s.key, s.status, s.error) for s in wb.get_run(run.id).stages]
        with app_server() as url, browser() as context:
            curate_and_mark_ready(context, url, wb, sft.id)
    finally:
        wb.delete_run(run.id)  # kills the runner and whichever stage is still going


def curate_and_mark_ready(context, url: str, wb: Workbench, sft_id: int) -> None:
    """What a reviewer does: edit a row and accept it, accept rows by a filter, reject some
    of those by another filter, mark the dataset ready; then SFT trains on a snapshot."""
    ds = wb.get_stage(sft_id).summary["waiting_for_dataset"]
    rows = wb.curation_rows(ds)
    page = open_curation(context, url)  # opens on the dataset being waited for
    assert page.url.endswith(f"?dataset={ds}")
    assert "waiting for this review" in page.inner_text("body")

    # Edit the first row of the rejected queue by hand, then accept it.
    page.get_by_text(re.compile(r"^Rejected · \d+$")).first.click()
    settle(page)
    focus_view(page)
    target = wb.curation_rows(ds, wb.make_filter(status="rejected"))[0]
    fixed = f"<think>worked by hand</think>\n<answer>{target.answer}</answer>"
    page.get_by_text("Edit this row").first.click()
    set_text(page, "Response", fixed, commit="Tab")
    click(page, "Accept")
    wait_for(lambda: wb.get_row(target.id).status == "accepted", 30,
             what="the edited row accepted")
    edited = wb.get_row(target.id)
    assert edited.completion == fixed and edited.edited

    # Accept every first candidate by a filter (the confirmation shows the count).
    set_text(page, "Conditions", "rollout=0")
    click(page, re.compile(r"^Accept all \d+"))
    expected = sum(1 for r in rows if r.meta.get("rollout") == 0 and r.id != target.id)
    page.get_by_text(f"{expected} would change (accept)", exact=False).first \
        .wait_for(timeout=30_000)
    click(page, f"Yes, accept {expected} rows")
    wait_for(lambda: wb.queue_counts(ds)["accepted"] == expected + 1, 30,
             what="the bulk accept")

    # Reject, by another filter, the accepted rows of two prompts.
    page.get_by_text(re.compile(r"^Accepted · \d+$")).first.click()
    settle(page)
    set_text(page, "Conditions", "prompt_index=1..2")
    click(page, re.compile(r"^Reject all \d+"))
    rejecting = len(wb.curation_rows(ds, wb.make_filter(status="accepted",
                                                        where=["prompt_index=1..2"])))
    assert rejecting > 0
    click(page, f"Yes, reject {rejecting} rows")
    wait_for(lambda: wb.queue_counts(ds)["accepted"] == expected + 1 - rejecting, 30,
             what="the bulk reject")
    assert target.id in {r.id for r in wb.curation_rows(ds, wb.make_filter(
        status="accepted"))}

    click(page, "Mark ready for training")
    wait_for(lambda: wb.get_dataset(ds).ready, 30, what="the dataset marked ready")
    # SFT leaves "waiting" and freezes exactly the accepted rows.
    wait_for(lambda: wb.snapshots(ds), 120, interval=1, what="the SFT snapshot")
    snap = wb.snapshots(ds)[0]
    frozen = wb.snapshot_rows(snap.id)
    assert snap.stage_id == sft_id
    # Exactly the accepted rows (the stage itself rejects, on the record, any whose prompt is
    # a held-out problem before it freezes them).
    assert [r.row_id for r in frozen] == [
        r.id for r in wb.curation_rows(ds, wb.make_filter(status="accepted"))]
    if wb.get_row(target.id).status == "accepted":
        assert fixed in {r.completion for r in frozen}
    wait_for(lambda: wb.get_stage(sft_id).status in ("running", "completed"), 60,
             what="SFT to train")
    page.reload()
    page.get_by_text("Queue").first.wait_for(timeout=90_000)
    page.get_by_role("tab", name="Ready, snapshots, export").click()
    # Shown in full in a code block (the snapshot table's cell, drawn on a canvas, holds
    # a hidden copy that comes first in the page).
    page.locator("[data-testid='stCode']", has_text=snap.content_hash).first.wait_for(
        timeout=30_000)

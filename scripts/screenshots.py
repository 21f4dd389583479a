"""Take the README's screenshots from a real store: starts the app on it, opens each page in
headless Chromium (Debian's, never a downloaded one) and saves full-page PNGs.

    R1WB_HOME=/path/to/data .venv/bin/python scripts/screenshots.py --run 2 --stage 5

Pages: runs, stage, training (Live training), groups (Group inspector), pipeline (the run's
stage graph), curation (``--dataset``), compare (``--compare`` runs, default: the newest
evaluated), playground (``--prompt`` typed and generated, then ``--k`` answers sampled, on the
``--stage``'s model). ``--only`` picks some.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = {"runs": ("", "Runs"), "stage": ("stage", "Log"), "training": ("training", "Live steering"),
         "groups": ("groups", "Groups of step"), "pipeline": ("pipeline", "Pipeline"),
         "curation": ("curation", "Pending"), "compare": ("compare", "Training curves"),
         "playground": ("playground", "Your prompt"), "evaluation": ("evaluation", "Problems")}


# Streamlit loads a chart's or a table's code on first use (its Plotly bundle is ~4.7 MB) and
# shows a grey skeleton until then; on a busy 2-core machine that took longer than a fixed
# wait, and the Stage page's Metrics and Recent events came out empty. A page counts as drawn
# when no skeleton is left, every Plotly chart has its SVG, every table its canvas, and no
# element is greyed out by a rerun in progress.
SETTLED = """() => {
  const all = (sel) => [...document.querySelectorAll(sel)];
  return all('[data-testid="stSkeleton"]').length === 0
    && all('[data-testid="stPlotlyChart"]').every((c) => c.querySelector('.main-svg'))
    && all('[data-testid="stDataFrame"]').every((c) => c.querySelector('canvas'))
    && all('[data-stale="true"]').length === 0;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                      timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not start")


def ask_playground(page, prompt: str, k: int) -> None:
    """Type the prompt, stream one answer, then sample k (the model process loads on the
    first question: up to minutes on a loaded machine)."""
    page.get_by_label("Your prompt").fill(prompt)
    page.get_by_label("k", exact=True).fill(str(k))
    page.get_by_label("k", exact=True).press("Enter")
    time.sleep(2)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("The exact prompt the model saw").first.wait_for(timeout=300_000)
    page.get_by_role("button", name=f"Sample {k}").click()
    page.get_by_text(f"{k} sampled answers").first.wait_for(timeout=300_000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument("--stage", type=int, required=True, help="a GRPO stage of the run")
    ap.add_argument("--step", type=int, default=None, help="inspector step (default: latest)")
    ap.add_argument("--dataset", type=int, default=None, help="curation page's dataset")
    ap.add_argument("--compare", default=None, help="compare page's runs, e.g. 2,5")
    ap.add_argument("--prompt", default="37+48=", help="what the playground is asked")
    ap.add_argument("--k", type=int, default=8, help="playground answers sampled")
    ap.add_argument("--only", nargs="*", default=list(PAGES))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=2200,
                    help="viewport height: Streamlit scrolls inside the page, so a full-page "
                         "screenshot shows only the viewport; a tall one shows it all")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = serve(port)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(180_000)  # a loaded machine: navigation, fonts, clicks
            for name in args.only:
                path, expect = PAGES[name]
                query = f"?run={args.run}&stage={args.stage}"
                if name == "groups" and args.step is not None:
                    query += f"&step={args.step}"
                if name == "curation" and args.dataset is not None:
                    query = f"?dataset={args.dataset}"
                if name == "compare":
                    query = f"?runs={args.compare}" if args.compare else ""
                if name == "playground":
                    query = f"?run={args.run}&stage={args.stage}"
                page.goto(f"http://127.0.0.1:{port}/{path}{query}")
                try:
                    page.get_by_text(expect).first.wait_for(timeout=90_000)
                except Exception:
                    page.screenshot(path=str(args.out / f"{name}-FAILED.png"), full_page=True)
                    raise
                if name == "playground":
                    ask_playground(page, args.prompt, args.k)
                if name in ("compare", "training"):
                    page.locator(".js-plotly-plot .main-svg").first.wait_for()
                page.wait_for_function(SETTLED, polling=250)
                time.sleep(2)  # plotly draws its traces after its SVG is there
                page.screenshot(path=str(args.out / f"{name}.png"))
                print(f"wrote {args.out / f'{name}.png'}")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())

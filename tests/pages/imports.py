"""Shared by the page tests: which training libraries rendering pages pulls in."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def training_libs_imported(run_id: int, pages: list[str]) -> subprocess.CompletedProcess:
    """Render ``pages`` (opened on ``?run=run_id``) through AppTest in a fresh interpreter;
    its last stdout line lists which of torch / transformers / trl got imported."""
    code = ("import sys\n"
            "from streamlit.testing.v1 import AppTest\n"
            f"for page in {pages!r}:\n"
            f"    at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
            f"    at.query_params['run'] = '{run_id}'\n"
            "    at.switch_page(page).run()\n"
            "    assert not at.exception, at.exception\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(APP).parent)

"""Helpers shared by the benchmarks: percentiles, load average, and rewriting one
benchmark's own section of docs/benchmarks.md (between its markers) without touching the
rest of the file, so each benchmark can be re-run on its own."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` with linear interpolation."""
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def write_section(name: str, heading: str, body: str, intro: str = "") -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in
    docs/benchmarks.md; the first time, append a new section with ``heading`` and ``intro``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + (f"{intro}\n\n" if intro else "") \
            + f"{block}\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)

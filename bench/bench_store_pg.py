"""The run store on PostgreSQL beside SQLite: the same measurements as bench_store.py, on both
databases, one after the other in one run (same machine, same load).

    .venv/bin/python bench/bench_store_pg.py [--rollouts 100000] [--steps 1000] [--url URL]

(a) ``Store.add_groups`` inserts, one 64x16 GRPO step per call; (b) ``step_groups`` and
``metric_series`` on a filled stage, median and p95 of ``--calls`` calls from a freshly opened
Store; (c) ``Store.stage_tick``, a worker's periodic round trip (heartbeat, 3 buffered metric
rows, pending commands), median and p95. PostgreSQL: ``--url`` (a server whose user may CREATE
DATABASE; a new database is made and dropped), else a throwaway server started from this
machine's PostgreSQL binaries with PostgreSQL's default durability settings (fsync on, every
commit flushed), reached over a unix socket: a server on another machine adds a network round
trip to every call. SQLite: a file in WAL mode with synchronous=NORMAL, as the store sets it.
Written into docs/benchmarks.md between this benchmark's markers (``--no-docs`` skips that).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.bench_store import (BIG_G, BIG_GROUPS, Synth, bench_inserts, bench_queries,  # noqa: E402
                               fill, machine, new_stage)
from bench.common import DOCS, load, pct, write_section  # noqa: E402
from storage import Store  # noqa: E402

SECTION_HEADING = "## Store on PostgreSQL beside SQLite (issue [7])"
INTRO = ("`bench/bench_store_pg.py`: the store benchmark's insert and query measurements plus "
         "a worker's tick, on a SQLite file and on a PostgreSQL server, in one run.")


def bench_tick(url: str, calls: int) -> list[float]:
    store = Store(url)
    sid = new_stage(store)
    out = []
    for step in range(calls + 5):
        t0 = time.perf_counter()
        store.stage_tick(sid, step, calls + 5, [(step, {"loss": 1.0, "reward": 0.5,
                                                        "kl": 0.01})])
        if step >= 5:  # the first ticks open the pool
            out.append((time.perf_counter() - t0) * 1000)
    store.dispose()
    return out


def measure(label: str, url: str, workdir: Path, args, synth: Synth) -> dict:
    print(f"[{label}] (a) inserting {args.insert_steps} steps of {BIG_GROUPS}x{BIG_G} ...",
          flush=True)
    ins = bench_inserts(workdir, args.insert_steps, synth, url=url)
    print(f"    {ins['rate']:,.0f} rollouts/s", flush=True)
    print(f"[{label}] (b) filling {args.rollouts:,} rollouts over {args.steps:,} steps ...",
          flush=True)
    # PostgreSQL: one database for (a), (b) and (c), each its own stage (queries filter by it).
    query_url = url if url.startswith("postgresql") else f"sqlite:///{workdir / 'query.db'}"
    filled = fill(workdir / "query.db", args.rollouts, args.steps,
                  min(args.big_steps, args.steps), args.metrics, synth, url=query_url)
    q = bench_queries(workdir / "query.db", filled, args.steps, args.calls, url=query_url)
    print(f"[{label}] (c) {args.calls} worker ticks ...", flush=True)
    tick = bench_tick(url, args.calls)
    return {"insert": ins, "filled": filled, "q": q, "tick": tick, "load": load()}


def render(mi: dict, results: dict, args, pg_where: str) -> str:
    def ms(values):
        return f"{statistics.median(values):.1f} / {pct(values, 0.95):.1f}"

    rows = [("(a) add_groups, rollouts/s (64x16 per call)",
             lambda r: f"{r['insert']['rate']:,.0f}"),
            ("(b) fill: add_groups + 20 metrics per step, s",
             lambda r: f"{r['filled']['fill_s']:.0f}"),
            ("(b) step_groups, ordinary step, ms median / p95", lambda r: ms(r["q"]["small"])),
            ("(b) step_groups, 64x16 step, ms median / p95", lambda r: ms(r["q"]["big"])),
            ("(b) metric_series over all steps, ms median / p95",
             lambda r: ms(r["q"]["series"])),
            ("(c) stage_tick (worker round trip), ms median / p95", lambda r: ms(r["tick"])),
            ("load average (1/5/15 min) after", lambda r: r["load"])]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{mi.get('cpu', '?')} ({mi.get('cpus', '?')} CPUs); "
        f"{args.rollouts:,} rollouts over {args.steps:,} steps in the query stage, "
        f"{args.insert_steps} timed insert steps, {args.calls} calls per query. "
        f"PostgreSQL: {pg_where}. SQLite: a file, WAL, synchronous=NORMAL.",
        "",
        "| measurement | SQLite | PostgreSQL |",
        "| --- | ---: | ---: |",
    ]
    for name, cell in rows:
        lines.append(f"| {name} | {cell(results['sqlite'])} | {cell(results['postgresql'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None,
                    help="a PostgreSQL server's URL whose user may create databases "
                         "(default: start a throwaway one)")
    ap.add_argument("--rollouts", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--insert-steps", type=int, default=20)
    ap.add_argument("--big-steps", type=int, default=8)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)

    mi = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench_store_pg_"))
    server = None
    admin_url = args.url
    if admin_url is None:
        from tests.test_postgres import ThrowawayServer, _bindir

        bindir = _bindir()
        if bindir is None:
            print("no PostgreSQL binaries (initdb) here: install postgresql or pass --url",
                  file=sys.stderr)
            return 2
        server = ThrowawayServer(bindir)
        admin_url = server.start(durable=True)
        pg_where = "a local server (Debian's package, default settings), over a unix socket"
    else:
        pg_where = f"{make_url(admin_url).render_as_string(hide_password=True)}"
    admin = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    database = f"r1wb_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        pg_url = make_url(admin_url).set(database=database).render_as_string(
            hide_password=False)
        results = {}
        for label, url in (("sqlite", f"sqlite:///{workdir / 'insert.db'}"),
                           ("postgresql", pg_url)):
            results[label] = measure(label, url, workdir, args, Synth())
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    body = render(mi, results, args, pg_where)
    print("\n" + body)
    if not args.no_docs:
        write_section("bench_store_pg", SECTION_HEADING, body, INTRO)
        print(f"\nwritten to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The store on a real PostgreSQL server: migrations, every store behaviour the SQLite tests
check, what PostgreSQL does differently (locks, sequences, rights), the faults a user meets (a
server that does not answer, a missing driver), and one smoke run end to end.

The server: ``R1WB_TEST_PG_URL`` (a URL whose user may CREATE DATABASE) when set; otherwise a
throwaway server started here from the PostgreSQL binaries on this machine (``./test.sh``
installs Debian's ``postgresql`` when run as root): ``initdb`` into a temporary folder, listening
only on a unix socket in that folder (no port for parallel test runs to fight over), stopped and
deleted when the session ends, or by its guard process when pytest is killed (even kill -9);
a server whose guard died too is stopped by the next session (``stop_stale_servers``). Without binaries or driver these tests skip with the reason;
under CI (env ``CI`` set) they fail instead, so CI never passes without PostgreSQL tested.

Tests share one database migrated to head, emptied after each test (every table truncated,
ids restarted, leftover connections ended): a fresh database per test took ~2 s to create on
a loaded 2-core machine, emptying takes a fraction of that. Tests of migrations get a database
of their own.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage import EditConflict, Store, StoreError
from tests.storage import test_curation_store, test_store

ROOT = Path(__file__).resolve().parent.parent
URL_ENV = "R1WB_TEST_PG_URL"


# ------------------------------------------------------------------------------ the server
def _in_ci() -> bool:
    return (os.environ.get("CI") or "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"CI is set but PostgreSQL cannot be tested: {reason}")
    pytest.skip(reason)


def _bindir() -> Optional[Path]:
    """The folder of initdb/pg_ctl: from PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # Debian links them from /usr/local/bin or so
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


SERVER_PREFIX = "r1wb-pg-"
OWNER_FILE = "owner"  # "PID CREATE_TIME" of the process that started the server

# The guard started beside each server, in a session of its own (a kill of the test's process
# group spares it): it blocks reading a pipe whose only writer is the process that started
# the server. A byte means "stopped as planned"; end of file means that process is gone (a
# killed pytest, even kill -9, before its session teardown ran): then it stops the server and
# deletes its folder. argv: read fd, folder, the pg_ctl stop command.
_GUARD = """
import os, shutil, subprocess, sys
fd, folder, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    told = os.read(fd, 1)
except OSError:
    told = b""
if not told:
    subprocess.run(stop, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)
"""


def _process_id() -> str:
    """This process as ``PID CREATE_TIME``: a pid alone may be reused by another process."""
    import psutil

    return f"{os.getpid()} {psutil.Process().create_time():.3f}"


def _owner_alive(owner: str) -> bool:
    import psutil

    try:
        pid, created = owner.split()
        return abs(psutil.Process(int(pid)).create_time() - float(created)) < 0.01
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _as_postgres() -> list[str]:
    """The command prefix that runs a server binary as the ``postgres`` user when we are root
    (PostgreSQL refuses to run as root); empty otherwise."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if not runuser:
        raise RuntimeError("running as root, and runuser is missing to start "
                           "PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--"]


def stop_stale_servers(bindir: Path, parent: Optional[Path] = None) -> list[Path]:
    """Stop and delete the throwaway servers in ``parent`` (the temporary folder) whose owner
    process is gone: what a killed test run left when its guard could not clean up either.
    A folder whose owner still runs (a test session in progress) or that names no owner is
    left alone. Returns the folders removed."""
    removed = []
    for folder in sorted(Path(parent or tempfile.gettempdir()).glob(SERVER_PREFIX + "*")):
        try:
            owner = (folder / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if _owner_alive(owner):
            continue
        if (folder / "data" / "postmaster.pid").exists():
            subprocess.run(_as_postgres() + [str(bindir / "pg_ctl"), "-D", str(folder / "data"),
                                             "-m", "immediate", "stop"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class ThrowawayServer:
    """initdb + pg_ctl start in a temporary folder; as the ``postgres`` user when we are root
    (PostgreSQL refuses to run as root). It does not outlive the process that started it: a
    guard process stops it when that process dies without calling ``stop`` (``_GUARD``), and
    ``stop_stale_servers`` removes what a guard could not."""

    def __init__(self, bindir: Path, guard: bool = True):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix=SERVER_PREFIX))
        (self.dir / OWNER_FILE).write_text(_process_id())
        self.data = self.dir / "data"
        self.guard = guard
        self._guard_pipe: Optional[int] = None  # our end: written or closed when we stop
        self.as_user = _as_postgres()
        if self.as_user:
            try:
                shutil.chown(self.dir, "postgres")
            except LookupError:
                raise RuntimeError("running as root and there is no postgres user to run "
                                   "the server as (install Debian's postgresql package)")
        os.chmod(self.dir, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> None:
        # Output to a file, not a pipe: the server pg_ctl leaves running must not hold our pipe.
        out = self.dir / "commands.log"
        with open(out, "ab") as log:
            done = subprocess.run(self.as_user + list(args), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=self.dir, timeout=timeout)
        if done.returncode != 0:
            tail = out.read_text(errors="replace")[-2000:]
            server_log = self.dir / "server.log"
            if server_log.exists():
                tail += "\n--- server.log ---\n" + server_log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}):\n{tail}")

    def _start_guard(self) -> None:
        read_end, self._guard_pipe = os.pipe()  # both ends non-inheritable (PEP 446)
        try:
            subprocess.Popen(
                [sys.executable, "-c", _GUARD, str(read_end), str(self.dir), *self.as_user,
                 str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                pass_fds=(read_end,), start_new_session=True, cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(read_end)

    def start(self, durable: bool = False) -> str:
        """Returns the URL of its ``postgres`` database. ``durable``: PostgreSQL's default
        fsync and commit settings (for benchmarks) instead of the fast throwaway ones."""
        if self.guard:  # before initdb: a kill during it leaves no folder behind either
            self._start_guard()
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale")
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' "
                   f"-c max_connections=200")
        if not durable:  # the data dies with the test session anyway
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-o", options, "-w", "-t", "120", "start",
                  timeout=180)
        return f"postgresql+psycopg://postgres@/postgres?host={self.dir}"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "stop", timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._guard_pipe is not None:  # stopped as planned: the guard just exits
                os.write(self._guard_pipe, b"s")
                os.close(self._guard_pipe)
                self._guard_pipe = None


class Cluster:
    """A PostgreSQL server we may create databases on."""

    def __init__(self, admin_url: str):
        self.admin_url = make_url(admin_url)
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.shared: Optional[str] = None

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create(self, template: str = "template0") -> str:
        name = f"r1wb_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:  # FORCE: a test's leftover workers may still be in
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def migrated(self) -> str:
        """The shared database at the head revision, empty (see the module's docstring)."""
        if self.shared is None:
            name = self.create()
            Store(self.url(name)).dispose()
            self.shared = name
        return self.shared

    def empty(self, name: str) -> None:
        """Every table of ``name`` emptied and its ids restarted (alembic_version kept)."""
        engine = create_engine(self.url(name), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            tables = conn.execute(text(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = "
                "current_schema() AND tablename <> 'alembic_version'")).scalars().all()
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()


@pytest.fixture(scope="session")
def pg_cluster():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable('the driver is missing: pip install "psycopg[binary]" '
                     "(requirements.txt has it)")
    server = None
    admin_url = os.environ.get(URL_ENV)
    if not admin_url:
        bindir = _bindir()
        if bindir is None:
            _unavailable("no PostgreSQL server binaries (initdb) on this machine: as root, "
                         "./test.sh installs Debian's postgresql; or set R1WB_TEST_PG_URL")
        try:
            stop_stale_servers(bindir)  # left by an earlier run that was killed
            server = ThrowawayServer(bindir)
            admin_url = server.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            if server is not None:
                shutil.rmtree(server.dir, ignore_errors=True)
            _unavailable(f"could not start a throwaway PostgreSQL server: {exc}")
    cluster = Cluster(admin_url)
    try:
        yield cluster
    finally:
        if server is not None:
            cluster.admin.dispose()
            server.stop()
        else:  # someone else's server: leave it as we found it
            if cluster.shared:
                cluster.drop(cluster.shared)
            cluster.admin.dispose()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    name = pg_cluster.migrated()
    yield pg_cluster.url(name)
    pg_cluster.empty(name)


@pytest.fixture
def empty_pg_url(pg_cluster) -> str:
    """A database with no tables at all (what a new team database looks like)."""
    name = pg_cluster.create()
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


@pytest.fixture
def store(pg_url) -> Store:
    st = Store(pg_url)
    yield st
    st.dispose()


# ------------------------------------------------------------------------------ the SQLite tests, again
# Every store test of tests/storage that takes the ``store`` fixture runs here a second time,
# on PostgreSQL (the ``store`` fixture above), so a new store behaviour is tested on both
# databases without being written twice. Left out, with the reason:
SQLITE_ONLY = {
    "test_check_writable_on_a_writable_store": "looks for its probe table in sqlite_master "
                                               "(the PostgreSQL check is tested below)",
}
for _module in (test_store, test_curation_store):
    for _name, _test in vars(_module).items():
        if (_name.startswith("test_") and inspect.isfunction(_test)
                and "store" in inspect.signature(_test).parameters
                and _name not in SQLITE_ONLY):
            globals()[_name] = _test
del _module, _name, _test

make_run, make_group, count = test_store.make_run, test_store.make_group, test_store.count


def test_without_postgresql_these_tests_skip_but_fail_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no initdb here"):
        _unavailable("no initdb here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match="CI is set but PostgreSQL cannot be tested: no initdb here"):
        _unavailable("no initdb here")


# ------------------------------------------------------------------------------ no leaked server
@pytest.fixture
def bindir() -> Path:
    found = _bindir()
    if found is None:
        _unavailable("no PostgreSQL server binaries (initdb) on this machine")
    return found


def _postmaster_pid(folder: Path) -> int:
    return int((folder / "data" / "postmaster.pid").read_text().split()[0])


def _gone(pid: int) -> bool:
    import psutil

    try:  # a server process that exited but is not yet reaped counts as gone
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_leftover(folder: Path, pid: Optional[int]) -> None:
    """What a failing test leaves: the server killed, its folder deleted."""
    if pid is not None and not _gone(pid):
        os.kill(pid, 9)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_killed_test_process_does_not_leave_its_server_running(bindir):
    # kill -9 of the process that started the server: no teardown runs, only the guard.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pathlib import Path\n"
         "from tests.test_postgres import ThrowawayServer\n"
         "server = ThrowawayServer(Path(sys.argv[1]))\n"
         "server.start()\n"
         "print(server.dir, flush=True)\n"
         "time.sleep(600)\n", str(bindir)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    folder = Path(child.stdout.readline().strip())
    pid = None
    try:
        assert folder.name.startswith(SERVER_PREFIX)
        pid = _postmaster_pid(folder)
        assert not _gone(pid)
        child.kill()
        child.wait()
        deadline = time.time() + 60
        while time.time() < deadline and not (_gone(pid) and not folder.exists()):
            time.sleep(0.2)
        assert _gone(pid), "the server outlived the killed process that started it"
        assert not folder.exists()
    finally:
        child.kill()
        _kill_leftover(folder, pid)


@pytest.mark.slow
def test_a_server_left_by_a_dead_owner_is_stopped_when_the_next_session_starts(bindir):
    # The guard killed too (e.g. the whole machine's processes): the next session cleans up.
    server = ThrowawayServer(bindir, guard=False)
    pid = None
    try:
        server.start()
        pid = _postmaster_pid(server.dir)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        import psutil
        owner = f"{dead.pid} {psutil.Process(dead.pid).create_time():.3f}"
        dead.wait()
        (server.dir / OWNER_FILE).write_text(owner)
        assert server.dir in stop_stale_servers(bindir)
        assert _gone(pid) and not server.dir.exists()
    finally:
        _kill_leftover(server.dir, pid)


def test_the_stale_check_leaves_running_sessions_and_unknown_folders_alone(bindir, tmp_path):
    live = tmp_path / f"{SERVER_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(_process_id())  # this test session: still running
    unknown = tmp_path / f"{SERVER_PREFIX}unknown"  # no owner named: cannot tell, kept
    unknown.mkdir()
    dead = tmp_path / f"{SERVER_PREFIX}dead"  # a pid that is not running (above pid_max)
    dead.mkdir()
    (dead / OWNER_FILE).write_text("4194305 1.000")
    assert stop_stale_servers(bindir, tmp_path) == [dead]
    assert live.exists() and unknown.exists() and not dead.exists()


# ------------------------------------------------------------------------------ schema
def test_a_new_database_is_migrated_to_exactly_the_models_schema(empty_pg_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.models import Base

    st = Store(empty_pg_url)
    with st.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() \
            == [test_store.head_revision()]
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    st.dispose()


def test_two_clients_opening_a_new_database_at_once_both_work(empty_pg_url):
    # e.g. the UI on one machine and a worker on another, first day: one migrates, the other
    # waits for it, and neither fails on a table the other just made.
    stores, errors = [], []

    def open_store():
        try:
            stores.append(Store(empty_pg_url))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    run = make_run(stores[0])
    assert [r.id for r in stores[2].list_runs()] == [run.id]
    for st in stores:
        st.dispose()


def test_upgrade_from_the_first_schema_keeps_runs_and_curation_edits(empty_pg_url):
    # 0001 -> head with data in it, on PostgreSQL's own ALTERs (SQLite rebuilds tables
    # instead); 0005 gives old edits explicit ids, so the id sequence must move past them.
    from alembic import command

    from storage.migrate import alembic_config

    engine = create_engine(empty_pg_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("INSERT INTO runs (id, name, recipe, preset, config_json, created_at, "
                          "deleted) VALUES (1, 'old run', 'pretrain-base', 'tiny', '{}', "
                          "'2026-11-01 10:00:00', false)"))
        conn.execute(text("SELECT setval(pg_get_serial_sequence('runs', 'id'), 1)"))
        conn.execute(text("INSERT INTO datasets (id, name, kind, created_at) VALUES "
                          "(1, 'rs', 'rejection', '2026-11-01 10:00:00')"))
        for i, status in enumerate(["kept", "rejected"]):
            conn.execute(text(
                "INSERT INTO dataset_rows (id, dataset_id, row_index, prompt, completion, "
                "status, meta_json, updated_at) VALUES (:id, 1, :i, :p, 'c', :s, '{}', "
                "'2026-11-01 10:00:00')"), {"id": i + 1, "i": i, "p": f"q{i}", "s": status})
        for field, old, new in [("completion", "orig", "c"), ("status", "kept", "rejected")]:
            conn.execute(text("INSERT INTO row_edits (row_id, field, old_value, new_value, at, "
                              "undone) VALUES (:row, :f, :o, :n, '2026-11-01 10:01:00', false)"),
                         {"row": 1 if field == "completion" else 2, "f": field, "o": old,
                          "n": new})
    engine.dispose()

    st = Store(empty_pg_url)
    assert st.get_run(1).name == "old run"
    assert [r.status for r in st.dataset_rows(1)] == ["accepted", "rejected"]
    assert st.undo_last_edit(1) == "row 1: status restored"
    # New actions and runs get fresh ids after the old ones (the sequences were moved on).
    st.edit_row(st.dataset_rows(1)[0].id, "completion", "new")
    assert st.curation_history(1)[0].id == 3
    st.delete_run(1)
    assert st.create_run("new", "pretrain-base", "tiny", {}, []).id == 2  # never reused
    st.dispose()


def test_deleted_run_ids_are_not_reused(store):
    first = make_run(store, "a")
    store.delete_run(first.id)
    assert make_run(store, "b").id == first.id + 1


# ------------------------------------------------------------------------------ behaviour
def test_worker_tick_reaches_a_store_on_another_machine(pg_url):
    worker, ui = Store(pg_url), Store(pg_url)  # two engines: two "machines"
    stage_id = make_run(worker).stages[0].id
    command_id = ui.add_command(stage_id, "set", {"temperature": 0.7})
    pending = worker.stage_tick(stage_id, 3, 10, [(1, {"loss": 1.5}), (2, {"loss": 1.25}),
                                                   (3, {"loss": 1.0, "reward": None})])
    assert [(c.id, c.payload) for c in pending] == [(command_id, {"temperature": 0.7})]
    stage = ui.get_stage(stage_id)
    assert (stage.step, stage.total_steps) == (3, 10) and stage.heartbeat_at is not None
    assert ui.metric_series(stage_id, "loss") == ([1, 2, 3], [1.5, 1.25, 1.0])
    worker.mark_command_applied(command_id, 3, "ok")
    assert worker.stage_tick(stage_id, 4, 10, []) == []
    version = ui.stage_version(stage_id)
    assert (version.step, version.metric_rows, version.commands_applied) == (4, 3, 1)
    worker.add_groups(stage_id, 4, [make_group(0), make_group(1)])
    groups = ui.step_groups(stage_id, 4)
    assert [len(g.rollouts) for g in groups] == [4, 4]
    assert groups[0].rollouts[3].truncated is True and groups[0].rollouts[0].truncated is False
    worker.dispose(), ui.dispose()


def test_concurrent_curation_edits_queue_on_the_dataset_lock(pg_url):
    # Two reviewers hammer one dataset from two machines: every change is kept, each as its
    # own undoable action, and versions count every change exactly once.
    a, b = Store(pg_url), Store(pg_url)
    ds = a.create_dataset("rs", "rejection", [{"prompt": "p", "completion": "c0"}])
    row_id = a.dataset_rows(ds)[0].id
    errors = []

    def edit(st, who):
        try:
            for i in range(8):
                st.edit_row(row_id, "completion", f"{who}{i}", author=who)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=edit, args=(st, who)) for st, who in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert a.get_row(row_id).version == 1 + 16
    assert len(b.curation_history(ds)) == 16
    # A save made on a version someone else changed since is refused, with their text.
    shown = a.get_row(row_id)
    b.edit_row(row_id, "completion", "theirs", expected_version=shown.version)
    with pytest.raises(EditConflict) as refused:
        a.edit_row(row_id, "completion", "mine", expected_version=shown.version)
    assert refused.value.newer_value == "theirs"
    assert b.undo_last_edit(ds) == "row 0: completion restored"
    a.dispose(), b.dispose()


def test_a_full_grpo_step_round_trips_exactly(store):
    # 64 groups x 16 rollouts go by COPY on PostgreSQL: every value must come back as written,
    # the characters COPY's text format escapes (tab, newline, backslash) included.
    import dataclasses

    assert store.engine.dialect.driver == "psycopg"  # the COPY path
    stage_id = make_run(store).stages[0].id
    groups = [make_group(gi, prompt=f"p{gi}\tcol\\n 中文 {'x' * gi}", g=16) for gi in range(64)]
    for g in groups:
        g.reference = None if g.group_index % 2 else f"{g.group_index}\n"
        for ro in g.rollouts:
            ro.completion += "\n\\N\t\r end"
    store.add_groups(stage_id, 5, groups)
    got = store.step_groups(stage_id, 5)
    for g in groups:
        g.step = 5
        g.rollouts.sort(key=lambda ro: ro.sample_index)
    assert [dataclasses.asdict(g) for g in got] == [dataclasses.asdict(g) for g in groups]


def test_a_large_dataset_and_its_snapshot_round_trip_exactly(store):
    # Dataset rows and snapshot rows go by COPY too; the snapshot's hash is the one SQLite
    # gives for the same rows (content_hash of what was written).
    from storage import content_hash

    rows = [{"prompt": f"q{i}\t\\N", "completion": f"<think>{i}\n中</think>",
             "answer": None if i % 3 else str(i), "source": "reasoning", "status": "accepted",
             "meta": {"i": i, "nested": {"ok": i % 2 == 0}}} for i in range(100)]
    ds = store.create_dataset("big", "rejection", rows)
    snap_id, digest = store.snapshot_dataset(ds)
    written = [{k: row[k] for k in ("prompt", "completion", "answer", "source", "meta")}
               for row in rows]
    assert digest == content_hash(written)
    got = [{"prompt": x.prompt, "completion": x.completion, "answer": x.answer,
            "source": x.source, "meta": x.meta} for x in store.snapshot_rows(snap_id)]
    assert got == written


def test_check_writable_passes_for_the_owner_and_refuses_a_read_only_user(pg_url):
    owner_store = Store(pg_url)
    owner_store.check_writable()  # the owner may write: no error
    owner_store.dispose()
    role = f"r1wb_reader_{uuid.uuid4().hex[:8]}"
    owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    owner.dispose()
    reader = Store(make_url(pg_url).set(username=role).render_as_string(hide_password=False))
    assert reader.list_runs() == []  # reading works
    with pytest.raises(StoreError, match="read-only for this user"):
        reader.check_writable()
    reader.dispose()
    owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:  # the role holds rights in this database: those go first
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))
    owner.dispose()


# ------------------------------------------------------------------------------ faults
@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung server, a firewall
    that swallows packets): what connect_timeout is for."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_a_server_that_does_not_answer_is_a_clear_error_within_seconds(silent_server):
    url = f"postgresql://alice:s3cret@127.0.0.1:{silent_server}/team"
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        Store(url)
    took = time.monotonic() - started
    message = str(error.value)
    assert "Cannot use the database server at postgresql+psycopg://alice:***@127.0.0.1" in message
    assert "no answer within 5 s" in message and "Nothing was written" in message
    assert "s3cret" not in message
    assert took < 20, f"gave up only after {took:.1f} s"
    # The URL's own timeout wins.
    started = time.monotonic()
    with pytest.raises(StoreError, match="no answer within 1 s"):
        Store(url + "?connect_timeout=1")
    assert time.monotonic() - started < took


def test_cli_exits_2_and_creates_nothing_when_the_server_does_not_answer(home, silent_server):
    url = f"postgresql://alice@127.0.0.1:{silent_server}/team"
    done = subprocess.run([sys.executable, "-m", "backend", "run", "--db", url, "--recipe",
                           "r1-zero", "--preset", "smoke"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: Cannot use the database server" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # no run id printed
    assert not (home / "runs").exists()  # no run folder, no runner started


def test_a_refused_connection_names_the_reason(pg_cluster):
    # The server is up but the database does not exist: said so, not a traceback.
    url = pg_cluster.url("r1wb_no_such_database")
    with pytest.raises(StoreError, match='database "r1wb_no_such_database" does not exist'):
        Store(url)


def test_a_missing_driver_says_what_to_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(StoreError, match=r'pip install "psycopg\[binary\]"'):
        Store("postgresql://alice@db.example/team")
    with pytest.raises(StoreError, match='pip install "pg8000"'):
        Store("postgresql+pg8000://alice@db.example/team")


def test_a_plain_postgresql_url_uses_the_installed_psycopg_driver():
    pytest.importorskip("psycopg")
    st = Store("postgresql://alice@db.example/team", migrate=False)  # connects lazily
    assert st.engine.dialect.driver == "psycopg"
    assert st.display_url == "postgresql+psycopg://alice@db.example/team"
    st.dispose()


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_r1_zero_smoke_run_on_postgresql_seen_from_another_machine(home, pg_url, tmp_path):
    """The CLI, its detached runner and workers all write to PostgreSQL; a second Store (what
    the UI on another machine opens) sees the run, its stages, metrics and every rollout."""
    from backend.api import Workbench

    cli = [sys.executable, "-m", "backend"]
    done = subprocess.run(cli + ["run", "--db", pg_url, "--recipe", "r1-zero", "--preset",
                                 "smoke", "--wait"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = int(done.stdout.split()[0])
    assert not (home / "workbench.db").exists()  # nothing went to the SQLite default

    wb = Workbench(pg_url)
    status = wb.run_status(run_id)
    assert status["status"] == "completed"
    assert [s["kind"] for s in status["stages"]] == ["pretrain", "grpo", "evaluate"]
    grpo = wb.get_run(run_id).stages[1]
    steps = wb.store.group_steps(grpo.id)
    assert len(steps) == 6  # smoke: 6 GRPO steps of 16 completions
    assert sum(len(g.rollouts) for step in steps
               for g in wb.store.step_groups(grpo.id, step)) == 6 * 16
    assert "reward" in wb.store.metric_names(grpo.id)
    out = tmp_path / "rollouts.jsonl"
    exported = subprocess.run(cli + ["export-rollouts", str(run_id), "--db", pg_url, "--out",
                                     str(out)], cwd=ROOT, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 * 16
    assert {"accuracy", "format"} == set(rows[0]["rewards"])
    wb.store.dispose()

"""The run store: the one place that opens database sessions.

Everything (runs, stages, heartbeats, metrics, every GRPO rollout, datasets, checkpoints,
steering commands, events) goes through ``Store``. Methods return plain dataclasses from
``storage.records``; ORM rows never leave this module.

SQLite is the default (WAL so readers never block the writer, a busy timeout so two writers
wait for each other instead of failing with "database is locked", foreign keys on). Any
SQLAlchemy URL works (PostgreSQL for teams). The schema is managed by Alembic migrations,
applied automatically when a Store opens a database.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Optional

from sqlalchemy import (
    create_engine, delete, event, func, insert, or_, select, text, update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from storage import models as m
from storage import records as r

# Where the UI and the CLI keep their data unless told otherwise.
DEFAULT_HOME = Path(__file__).resolve().parent.parent / "workbench_data"


class StoreError(RuntimeError):
    """A problem with the database itself, worded so a user knows what to fix."""


class EditConflict(StoreError):
    """A save made on an older version of a row: someone else saved first (another tab, the
    CLI). Carries the row as it is now, so the newer text can be shown; nothing was written."""

    def __init__(self, current: r.CuratedRow, field: str, expected_version: int):
        self.current = current
        self.field = field
        self.expected_version = expected_version
        newer = getattr(current, field, None)
        super().__init__(
            f"row {current.row_index} was changed by someone else after you opened it (you "
            f"edited version {expected_version}, it is now version {current.version}); your "
            f"save was refused so their change is not overwritten. Its {field} now reads: "
            f"{newer!r}")

    @property
    def newer_value(self) -> Any:
        return getattr(self.current, self.field, None)


def default_author() -> str:
    """Who a curation change is recorded for when no name is given: the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (some containers)
        return "unknown"


def content_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 of the canonical JSON of rows (sorted keys, no spaces, UTF-8): the same rows
    give the same hash on any machine, a changed character gives another."""
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_MISSING = object()
# Rows written by versions before the review queues said "kept" for accepted.
_LEGACY_STATUS = {"kept": r.ACCEPTED}


def meta_value(meta: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    """A provenance field; a dotted key reaches into nested dicts (``rule_scores.accuracy``).
    Returns ``default`` when absent."""
    if key in meta:
        return meta[key]
    value: Any = meta
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _scalar(value: Any) -> Any:
    """Filter values typed on a command line arrive as text: "1", "true", "0.5" compare as
    the numbers / booleans they spell."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return value


def meta_matches(meta: dict[str, Any], flt: r.RowFilter) -> bool:
    for key, wanted in flt.meta.items():
        actual = meta_value(meta, key)
        if actual is _MISSING:
            return False
        options = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
        if _scalar(actual) not in [_scalar(w) for w in options]:
            return False
    for key, (low, high) in flt.ranges.items():
        actual = _scalar(meta_value(meta, key))
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        if (low is not None and actual < low) or (high is not None and actual > high):
            return False
    return True


def data_home() -> Path:
    """Folder for the default database, checkpoints, logs and the cached tiny model."""
    return Path(os.environ.get("R1WB_HOME", DEFAULT_HOME)).expanduser().resolve()


def default_url() -> str:
    """``R1WB_DB_URL`` if set, else a SQLite file in the data home."""
    url = os.environ.get("R1WB_DB_URL")
    if url:
        return url
    return f"sqlite:///{data_home() / 'workbench.db'}"


def now() -> datetime:
    # Naive UTC: SQLite has no time zones, and comparing aware with naive datetimes raises.
    return datetime.now(timezone.utc).replace(tzinfo=None)


_ENCODER = json.JSONEncoder(default=str)  # one encoder: json.dumps(default=...) builds one per call


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _stage(row: m.StageRow, checkpoint: Optional[str] = None) -> r.Stage:
    return r.Stage(
        id=row.id, run_id=row.run_id, position=row.position, kind=row.kind, name=row.name,
        status=row.status, config=json.loads(row.config_json), step=row.step,
        total_steps=row.total_steps, pid=row.pid, host=row.host, heartbeat_at=row.heartbeat_at,
        started_at=row.started_at, ended_at=row.ended_at,
        attempt_started_step=row.attempt_started_step,
        attempt_started_at=row.attempt_started_at, error=row.error,
        log_path=row.log_path, output_dir=row.output_dir,
        outputs=json.loads(row.outputs_json), summary=json.loads(row.summary_json),
        checkpoint=checkpoint, key=row.key or row.kind, inputs=json.loads(row.inputs_json),
        params=json.loads(row.params_json),
    )


def _command(row: m.CommandRow) -> r.Command:
    return r.Command(
        id=row.id, stage_id=row.stage_id, kind=row.kind, payload=json.loads(row.payload_json),
        created_at=row.created_at, applied_at=row.applied_at, applied_step=row.applied_step,
        result=row.result, error=row.error,
    )


def _curated(row: m.DatasetItemRow, edited: bool = False) -> r.CuratedRow:
    return r.CuratedRow(
        id=row.id, dataset_id=row.dataset_id, row_index=row.row_index, prompt=row.prompt,
        completion=row.completion, answer=row.answer, source=row.source, status=row.status,
        meta=json.loads(row.meta_json), updated_at=row.updated_at, version=row.version,
        edited=edited,
    )


def _content(row: r.CuratedRow) -> dict[str, Any]:
    """What a snapshot keeps of a row, and what its hash covers."""
    return {"prompt": row.prompt, "completion": row.completion, "answer": row.answer,
            "source": row.source, "meta": row.meta}


def _snapshot(row: m.DatasetSnapshotRow) -> r.Snapshot:
    return r.Snapshot(id=row.id, dataset_id=row.dataset_id, stage_id=row.stage_id,
                      content_hash=row.content_hash, size=row.size, created_at=row.created_at)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception:  # a read-only file not in WAL mode yet: still readable; writes fail clearly
        pass
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # NORMAL is durable across process crashes in WAL mode (only an OS crash may lose the
    # last transactions) and several times faster than FULL for many small commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# ---------------------------------------------------------------------- database servers
# Seconds a server database may take to answer a new connection before the store gives up with
# a clear error (libpq itself would wait for the OS's TCP timeout: minutes). A URL's own
# ?connect_timeout=N wins.
CONNECT_TIMEOUT_S = 5
# What to pip install for a driver a URL names (``postgresql+DRIVER://``).
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary",
                    "pg8000": "pg8000", "asyncpg": "asyncpg", "pymysql": "pymysql",
                    "mysqldb": "mysqlclient"}


def _server_url(url):
    """A plain ``postgresql://`` URL means psycopg 3, the driver requirements.txt installs
    (SQLAlchemy's own default for it is psycopg2, which this project does not ship)."""
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def _server_engine_options(url) -> dict[str, Any]:
    options: dict[str, Any] = {
        # A pooled connection can die between two uses (server restart, a NAT or firewall
        # dropping an idle link between machines): test it on checkout instead of failing
        # the next statement of a worker's tick or a page.
        "pool_pre_ping": True,
    }
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return options


def _missing_driver(url, exc: ImportError) -> str:
    driver = url.get_driver_name()
    package = _DRIVER_PACKAGES.get(driver, getattr(exc, "name", None) or driver)
    return (f"The database URL {url.render_as_string(hide_password=True)} needs the Python "
            f"driver {driver!r}, which is not installed ({exc}). Install it into this "
            f"environment: pip install \"{package}\"")


def _is_connection_error(exc: Exception) -> bool:
    """A server that could not be reached, refused us, or dropped the connection (as opposed
    to a statement that failed)."""
    if getattr(exc, "connection_invalidated", False):
        return True
    message = str(exc).lower()
    return any(words in message for words in (
        "connection failed", "could not connect", "connection refused", "timeout expired",
        "server closed the connection", "connection to server", "could not translate host",
        "name or service not known", "password authentication failed", "does not exist",
        "no route to host", "network is unreachable", "terminating connection"))


def _unreachable(shown_url: str, exc: Exception) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = detail[0] if detail else type(exc).__name__
    seconds = make_url(shown_url).query.get("connect_timeout", CONNECT_TIMEOUT_S)
    waited = f" (no answer within {seconds} s)" if "timeout" in reason.lower() else ""
    return (f"Cannot use the database server at {shown_url}{waited}: {reason}. Check that the "
            f"server is running and reachable from this machine, and the URL's host, port, "
            f"database name, user and password (R1WB_DB_URL or --db). Nothing was written.")


class StageVersion(NamedTuple):
    """A stage's change counters (``Store.stage_version``): equal versions, same data shown."""

    status: str
    step: int
    metric_rows: int  # metric rows recorded (a purge on resume changes it too)
    group_step: Optional[int]  # newest step with recorded groups
    commands: int  # steering commands requested
    commands_applied: int  # ... of which the worker applied (or dropped)
    event_id: Optional[int]  # newest event of the stage's run


class Store:
    """One database. Cheap to create; each process makes its own."""

    def __init__(self, url: Optional[str] = None, *, migrate: bool = True):
        self.url = url or default_url()
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                path = Path(database)
                if path.exists() and path.is_dir():
                    raise StoreError(f"The database path {path} is a folder, not a file.")
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"Cannot create the folder for the database {path}: {exc}")
            # check_same_thread off: the GRPO recorder writes from a background thread.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if database in ("", ":memory:") or "mode=memory" in self.url:
                # One shared connection, or every thread would see its own empty database.
                kwargs["poolclass"] = StaticPool
        else:
            parsed = _server_url(parsed)
            kwargs.update(_server_engine_options(parsed))
        # For messages and pages: a password in the URL is never shown.
        self.display_url = (self.url if self.is_sqlite
                            else parsed.render_as_string(hide_password=True))
        try:
            self.engine: Engine = create_engine(self.url if self.is_sqlite else parsed,
                                                **kwargs)
        except ImportError as exc:  # the URL's database driver is not installed
            raise StoreError(_missing_driver(parsed, exc)) from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self._migrate()

    # ------------------------------------------------------------------ plumbing
    def _migrate(self) -> None:
        from storage.migrate import upgrade_to_head

        try:
            upgrade_to_head(self.engine)
        except OperationalError as exc:
            raise StoreError(self._explain(exc)) from exc

    def _explain(self, exc: Exception) -> str:
        text_ = str(exc)
        where = self.display_url  # the URL as given, less any password
        if not self.is_sqlite and _is_connection_error(exc):
            return _unreachable(self.display_url, exc)
        if "readonly" in text_ or "read-only" in text_:
            return (
                f"The database {where} is read-only, so runs cannot be saved. Make the file (and "
                f"its folder) writable, or point R1WB_DB_URL / --db at a writable database."
            )
        if "unable to open" in text_:
            return f"Cannot open the database {where}: check that the path exists and is writable."
        return f"Database error on {where}: {text_}"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The one session scope: commit on success, roll back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            if "readonly" in str(exc) or "unable to open" in str(exc) or (
                    not self.is_sqlite and _is_connection_error(exc)):
                raise StoreError(self._explain(exc)) from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check_writable(self) -> None:
        """Raise StoreError now (not halfway through a run) if nothing can be written."""
        if self.engine.dialect.name == "postgresql":
            # No probe table there: two clients creating it at once collide in the catalog.
            with self.session() as s:
                read_only = s.execute(text("SHOW transaction_read_only")).scalar() == "on"
                can_insert = s.execute(text("SELECT has_table_privilege('runs', 'INSERT')")
                                       ).scalar()
            if read_only or not can_insert:
                raise StoreError(
                    f"The database {self.display_url} is read-only for this user (a standby, "
                    f"or no INSERT right on its tables), so runs cannot be saved. Point "
                    f"R1WB_DB_URL / --db at the primary, or grant the user write access.")
            return
        with self.session() as s:
            s.execute(text("CREATE TABLE IF NOT EXISTS _write_probe (x INTEGER)"))
            s.execute(text("DROP TABLE IF EXISTS _write_probe"))

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ runs
    def create_run(
        self, name: str, recipe: str, preset: str, config: dict[str, Any],
        stages: list[r.StageSpec],
    ) -> r.Run:
        with self.session() as s:
            run = m.RunRow(name=name, recipe=recipe, preset=preset, config_json=_dumps(config),
                           created_at=now())
            s.add(run)
            s.flush()
            for position, spec in enumerate(stages):
                s.add(m.StageRow(run_id=run.id, position=position, kind=spec.kind,
                                 name=spec.name, config_json=_dumps(spec.config),
                                 key=spec.key or spec.kind, inputs_json=_dumps(spec.inputs)))
            s.add(m.EventRow(run_id=run.id, message=f"run created from recipe {recipe!r}",
                             at=now()))
            run_id = run.id
        return self.get_run(run_id)

    def get_run(self, run_id: int) -> r.Run:
        with self.session() as s:
            row = s.get(m.RunRow, run_id)
            if row is None or row.deleted:
                raise KeyError(f"run {run_id} does not exist")
            return self._run(s, row)

    def _run(self, s: Session, row: m.RunRow) -> r.Run:
        stage_rows = s.scalars(
            select(m.StageRow).where(m.StageRow.run_id == row.id).order_by(m.StageRow.position)
        ).all()
        latest = self._latest_checkpoints(s, [st.id for st in stage_rows])
        return r.Run(
            id=row.id, name=row.name, recipe=row.recipe, preset=row.preset,
            config=json.loads(row.config_json), created_at=row.created_at,
            runner_pid=row.runner_pid,
            stages=[_stage(st, latest.get(st.id)) for st in stage_rows],
        )

    def list_runs(self) -> list[r.Run]:
        with self.session() as s:
            rows = s.scalars(
                select(m.RunRow).where(m.RunRow.deleted.is_(False)).order_by(m.RunRow.id.desc())
            ).all()
            return [self._run(s, row) for row in rows]

    def delete_run(self, run_id: int) -> None:  # noqa: D401
        """Delete a run and everything it owns (stages, metrics, rollouts, datasets...)."""
        with self.session() as s:
            row = s.get(m.RunRow, run_id)
            if row is None:
                raise KeyError(f"run {run_id} does not exist")
            s.delete(row)  # ON DELETE CASCADE removes the rest

    def set_runner_pid(self, run_id: int, pid: Optional[int],
                       expected: Any = "any") -> bool:
        """Set the run's pipeline-runner pid; with ``expected``, only if it currently equals
        ``expected`` (compare-and-set, so two runners can never both own a run)."""
        query = update(m.RunRow).where(m.RunRow.id == run_id)
        if expected != "any":
            query = query.where(m.RunRow.runner_pid.is_(None) if expected is None
                                else m.RunRow.runner_pid == expected)
        with self.session() as s:
            return s.execute(query.values(runner_pid=pid)).rowcount == 1

    # ------------------------------------------------------------------ stages
    def get_stage(self, stage_id: int) -> r.Stage:
        with self.session() as s:
            row = s.get(m.StageRow, stage_id)
            if row is None:
                raise KeyError(f"stage {stage_id} does not exist")
            return _stage(row, self._latest_checkpoints(s, [stage_id]).get(stage_id))

    def update_stage(self, stage_id: int, **fields: Any) -> None:
        """Set columns of a stage; dict-valued ``config``/``outputs``/``summary``/``params``/
        ``inputs`` are JSON'd."""
        values = {}
        for key, value in fields.items():
            if key in ("config", "outputs", "summary", "params", "inputs"):
                values[f"{key}_json"] = _dumps(value)
            else:
                values[key] = value
        with self.session() as s:
            s.execute(update(m.StageRow).where(m.StageRow.id == stage_id).values(**values))

    def transition(self, stage_id: int, expect: Iterable[str], to: str, **fields: Any) -> bool:
        """Compare-and-set a stage's status; False when it was not in ``expect`` (a race lost)."""
        values = {"status": to, **fields}
        with self.session() as s:
            result = s.execute(
                update(m.StageRow)
                .where(m.StageRow.id == stage_id, m.StageRow.status.in_(list(expect)))
                .values(**values)
            )
            return result.rowcount == 1

    def heartbeat(self, stage_id: int, step: Optional[int] = None,
                  total_steps: Optional[int] = None) -> None:
        values: dict[str, Any] = {"heartbeat_at": now()}
        if step is not None:
            values["step"] = step
        if total_steps is not None:
            values["total_steps"] = total_steps
        with self.session() as s:
            s.execute(update(m.StageRow).where(m.StageRow.id == stage_id).values(**values))

    def active_stages(self) -> list[r.Stage]:
        with self.session() as s:
            rows = s.scalars(
                select(m.StageRow).where(m.StageRow.status.in_(r.ACTIVE_STATES))
            ).all()
            return [_stage(row) for row in rows]

    def stage_version(self, stage_id: int) -> "StageVersion":
        """What a page watching a stage compares between refreshes to learn whether anything
        it shows changed: one statement of index probes and one count over the stage's range
        of the metrics index (about 1 ms for a 250-step stage, 20-30 ms for a 10,000-step
        stage's 200,000 metric rows)."""
        t_metrics, t_groups = m.MetricRow.__table__, m.GroupRow.__table__
        t_commands, t_events = m.CommandRow.__table__, m.EventRow.__table__
        stage = m.StageRow.__table__
        query = select(
            stage.c.status, stage.c.step,
            select(func.count()).where(t_metrics.c.stage_id == stage_id).scalar_subquery(),
            select(func.max(t_groups.c.step)).where(t_groups.c.stage_id == stage_id)
            .scalar_subquery(),
            select(func.count()).where(t_commands.c.stage_id == stage_id).scalar_subquery(),
            select(func.count(t_commands.c.applied_at)).where(t_commands.c.stage_id == stage_id)
            .scalar_subquery(),
            select(func.max(t_events.c.id)).where(t_events.c.run_id == stage.c.run_id)
            .scalar_subquery(),
        ).where(stage.c.id == stage_id)
        with self.session() as s:
            row = s.connection().execute(query).first()
        if row is None:
            raise KeyError(f"stage {stage_id} does not exist")
        return StageVersion(*row)

    # ------------------------------------------------------------------ metrics
    @staticmethod
    def _metric_rows(stage_id: int, steps_values: Iterable[tuple[int, dict[str, float]]]) -> list[dict]:
        at = now()
        return [
            {"stage_id": stage_id, "step": step, "name": name, "value": float(value), "at": at}
            for step, values in steps_values for name, value in values.items()
            if value is not None
        ]

    def add_metrics(self, stage_id: int, step: int, values: dict[str, float]) -> None:
        rows = self._metric_rows(stage_id, [(step, values)])
        if not rows:
            return
        with self.session() as s:
            s.connection().execute(insert(m.MetricRow.__table__), rows)

    def stage_tick(self, stage_id: int, step: Optional[int], total_steps: Optional[int],
                   metrics: list[tuple[int, dict[str, float]]]) -> list[r.Command]:
        """A worker's periodic round trip in one transaction: heartbeat (with its step),
        the metrics buffered since the last tick, and the commands waiting for it."""
        values: dict[str, Any] = {"heartbeat_at": now()}
        if step is not None:
            values["step"] = step
        if total_steps is not None:
            values["total_steps"] = total_steps
        rows = self._metric_rows(stage_id, metrics)
        with self.session() as s:
            s.execute(update(m.StageRow).where(m.StageRow.id == stage_id).values(**values))
            if rows:
                s.connection().execute(insert(m.MetricRow.__table__), rows)
            pending = s.scalars(
                select(m.CommandRow)
                .where(m.CommandRow.stage_id == stage_id, m.CommandRow.applied_at.is_(None))
                .order_by(m.CommandRow.id)
            ).all()
            return [_command(c) for c in pending]

    def metric_names(self, stage_id: int) -> list[str]:
        with self.session() as s:
            return list(s.scalars(
                select(m.MetricRow.name).where(m.MetricRow.stage_id == stage_id).distinct()
                .order_by(m.MetricRow.name)
            ))

    def metric_series(self, stage_id: int, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric: columns, not objects, because a chart wants columns
        and 10,000 dataclasses cost more than the query (a covering index answers it)."""
        t = m.MetricRow.__table__
        with self.session() as s:
            rows = s.connection().execute(
                select(t.c.step, t.c.value).where(t.c.stage_id == stage_id, t.c.name == name)
                .order_by(t.c.step)
            ).all()
        return [row[0] for row in rows], [row[1] for row in rows]

    def metric_table(self, stage_id: int, names: Optional[list[str]] = None,
                     max_points: int = 1000) -> dict[str, tuple[list[int], list[float]]]:
        """{name: (steps, values)} for charts, at most about ``max_points`` per metric: a stage
        with more steps comes back as the mean of each bucket of consecutive steps, placed at
        the bucket's last logged step, so a 10,000-step run costs one aggregate scan instead of
        200,000 rows through Python. Up to ``max_points`` steps, the values are exact."""
        t = m.MetricRow.__table__
        where = [t.c.stage_id == stage_id] + ([t.c.name.in_(names)] if names else [])
        with self.session() as s:
            conn = s.connection()
            last = conn.execute(select(func.max(t.c.step)).where(*where)).scalar()
            if last is None:
                return {}
            bucket = max(1, -(-(last + 1) // max(1, max_points)))  # ceil division
            if bucket == 1:
                rows = conn.execute(select(t.c.name, t.c.step, t.c.value).where(*where)
                                    .order_by(t.c.name, t.c.step, t.c.id)).all()
            else:
                key = t.c.step // bucket
                rows = conn.execute(
                    select(t.c.name, func.max(t.c.step), func.avg(t.c.value)).where(*where)
                    .group_by(t.c.name, key).order_by(t.c.name, func.max(t.c.step))).all()
        out: dict[str, tuple[list[int], list[float]]] = {}
        for name, step, value in rows:
            steps, values = out.setdefault(name, ([], []))
            if steps and steps[-1] == step:  # logged twice at one step: the newest counts
                values[-1] = float(value)
                continue
            steps.append(int(step))
            values.append(float(value))
        return out

    def latest_metrics(self, stage_id: int, names: list[str]) -> dict[str, float]:
        """The newest value of each metric in ``names`` that was logged (exact, not averaged:
        what a stage runs with now). One covering-index probe per name."""
        t = m.MetricRow.__table__
        out: dict[str, float] = {}
        with self.session() as s:
            conn = s.connection()
            for name in names:
                value = conn.execute(
                    select(t.c.value).where(t.c.stage_id == stage_id, t.c.name == name)
                    .order_by(t.c.step.desc()).limit(1)).scalar()
                if value is not None:
                    out[name] = float(value)
        return out

    def metrics(self, stage_id: int, names: Optional[list[str]] = None) -> list[r.Metric]:
        query = select(m.MetricRow.step, m.MetricRow.name, m.MetricRow.value).where(
            m.MetricRow.stage_id == stage_id
        )
        if names:
            query = query.where(m.MetricRow.name.in_(names))
        with self.session() as s:
            rows = s.execute(query.order_by(m.MetricRow.step, m.MetricRow.id)).all()
            return [r.Metric(step=step, name=name, value=value) for step, name, value in rows]

    # ------------------------------------------------------------------ groups / rollouts
    def add_groups(self, stage_id: int, step: int, groups: list[r.Group]) -> None:
        """Write one step's groups and all their rollouts in a single transaction."""
        group_rows, rollout_rows = [], []
        for g in groups:
            group_rows.append({
                "stage_id": stage_id, "step": step, "group_index": g.group_index,
                "prompt": g.prompt, "reference": g.reference,
                "reward_mean": g.reward_mean, "reward_std": g.reward_std,
            })
            for ro in g.rollouts:
                rollout_rows.append({
                    "stage_id": stage_id, "step": step, "group_index": g.group_index,
                    "sample_index": ro.sample_index, "completion": ro.completion,
                    "rewards_json": _dumps(ro.rewards), "reward": ro.reward,
                    "advantage": ro.advantage, "length": ro.length, "truncated": ro.truncated,
                })
        with self.session() as s:
            # Core inserts on the tables: about twice the rate of the ORM bulk path.
            self._insert_many(s, m.GroupRow.__table__, group_rows)
            self._insert_many(s, m.RolloutRow.__table__, rollout_rows)

    def _insert_many(self, s: Session, table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (dicts with the same keys) in the session's transaction. On
        PostgreSQL through psycopg, many rows go by COPY: executemany sends one INSERT per row
        (a 64x16 step took ~0.7 s on a loaded 2-core machine, bench_store_pg.py)."""
        if not rows:
            return
        if len(rows) < 32 or self.engine.dialect.driver != "psycopg":
            s.connection().execute(insert(table), rows)
            return
        from psycopg import sql

        columns = list(rows[0])
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns)))
        raw = s.connection().connection.driver_connection  # in the session's transaction
        with raw.cursor() as cursor, cursor.copy(copy) as out:
            for row in rows:
                out.write_row([row[c] for c in columns])

    def group_steps(self, stage_id: int) -> list[int]:
        """Steps that have recorded groups, ascending."""
        with self.session() as s:
            return list(s.scalars(
                select(m.GroupRow.step).where(m.GroupRow.stage_id == stage_id)
                .distinct().order_by(m.GroupRow.step)
            ))

    def step_groups(self, stage_id: int, step: int) -> list[r.Group]:
        """All groups of one step with their rollouts (two index range scans)."""
        with self.session() as s:
            group_rows = s.execute(
                select(m.GroupRow.group_index, m.GroupRow.prompt, m.GroupRow.reference,
                       m.GroupRow.reward_mean, m.GroupRow.reward_std)
                .where(m.GroupRow.stage_id == stage_id, m.GroupRow.step == step)
                .order_by(m.GroupRow.group_index)
            ).all()
            rollout_rows = s.execute(
                select(m.RolloutRow.group_index, m.RolloutRow.sample_index,
                       m.RolloutRow.completion, m.RolloutRow.rewards_json, m.RolloutRow.reward,
                       m.RolloutRow.advantage, m.RolloutRow.length, m.RolloutRow.truncated)
                .where(m.RolloutRow.stage_id == stage_id, m.RolloutRow.step == step)
                .order_by(m.RolloutRow.group_index, m.RolloutRow.sample_index)
            ).all()
        groups = {
            gi: r.Group(step=step, group_index=gi, prompt=p, reference=ref, reward_mean=mu,
                        reward_std=sd)
            for gi, p, ref, mu, sd in group_rows
        }
        for gi, si, completion, rewards_json, reward, adv, length, truncated in rollout_rows:
            groups[gi].rollouts.append(r.Rollout(
                sample_index=si, completion=completion, rewards=json.loads(rewards_json),
                reward=reward, advantage=adv, length=length, truncated=bool(truncated),
            ))
        return list(groups.values())

    def prompt_history(self, stage_id: int, prompt: str) -> list[r.Group]:
        """Every group of one prompt across steps (to follow a prompt as training goes on):
        the groups found through ``ix_groups_stage_prompt``, then only their own rollouts."""
        with self.session() as s:
            group_rows = s.execute(
                select(m.GroupRow.step, m.GroupRow.group_index, m.GroupRow.reference,
                       m.GroupRow.reward_mean, m.GroupRow.reward_std)
                .where(m.GroupRow.stage_id == stage_id, m.GroupRow.prompt == prompt)
                .order_by(m.GroupRow.step, m.GroupRow.group_index)
            ).all()
            out = []
            for step, gi, ref, mu, sd in group_rows:
                group = r.Group(step=step, group_index=gi, prompt=prompt, reference=ref,
                                reward_mean=mu, reward_std=sd)
                for si, completion, rewards_json, reward, adv, length, truncated in s.execute(
                        select(m.RolloutRow.sample_index, m.RolloutRow.completion,
                               m.RolloutRow.rewards_json, m.RolloutRow.reward,
                               m.RolloutRow.advantage, m.RolloutRow.length,
                               m.RolloutRow.truncated)
                        .where(m.RolloutRow.stage_id == stage_id, m.RolloutRow.step == step,
                               m.RolloutRow.group_index == gi)
                        .order_by(m.RolloutRow.sample_index)):
                    group.rollouts.append(r.Rollout(
                        sample_index=si, completion=completion, rewards=json.loads(rewards_json),
                        reward=reward, advantage=adv, length=length, truncated=bool(truncated)))
                out.append(group)
        return out

    def iter_rollouts(self, run_id: int) -> Iterator[dict[str, Any]]:
        """Every rollout of a run joined with its group, streamed for export."""
        query = (
            select(m.RolloutRow.stage_id, m.RolloutRow.step, m.RolloutRow.group_index,
                   m.GroupRow.prompt, m.GroupRow.reference, m.RolloutRow.sample_index,
                   m.RolloutRow.completion, m.RolloutRow.rewards_json, m.RolloutRow.reward,
                   m.RolloutRow.advantage, m.RolloutRow.length, m.RolloutRow.truncated)
            .join(m.StageRow, m.StageRow.id == m.RolloutRow.stage_id)
            .join(m.GroupRow, (m.GroupRow.stage_id == m.RolloutRow.stage_id)
                  & (m.GroupRow.step == m.RolloutRow.step)
                  & (m.GroupRow.group_index == m.RolloutRow.group_index))
            .where(m.StageRow.run_id == run_id)
            .order_by(m.RolloutRow.stage_id, m.RolloutRow.step, m.RolloutRow.group_index,
                      m.RolloutRow.sample_index)
        )
        with self.session() as s:
            for row in s.execute(query).yield_per(2000):
                (stage_id, step, gi, prompt, reference, si, completion, rewards_json, reward,
                 adv, length, truncated) = row
                yield {
                    "run_id": run_id, "stage_id": stage_id, "step": step, "group_id": gi,
                    "sample_index": si, "prompt": prompt, "reference": reference,
                    "completion": completion, "rewards": json.loads(rewards_json),
                    "reward": reward, "advantage": adv, "length": length,
                    "truncated": bool(truncated),
                }

    # ------------------------------------------------------------------ checkpoints
    def add_checkpoint(self, stage_id: int, step: int, path: str, kind: str = "trainer") -> None:
        with self.session() as s:
            s.add(m.CheckpointRow(stage_id=stage_id, step=step, path=path, kind=kind, at=now()))

    def checkpoints(self, stage_id: int) -> list[r.Checkpoint]:
        with self.session() as s:
            rows = s.scalars(select(m.CheckpointRow).where(m.CheckpointRow.stage_id == stage_id)
                             .order_by(m.CheckpointRow.step, m.CheckpointRow.id)).all()
            return [r.Checkpoint(id=c.id, stage_id=c.stage_id, step=c.step, path=c.path,
                                 kind=c.kind, at=c.at) for c in rows]

    def _latest_checkpoints(self, s: Session, stage_ids: list[int]) -> dict[int, str]:
        if not stage_ids:
            return {}
        rows = s.execute(
            select(m.CheckpointRow.stage_id, m.CheckpointRow.path)
            .where(m.CheckpointRow.stage_id.in_(stage_ids))
            .order_by(m.CheckpointRow.step, m.CheckpointRow.id)
        ).all()
        return {stage_id: path for stage_id, path in rows}  # later rows win

    # ------------------------------------------------------------------ commands
    def add_command(self, stage_id: int, kind: str, payload: Optional[dict] = None) -> int:
        with self.session() as s:
            row = m.CommandRow(stage_id=stage_id, kind=kind, payload_json=_dumps(payload or {}),
                               created_at=now())
            s.add(row)
            s.flush()
            return row.id

    def pending_commands(self, stage_id: int) -> list[r.Command]:
        with self.session() as s:
            rows = s.scalars(
                select(m.CommandRow)
                .where(m.CommandRow.stage_id == stage_id, m.CommandRow.applied_at.is_(None))
                .order_by(m.CommandRow.id)
            ).all()
            return [_command(c) for c in rows]

    def mark_command_applied(self, command_id: int, step: Optional[int], result: str,
                             error: Optional[str] = None) -> None:
        with self.session() as s:
            s.execute(update(m.CommandRow).where(m.CommandRow.id == command_id)
                      .values(applied_at=now(), applied_step=step, result=result, error=error))

    def commands(self, stage_id: int) -> list[r.Command]:
        with self.session() as s:
            rows = s.scalars(select(m.CommandRow).where(m.CommandRow.stage_id == stage_id)
                             .order_by(m.CommandRow.id)).all()
            return [_command(c) for c in rows]

    # ------------------------------------------------------------------ events
    def add_event(self, run_id: int, message: str, *, stage_id: Optional[int] = None,
                  step: Optional[int] = None, level: str = "info") -> None:
        with self.session() as s:
            s.add(m.EventRow(run_id=run_id, stage_id=stage_id, step=step, level=level,
                             message=message, at=now()))

    def events(self, run_id: int, stage_id: Optional[int] = None, limit: int = 200) -> list[r.Event]:
        query = select(m.EventRow).where(m.EventRow.run_id == run_id)
        if stage_id is not None:
            query = query.where(m.EventRow.stage_id == stage_id)
        with self.session() as s:
            rows = s.scalars(query.order_by(m.EventRow.id.desc()).limit(limit)).all()
            return [r.Event(id=e.id, run_id=e.run_id, stage_id=e.stage_id, step=e.step,
                            level=e.level, message=e.message, at=e.at) for e in rows]

    # ------------------------------------------------------------------ datasets
    def create_dataset(self, name: str, kind: str, rows: list[dict[str, Any]], *,
                       run_id: Optional[int] = None, stage_id: Optional[int] = None,
                       parent_id: Optional[int] = None, origin: Optional[str] = None) -> int:
        """A dataset and all its rows in one transaction. Row keys: prompt, completion,
        answer, source, status (pending unless given), meta. ``parent_id``: the dataset this
        one is a new version of (an import after an export)."""
        at = now()
        with self.session() as s:
            if parent_id is not None and s.get(m.DatasetRow, parent_id) is None:
                raise KeyError(f"dataset {parent_id} does not exist")
            ds = m.DatasetRow(name=name, kind=kind, run_id=run_id, stage_id=stage_id,
                              created_at=at, ready=False, parent_id=parent_id, origin=origin)
            s.add(ds)
            s.flush()
            self._insert_rows(s, ds.id, 0, rows)
            return ds.id

    def append_rows(self, dataset_id: int, rows: list[dict[str, Any]]) -> int:
        """Add rows after the dataset's last one, in one transaction (a stage that writes its
        output in chunks, so a resume continues without losing or repeating rows). Returns
        the dataset's size afterwards."""
        with self.session() as s:
            if s.get(m.DatasetRow, dataset_id) is None:
                raise KeyError(f"dataset {dataset_id} does not exist")
            last = s.scalar(select(func.max(m.DatasetItemRow.row_index))
                            .where(m.DatasetItemRow.dataset_id == dataset_id))
            start = 0 if last is None else last + 1
            self._insert_rows(s, dataset_id, start, rows)
            return start + len(rows)

    def _insert_rows(self, s: Session, dataset_id: int, start: int,
                     rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        at = now()
        values = []
        for i, row in enumerate(rows):
            status = _LEGACY_STATUS.get(row.get("status"), row.get("status") or r.PENDING)
            if status not in r.ROW_STATUSES:
                raise ValueError(f"row {start + i}: status {status!r} is not one of "
                                 f"{', '.join(r.ROW_STATUSES)}")
            values.append({
                "dataset_id": dataset_id, "row_index": start + i, "prompt": row["prompt"],
                "completion": row.get("completion", ""), "answer": row.get("answer"),
                "source": row.get("source"), "status": status,
                "meta_json": _dumps(row.get("meta", {})), "updated_at": at, "version": 1})
        self._insert_many(s, m.DatasetItemRow.__table__, values)

    def _datasets(self, s: Session, where: list) -> list[r.Dataset]:
        query = (select(m.DatasetRow, func.count(m.DatasetItemRow.id))
                 .outerjoin(m.DatasetItemRow, m.DatasetItemRow.dataset_id == m.DatasetRow.id)
                 .where(*where).group_by(m.DatasetRow.id).order_by(m.DatasetRow.id))
        return [r.Dataset(id=d.id, run_id=d.run_id, stage_id=d.stage_id, name=d.name,
                          kind=d.kind, created_at=d.created_at, size=n, ready=bool(d.ready),
                          ready_at=d.ready_at, ready_by=d.ready_by, parent_id=d.parent_id,
                          origin=d.origin)
                for d, n in s.execute(query).all()]

    def datasets(self, run_id: Optional[int] = None) -> list[r.Dataset]:
        with self.session() as s:
            return self._datasets(s, [] if run_id is None else [m.DatasetRow.run_id == run_id])

    def get_dataset(self, dataset_id: int) -> r.Dataset:
        with self.session() as s:
            found = self._datasets(s, [m.DatasetRow.id == dataset_id])
        if not found:
            raise KeyError(f"dataset {dataset_id} does not exist")
        return found[0]

    def set_ready(self, dataset_id: int, ready: bool = True, *,
                  author: Optional[str] = None) -> r.Dataset:
        """Mark a dataset ready for training (review done), or take the mark back."""
        with self.session() as s:
            done = s.execute(update(m.DatasetRow).where(m.DatasetRow.id == dataset_id).values(
                ready=ready, ready_at=now() if ready else None,
                ready_by=(author or default_author()) if ready else None)).rowcount
        if not done:
            raise KeyError(f"dataset {dataset_id} does not exist")
        return self.get_dataset(dataset_id)

    # -- rows: filtered reads ----------------------------------------------------------------
    @staticmethod
    def _edited_clause():
        """True for a row with a text edit that is not undone (the derived "edited" queue)."""
        e = m.RowEditRow
        return (select(e.id).where(e.row_id == m.DatasetItemRow.id, e.undone.is_(False),
                                   e.field.in_(r.TEXT_FIELDS)).exists())

    def _row_conditions(self, dataset_id: int, flt: Optional[r.RowFilter]) -> list:
        t = m.DatasetItemRow
        conditions = [t.dataset_id == dataset_id]
        if flt is None:
            return conditions
        statuses = flt.statuses()
        if statuses:
            unknown = sorted(set(statuses) - set(r.ROW_STATUSES) - {r.EDITED})
            if unknown:
                raise ValueError(f"unknown status {', '.join(unknown)}; choose from "
                                 f"{', '.join(r.ROW_STATUSES + (r.EDITED,))}")
            plain = [x for x in statuses if x != r.EDITED]
            parts = ([t.status.in_(plain)] if plain else []) + (
                [self._edited_clause()] if r.EDITED in statuses else [])
            conditions.append(or_(*parts))
        if flt.source is not None:
            conditions.append(t.source == flt.source)
        if flt.prompt is not None:
            conditions.append(t.prompt == flt.prompt)
        if flt.search:
            keyword = flt.search.lower()
            conditions.append(or_(*(func.lower(func.coalesce(col, "")).contains(
                keyword, autoescape=True) for col in (t.prompt, t.completion, t.answer))))
        if flt.row_ids is not None:
            conditions.append(t.id.in_(list(flt.row_ids)))
        return conditions

    def _select_rows(self, s: Session, dataset_id: int, flt: Optional[r.RowFilter],
                     limit: Optional[int] = None, offset: int = 0) -> list[r.CuratedRow]:
        if s.get(m.DatasetRow, dataset_id) is None:
            raise KeyError(f"dataset {dataset_id} does not exist")
        # Columns, not ORM objects: a 20,000-row dataset comes back several times faster.
        t = m.DatasetItemRow
        query = (select(t.id, t.dataset_id, t.row_index, t.prompt, t.completion, t.answer,
                        t.source, t.status, t.meta_json, t.updated_at, t.version,
                        self._edited_clause().label("edited"))
                 .where(*self._row_conditions(dataset_id, flt)).order_by(t.row_index))
        by_meta = flt is not None and (flt.meta or flt.ranges)
        if not by_meta and limit is not None:
            query = query.limit(limit).offset(offset)
        rows = [r.CuratedRow(id=i, dataset_id=d, row_index=ri, prompt=p, completion=c, answer=a,
                             source=src, status=st, meta=json.loads(mj), updated_at=u,
                             version=v, edited=bool(e))
                for i, d, ri, p, c, a, src, st, mj, u, v, e in s.execute(query).all()]
        if by_meta:
            # Provenance lives in a JSON column whose fields differ per dataset: matched here
            # rather than with each database's own JSON functions (linear in the rows the
            # column conditions above left).
            rows = [row for row in rows if meta_matches(row.meta, flt)]
            if limit is not None:
                rows = rows[offset:offset + limit]
        return rows

    def query_rows(self, dataset_id: int, flt: Optional[r.RowFilter] = None, *,
                   limit: Optional[int] = None, offset: int = 0) -> list[r.CuratedRow]:
        """Rows matching ``flt`` in row order (``limit``/``offset`` page through them)."""
        with self.session() as s:
            return self._select_rows(s, dataset_id, flt, limit, offset)

    def dataset_rows(self, dataset_id: int, status: Optional[str] = None) -> list[r.CuratedRow]:
        return self.query_rows(dataset_id, r.RowFilter(status=status))

    def count_rows(self, dataset_id: int, flt: Optional[r.RowFilter] = None) -> int:
        if flt is not None and (flt.meta or flt.ranges):
            return len(self.query_rows(dataset_id, flt))
        with self.session() as s:
            if s.get(m.DatasetRow, dataset_id) is None:
                raise KeyError(f"dataset {dataset_id} does not exist")
            return s.scalar(select(func.count(m.DatasetItemRow.id))
                            .where(*self._row_conditions(dataset_id, flt)))

    def status_counts(self, dataset_id: int) -> dict[str, int]:
        """Size of each review queue: pending, accepted, rejected, edited (derived), total."""
        t = m.DatasetItemRow
        with self.session() as s:
            if s.get(m.DatasetRow, dataset_id) is None:
                raise KeyError(f"dataset {dataset_id} does not exist")
            counts = {status: 0 for status in r.ROW_STATUSES}
            for status, n in s.execute(select(t.status, func.count(t.id))
                                       .where(t.dataset_id == dataset_id).group_by(t.status)):
                counts[status] = n
            counts[r.EDITED] = s.scalar(select(func.count(t.id)).where(
                t.dataset_id == dataset_id, self._edited_clause()))
        counts["total"] = sum(counts[status] for status in r.ROW_STATUSES)
        return counts

    def get_row(self, row_id: int) -> r.CuratedRow:
        with self.session() as s:
            found = s.execute(select(m.DatasetItemRow, self._edited_clause().label("edited"))
                              .where(m.DatasetItemRow.id == row_id)).first()
            if found is None:
                raise KeyError(f"row {row_id} does not exist")
            return _curated(found[0], bool(found[1]))

    # -- rows: changes -----------------------------------------------------------------------
    EDITABLE_FIELDS = ("prompt", "completion", "answer", "status")

    @staticmethod
    def _lock_dataset(s: Session, dataset_id: int) -> None:
        """Start the write at once (a no-op update of the dataset row), so the reads that
        follow see what this transaction changes and nobody else's half-way writes: the
        SQLite write lock, a row lock elsewhere. Curation writes on one dataset queue here."""
        done = s.execute(update(m.DatasetRow).where(m.DatasetRow.id == dataset_id)
                         .values(id=m.DatasetRow.id)).rowcount
        if not done:
            raise KeyError(f"dataset {dataset_id} does not exist")

    def edit_row(self, row_id: int, field: str, value: Optional[str], *,
                 expected_version: Optional[int] = None,
                 author: Optional[str] = None) -> r.CuratedRow:
        """Change one field of a curated row, keeping the old value in the history (one
        undoable action). With ``expected_version`` (the version the editor was shown), a row
        changed since then is not overwritten: :class:`EditConflict` carries the newer row."""
        if field not in self.EDITABLE_FIELDS:
            raise ValueError(f"field {field!r} cannot be edited; editable: {self.EDITABLE_FIELDS}")
        if field == "status" and value not in r.ROW_STATUSES:
            raise ValueError(f"status {value!r} is not one of {', '.join(r.ROW_STATUSES)}")
        if field in ("prompt", "completion") and value is None:
            raise ValueError(f"{field} cannot be empty (None)")
        author = author or default_author()
        dataset_id = self.get_row(row_id).dataset_id  # never changes: safe to read first
        with self.session() as s:
            self._lock_dataset(s, dataset_id)
            row = s.get(m.DatasetItemRow, row_id, populate_existing=True)
            if expected_version is not None and row.version != expected_version:
                current = _curated(row, False)
                raise EditConflict(current, field, expected_version)
            old = getattr(row, field)
            if old == value:
                return _curated(row, False)
            at = now()
            kind = "status" if field == "status" else "edit"
            description = (f"{value} row {row.row_index}" if field == "status"
                           else f"edited {field} of row {row.row_index}")
            action = m.CurationActionRow(dataset_id=dataset_id, kind=kind,
                                         description=description, author=author, at=at, rows=1,
                                         undone=False)
            s.add(action)
            s.flush()
            s.add(m.RowEditRow(row_id=row_id, field=field, old_value=old, new_value=value,
                               at=at, author=author, action_id=action.id, undone=False))
            setattr(row, field, value)
            row.updated_at = at
            row.version += 1
        return self.get_row(row_id)

    def set_status_where(self, dataset_id: int, flt: Optional[r.RowFilter], status: str, *,
                         author: Optional[str] = None,
                         description: Optional[str] = None) -> int:
        """Set the status of every row matching ``flt`` in one transaction, recorded as one
        action (one undo reverts it all). Returns how many rows changed (rows already in
        ``status`` are left alone)."""
        if status not in r.ROW_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(r.ROW_STATUSES)}")
        author = author or default_author()
        t = m.DatasetItemRow
        with self.session() as s:
            self._lock_dataset(s, dataset_id)
            changing = [row for row in self._select_rows(s, dataset_id, flt)
                        if row.status != status]
            if not changing:
                return 0
            at = now()
            action = m.CurationActionRow(
                dataset_id=dataset_id, kind="bulk", author=author, at=at, rows=len(changing),
                description=description or f"{status} {len(changing)} rows", undone=False)
            s.add(action)
            s.flush()
            self._insert_many(s, m.RowEditRow.__table__, [
                {"row_id": row.id, "field": "status", "old_value": row.status,
                 "new_value": status, "at": at, "author": author, "action_id": action.id,
                 "undone": False} for row in changing])
            ids = [row.id for row in changing]
            for i in range(0, len(ids), 500):  # bounded IN lists (SQLite's variable limit)
                s.execute(update(t).where(t.id.in_(ids[i:i + 500])).values(
                    status=status, updated_at=at, version=t.version + 1))
            return len(changing)

    def undo_last_edit(self, dataset_id: int, *, author: Optional[str] = None) -> Optional[str]:
        """Revert the dataset's newest action that is not undone yet (every row it changed,
        as one unit); returns what was undone, None when nothing is left to undo."""
        author = author or default_author()
        t = m.DatasetItemRow
        with self.session() as s:
            self._lock_dataset(s, dataset_id)
            action = s.scalars(
                select(m.CurationActionRow)
                .where(m.CurationActionRow.dataset_id == dataset_id,
                       m.CurationActionRow.undone.is_(False))
                .order_by(m.CurationActionRow.id.desc()).limit(1)).first()
            if action is None:
                return None
            e = m.RowEditRow
            edits = s.execute(select(e.row_id, e.field, e.old_value)
                              .where(e.action_id == action.id).order_by(e.id.desc())).all()
            at = now()
            # Newest edit first; one UPDATE per (field, old value) and chunk of rows, so
            # undoing a bulk action over 10,000 rows is a few statements, not 10,000.
            rows = [row_id for row_id, _, _ in edits]
            if len(set(rows)) == len(rows):
                groups: dict[tuple[str, Optional[str]], list[int]] = {}
                for row_id, field, old in edits:
                    groups.setdefault((field, old), []).append(row_id)
                steps = [(field, old, ids) for (field, old), ids in groups.items()]
            else:  # a row changed twice by one action: restore edit by edit
                steps = [(field, old, [row_id]) for row_id, field, old in edits]
            for field, old, ids in steps:
                for i in range(0, len(ids), 500):
                    s.execute(update(t).where(t.id.in_(ids[i:i + 500]))
                              .values({field: old, "updated_at": at}))
            unique = list(dict.fromkeys(rows))
            for i in range(0, len(unique), 500):
                s.execute(update(t).where(t.id.in_(unique[i:i + 500]))
                          .values(version=t.version + 1))
            s.execute(update(e).where(e.action_id == action.id).values(undone=True))
            action.undone, action.undone_at, action.undone_by = True, at, author
            if len(edits) == 1:
                row_index = s.scalar(select(t.row_index).where(t.id == edits[0].row_id))
                return f"row {row_index}: {edits[0].field} restored"
            return f"undone: {action.description} ({len(unique)} rows restored)"

    def row_edits(self, row_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(m.RowEditRow).where(m.RowEditRow.row_id == row_id)
                             .order_by(m.RowEditRow.id)).all()
            return [{"field": e.field, "old": e.old_value, "new": e.new_value, "at": e.at,
                     "undone": e.undone, "author": e.author, "action_id": e.action_id}
                    for e in rows]

    def curation_history(self, dataset_id: int, limit: int = 200) -> list[r.CurationAction]:
        """A dataset's curation actions, newest first (undone ones included, marked)."""
        a = m.CurationActionRow
        with self.session() as s:
            rows = s.scalars(select(a).where(a.dataset_id == dataset_id)
                             .order_by(a.id.desc()).limit(limit)).all()
            return [r.CurationAction(id=x.id, dataset_id=x.dataset_id, kind=x.kind,
                                     description=x.description, author=x.author, at=x.at,
                                     rows=x.rows, undone=bool(x.undone), undone_at=x.undone_at,
                                     undone_by=x.undone_by) for x in rows]

    def action_edits(self, action_id: int) -> list[r.RowEdit]:
        """The row edits one action made, in the order it made them."""
        e, t = m.RowEditRow, m.DatasetItemRow
        with self.session() as s:
            rows = s.execute(select(e, t.row_index).join(t, t.id == e.row_id)
                             .where(e.action_id == action_id).order_by(e.id)).all()
            return [r.RowEdit(id=x.id, row_id=x.row_id, row_index=ri, field=x.field,
                              old=x.old_value, new=x.new_value, at=x.at, author=x.author,
                              undone=bool(x.undone), action_id=x.action_id) for x, ri in rows]

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_dataset(self, dataset_id: int, *,
                         stage_id: Optional[int] = None) -> tuple[int, str]:
        """Freeze exactly the accepted rows, copied, in row order: (snapshot id, sha256 of
        their canonical JSON). Nothing changes a snapshot afterwards."""
        with self.session() as s:
            self._lock_dataset(s, dataset_id)
            rows = self._select_rows(s, dataset_id, r.RowFilter(status=r.ACCEPTED))
            content = [_content(row) for row in rows]
            digest = content_hash(content)
            snap = m.DatasetSnapshotRow(dataset_id=dataset_id, stage_id=stage_id,
                                        content_hash=digest, size=len(rows), created_at=now())
            s.add(snap)
            s.flush()
            if rows:
                self._insert_many(s, m.SnapshotItemRow.__table__, [
                    {"snapshot_id": snap.id, "position": i, "row_id": row.id,
                     "prompt": c["prompt"], "completion": c["completion"],
                     "answer": c["answer"], "source": c["source"],
                     "meta_json": _dumps(c["meta"])}
                    for i, (row, c) in enumerate(zip(rows, content))])
            return snap.id, digest

    def snapshots(self, dataset_id: Optional[int] = None, *,
                  stage_id: Optional[int] = None) -> list[r.Snapshot]:
        x = m.DatasetSnapshotRow
        query = select(x).order_by(x.id)
        if dataset_id is not None:
            query = query.where(x.dataset_id == dataset_id)
        if stage_id is not None:
            query = query.where(x.stage_id == stage_id)
        with self.session() as s:
            return [_snapshot(row) for row in s.scalars(query).all()]

    def get_snapshot(self, snapshot_id: int) -> r.Snapshot:
        with self.session() as s:
            row = s.get(m.DatasetSnapshotRow, snapshot_id)
            if row is None:
                raise KeyError(f"snapshot {snapshot_id} does not exist")
            return _snapshot(row)

    def snapshot_rows(self, snapshot_id: int) -> list[r.SnapshotRow]:
        x = m.SnapshotItemRow
        with self.session() as s:
            if s.get(m.DatasetSnapshotRow, snapshot_id) is None:
                raise KeyError(f"snapshot {snapshot_id} does not exist")
            return [r.SnapshotRow(position=row.position, row_id=row.row_id, prompt=row.prompt,
                                  completion=row.completion, answer=row.answer,
                                  source=row.source, meta=json.loads(row.meta_json))
                    for row in s.scalars(select(x).where(x.snapshot_id == snapshot_id)
                                         .order_by(x.position)).all()]

    # ------------------------------------------------------------------ evaluation samples
    _EVAL_FIELDS = ("model", "template", "problem_index", "prompt", "reference", "greedy",
                    "sample_index", "completion", "extracted", "correct", "cluster",
                    "format_ok")

    def add_eval_samples(self, stage_id: int, samples: list[dict[str, Any]]) -> None:
        """Write scored completions (dicts with the fields of ``records.EvalSample`` but
        ``id`` and ``stage_id``) in one transaction."""
        rows = [{"stage_id": stage_id, **{f: sample.get(f) for f in self._EVAL_FIELDS}}
                for sample in samples]
        if rows:
            with self.session() as s:
                s.connection().execute(insert(m.EvalSampleRow.__table__), rows)

    def clear_eval_samples(self, stage_id: int) -> None:
        """Forget a stage's scored completions (a re-run scores everything again)."""
        with self.session() as s:
            s.execute(delete(m.EvalSampleRow).where(m.EvalSampleRow.stage_id == stage_id))

    def eval_samples(self, stage_id: int, model: Optional[str] = None,
                     template: Optional[str] = None,
                     problem_index: Optional[int] = None) -> list[r.EvalSample]:
        """A stage's scored completions, by model, template, problem, greedy first then the
        samples in order."""
        x = m.EvalSampleRow
        query = select(x).where(x.stage_id == stage_id)
        for column, value in ((x.model, model), (x.template, template),
                              (x.problem_index, problem_index)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(x.model, x.template, x.problem_index, x.greedy.desc(),
                               x.sample_index)
        with self.session() as s:
            return [r.EvalSample(id=row.id, stage_id=row.stage_id,
                                 **{f: getattr(row, f) for f in self._EVAL_FIELDS})
                    for row in s.scalars(query).all()]

    # ------------------------------------------------------------------ maintenance
    def purge_stage_records_after(self, stage_id: int, step: int) -> None:
        """Drop metrics/groups recorded after ``step``: a resume from a checkpoint at ``step``
        replays those steps, and a step must not appear twice. Trainer checkpoints saved after
        it go too (only ones missing on this machine can be newer than the one resumed from):
        a later resume must not pick a checkpoint of the steps given up."""
        with self.session() as s:
            for table in (m.MetricRow, m.GroupRow, m.RolloutRow):
                s.execute(delete(table).where(table.stage_id == stage_id, table.step > step))
            s.execute(delete(m.CheckpointRow).where(m.CheckpointRow.stage_id == stage_id,
                                                    m.CheckpointRow.kind == "trainer",
                                                    m.CheckpointRow.step > step))

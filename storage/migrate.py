"""Apply Alembic migrations programmatically (on every Store open: cheap when up to date).

For hand use: ``alembic -c storage/alembic.ini upgrade head`` with ``R1WB_DB_URL`` set, or
``alembic -c storage/alembic.ini revision --autogenerate -m "..."`` after changing models.py.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return  # fast path: no Alembic environment to load on every open
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # SQLite rebuilds a table to alter it (copy, DROP, rename). With foreign keys on,
            # that DROP would cascade-delete every child row (a run's stages, metrics...).
            # The pragma only takes effect outside a transaction, hence before begin().
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        with conn.begin():
            if engine.dialect.name == "postgresql":
                # Two clients opening a new database at once (the UI and a worker on another
                # machine) would both create the tables: the second waits here for the first
                # one's commit, then Alembic finds the database at head and does nothing.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7201)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()

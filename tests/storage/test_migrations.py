"""A database made by an older version is upgraded on open and keeps its runs."""
from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from storage import Store
from storage.migrate import alembic_config


def test_upgrade_from_first_schema_keeps_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # the schema the first release shipped
        conn.execute(text("INSERT INTO runs (id, name, recipe, preset, config_json, created_at, "
                          "deleted) VALUES (1, 'old run', 'pretrain-base', 'tiny', '{}', "
                          "'2026-11-01 10:00:00', 0)"))
        conn.execute(text("INSERT INTO stages (run_id, position, kind, name, status, config_json,"
                          " step, attempt_started_step, outputs_json, summary_json) VALUES "
                          "(1, 0, 'pretrain', 'p', 'completed', '{}', 800, 0, '{}', '{}')"))
    engine.dispose()

    store = Store(url)  # migrates to head
    run = store.get_run(1)
    assert run.name == "old run" and run.status == "completed"
    assert run.stages[0].attempt_started_at is None  # the new column exists, empty
    with store.engine.connect() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        indexes = {row[0] for row in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'groups'"))}
    assert head == ScriptDirectory.from_config(cfg).get_current_head()
    assert "ix_groups_stage_prompt" in indexes  # 0003
    # Deleted ids are not reused after the upgrade either.
    store.delete_run(1)
    assert store.create_run("new", "pretrain-base", "tiny", {}, []).id == 2


def test_migrations_build_exactly_the_models_schema(tmp_path):
    # A model change without its migration would ship a schema that fresh and upgraded
    # databases disagree on: autogenerate must find nothing to do.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.models import Base

    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

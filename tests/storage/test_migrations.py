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


def test_upgrade_to_curation_keeps_kept_rows_and_their_edits(tmp_path):
    # 0005: "kept" rows become accepted, every older edit becomes an undoable action.
    url = f"sqlite:///{tmp_path / 'v4.db'}"
    engine = create_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("INSERT INTO datasets (id, name, kind, created_at) VALUES "
                          "(1, 'rs', 'rejection', '2026-11-01 10:00:00')"))
        for i, status in enumerate(["kept", "rejected", "kept"]):
            conn.execute(text(
                "INSERT INTO dataset_rows (id, dataset_id, row_index, prompt, completion, "
                "status, meta_json, updated_at) VALUES (:id, 1, :i, :p, 'c', :s, '{}', "
                "'2026-11-01 10:00:00')"), {"id": i + 1, "i": i, "p": f"q{i}", "s": status})
        conn.execute(text("INSERT INTO row_edits (row_id, field, old_value, new_value, at, "
                          "undone) VALUES (1, 'completion', 'orig', 'c', "
                          "'2026-11-01 10:01:00', 0)"))
        conn.execute(text("INSERT INTO row_edits (row_id, field, old_value, new_value, at, "
                          "undone) VALUES (2, 'status', 'kept', 'rejected', "
                          "'2026-11-01 10:02:00', 0)"))
    engine.dispose()

    store = Store(url)
    assert [r.status for r in store.dataset_rows(1)] == ["accepted", "rejected", "accepted"]
    assert [r.version for r in store.dataset_rows(1)] == [1, 1, 1]
    assert store.get_dataset(1).ready is False
    assert store.status_counts(1)["edited"] == 1
    assert [a.description for a in store.curation_history(1)] == ["edited status",
                                                                 "edited completion"]
    # undo still works on the old edits, newest first, and restores "kept" as accepted
    assert store.undo_last_edit(1) == "row 1: status restored"
    assert store.dataset_rows(1)[1].status == "accepted"
    assert store.undo_last_edit(1) == "row 0: completion restored"
    assert store.dataset_rows(1)[0].completion == "orig"
    # new actions get fresh ids after the ones made from old edits
    store.edit_row(store.dataset_rows(1)[2].id, "completion", "new")
    assert store.curation_history(1)[0].id == 3

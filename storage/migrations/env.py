"""Alembic environment: uses the connection handed over by storage.migrate, else R1WB_DB_URL."""
from alembic import context
from sqlalchemy import create_engine

from storage.models import Base
from storage.store import default_url

target_metadata = Base.metadata


def run_with(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds tables instead.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    with create_engine(default_url()).connect() as conn:
        run_with(conn)
        conn.commit()

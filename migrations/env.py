"""Alembic environment, usable without an alembic.ini.

:mod:`ipam.store.migrate` builds the ``Config`` in code and usually hands over its own
connection in ``config.attributes["connection"]`` (already inside the caller's
transaction, so alembic must not begin or commit one of its own). Without it, the URL in
``sqlalchemy.url`` is used, as the stock ``alembic`` command line would.
"""
from alembic import context
from sqlalchemy import create_engine, pool

from ipam.store.schema import metadata

config = context.config
target_metadata = metadata


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, **kwargs)


def run_migrations_offline() -> None:
    """``--sql`` mode: emit the DDL as text instead of running it."""
    url = config.get_main_option("sqlalchemy.url")
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # SQLite cannot ALTER most things: batch mode (copy and move) for the migrations that
    # autogenerate writes for it.
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

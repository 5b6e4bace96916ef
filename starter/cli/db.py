"""`campaign db migrate`: bring the configured store (SQLite or PostgreSQL) to the code's schema."""

from __future__ import annotations

import typer

from campaign_core.settings import Settings, load_settings
from campaign_core.store.factory import open_store
from starter.cli.app import err, run, shown

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)


async def migrate_store(settings: Settings) -> tuple[str, int, int]:
    """Bring the configured store to the code's schema: (store, version before, after)."""
    store = open_store(settings)
    try:
        before = await store.schema_version()
        return repr(store), before, await store.migrate()
    finally:
        await store.close()


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations to the configured store (SQLite or PostgreSQL)."""
    where, before, after = run(migrate_store(load_settings()))
    change = "already up to date" if before == after else f"migrated from version {before}"
    err.print(f"{shown(where)}: schema version {after} ({change})", highlight=False)

"""`open_store`: the backend for a URL or for the settings.

Kept apart from the interface (`base.py`) so that importing the interface never
imports a backend or its driver; each backend is imported only when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from campaign_core.store.base import Store, StoreError

if TYPE_CHECKING:
    from campaign_core.settings import Settings


def open_store(target: str | Settings, *, auto_migrate: bool | None = None) -> Store:
    """The store for a URL or for the settings; nothing is connected until first use.

    With settings: `CAMPAIGN_STORE_URL` if set, else Supabase's REST API when both
    `SUPABASE_URL` and `SUPABASE_KEY` are set, else the embedded SQLite file.
    URLs: `sqlite:///PATH`, `postgresql://...` (or `postgres://...`).
    `auto_migrate` overrides the backend's default (SQLite migrates itself; shared
    stores only check the version).
    """
    if not isinstance(target, str):
        settings = target
        if not settings.store_url and settings.supabase_url and settings.supabase_key:
            from campaign_core.store.supabase import SupabaseStore

            return SupabaseStore(settings.supabase_url, settings.supabase_key.get_secret_value())
        target = settings.resolved_store_url
    url = target
    if url.startswith("sqlite:///"):
        from campaign_core.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"),
                           auto_migrate=True if auto_migrate is None else auto_migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from campaign_core.store.postgres import PostgresStore

        return PostgresStore(url, auto_migrate=bool(auto_migrate))
    raise StoreError(
        f"unsupported store URL scheme {url.split(':', 1)[0]!r} in CAMPAIGN_STORE_URL: "
        "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
    )

"""Issue 11, file permissions: CAMPAIGN_HOME holds every lead and the unsubscribe key,
so the directories the engine creates are 0700 and its databases 0600, whatever the umask."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activities.channels import write_outbox
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.factory import open_store
from starter.cli import app as cli_app
from starter.devstack import embedded_stack


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def lax_umask() -> Iterator[None]:
    """The usual 022, so a file created with default modes is world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def fresh_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CAMPAIGN_HOME that does not exist yet (the engine creates it)."""
    h = home / "state" / "campaign"
    monkeypatch.setenv("CAMPAIGN_HOME", str(h))
    return h


async def test_store_open_creates_a_private_home_and_database(fresh_home: Path) -> None:
    store = open_store(Settings())
    await store.migrate()
    await store.add_suppressions(["ana@example.com"], "manual", source="manual")
    await store.close()
    db = fresh_home / "campaign.db"
    assert mode(fresh_home) == 0o700
    assert mode(fresh_home.parent) == 0o700  # created on the way, so ours too
    assert mode(db) == 0o600
    # SQLite's WAL and shared-memory files while a connection holds them open.
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("INSERT INTO suppressions(email, reason, created_at) "
                     "VALUES ('bo@example.com', 'manual', 'now')")
        for side in ("-wal", "-shm"):
            assert mode(db.with_name(db.name + side)) == 0o600, side
    finally:
        conn.close()


async def test_an_existing_world_readable_database_is_tightened_on_open(home: Path) -> None:
    db = home / "campaign.db"
    older = sqlite3.connect(db, isolation_level=None)  # an older version's database, its WAL open meanwhile
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE t (x INTEGER)")
    older.execute("INSERT INTO t VALUES (1)")
    try:
        wal = db.with_name("campaign.db-wal")
        assert mode(db) == mode(wal) == 0o644
        store = open_store(Settings())
        await store.migrate()
        await store.close()
        assert mode(db) == 0o600
        assert mode(wal) == 0o600
    finally:
        older.close()
    assert mode(home) == 0o755  # a directory we did not create keeps its mode


def test_campaign_suppress_in_a_new_home_leaves_nothing_readable_by_others(fresh_home: Path
                                                                           ) -> None:
    result = CliRunner().invoke(cli_app, ["suppress", "ana@example.com"])
    assert result.exit_code == 0, result.output
    assert mode(fresh_home) == 0o700
    for path in fresh_home.rglob("*"):
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_the_outbox_is_private(home: Path) -> None:
    msg = EmailMessage()
    msg["To"] = "ana@example.com"
    msg.set_content("hello")
    written = write_outbox(home / "outbox", "msg_1", msg)
    assert mode(home / "outbox") == 0o700
    assert mode(written) == 0o600


@pytest.mark.slow
async def test_the_dev_servers_database_is_private(fresh_home: Path) -> None:
    async with embedded_stack(Settings(), free_port(), free_port()) as stack:
        assert stack.address
        db = fresh_home / "temporal.db"
        assert db.exists()
        assert mode(fresh_home) == 0o700
        for path in fresh_home.iterdir():
            if path.name.startswith("temporal.db"):
                assert mode(path) == 0o600, (path.name, oct(mode(path)))

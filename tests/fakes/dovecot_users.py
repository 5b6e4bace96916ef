"""More mailboxes on the test Dovecot (tests/fakes/dovecot.py): one user each.

A sender's reply mailbox (issue 28) is a mailbox of its own; two senders are two users of
the same server. Dovecot's passwd-file is read again when it changes, so a user added to
the running server can log in at once; its Maildir is made on first login.
"""

from __future__ import annotations

import contextlib
import imaplib
from dataclasses import dataclass
from urllib.parse import quote

from tests.fakes.dovecot import Dovecot, imap_append, imap_session


@dataclass(frozen=True)
class ImapUser:
    """One more mailbox on the server."""

    server: Dovecot
    user: str
    password: str

    def url(self) -> str:
        return (f"imap://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@127.0.0.1:{self.server.port}/INBOX")

    def session(self) -> contextlib.AbstractContextManager[imaplib.IMAP4]:
        return imap_session(self.server.port, self.user, self.password)

    def append(self, raw: bytes) -> None:
        imap_append(self.server.port, self.user, self.password, raw)

    def seen(self) -> dict[int, bool]:
        """UID -> whether the message is flagged \\Seen."""
        with self.session() as conn:
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            assert typ == "OK", data
        out: dict[int, bool] = {}
        for line in data:
            if isinstance(line, bytes):
                text = line.decode()
                out[int(text.split("UID ", 1)[1].split()[0].rstrip(")"))] = "\\Seen" in text
        return out


def add_user(server: Dovecot, user: str, password: str) -> ImapUser:
    """A new user (and mailbox) on the running server."""
    users = server.base / "users"
    with users.open("a") as f:  # the file keeps its owner (the server's user, as root)
        f.write(f"{user}:{{PLAIN}}{password}\n")
    return ImapUser(server, user, password)

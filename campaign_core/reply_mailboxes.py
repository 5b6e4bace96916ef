"""Every reply mailbox a poll reads: CAMPAIGN_IMAP_URL's, and each sender's (issue 28).

A sender may have its own reply mailbox (`imap_url`, stored sealed: `env:VAR` or
`enc:...`). Replies and delivery reports to a sender's From land there, not in the shared
mailbox, so one poll reads them all, each with the same `ReplyDesk`: they are matched,
recorded and signalled like the shared mailbox's.

Each mailbox keeps its own cursor in `imap_state`, keyed by the mailbox itself
(user@host:port/MAILBOX, never the password): a cursor belongs to the mailbox, not to a
name, so a sender removed and added again with another mailbox starts that mailbox from
its first message, and two senders (or a sender and CAMPAIGN_IMAP_URL) given the same
mailbox read it once a pass, from one cursor.

The shared mailbox fails as it always did (its error is raised, after the senders'
mailboxes are read, so Temporal retries the pass). A sender's mailbox that fails (its
variable unset, a bad login, the server unreachable) is logged and skipped: the other
mailboxes are still read, and the next poll tries it again. The clear URL is unsealed here,
at use, and goes nowhere else: not into a log line, an error or the report.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from campaign_core.imap import (
    POLL_LIMIT,
    SETTING,
    ImapConfig,
    ImapError,
    MailboxPoll,
    PollReport,
    parse_imap_url,
    poll_mailbox,
)
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from campaign_core.store.base import Store

log = logging.getLogger("campaign.imap")


@dataclass(frozen=True)
class ReplyMailbox:
    """One mailbox to read: the shared one (`sender` None) or a sender's."""

    sender: str | None
    config: ImapConfig

    @property
    def label(self) -> str:
        return self.config.key if self.sender is None else f"{self.config.key} (sender {self.sender})"


def shared_mailbox(settings: Settings) -> ReplyMailbox | None:
    """CAMPAIGN_IMAP_URL's mailbox; None when it is not set. ValueError for a bad URL."""
    url = settings.imap_url.get_secret_value() if settings.imap_url else ""
    if not url.strip():
        return None
    return ReplyMailbox(None, parse_imap_url(url))


def sender_setting(name: str) -> str:
    """How errors name a sender's reply mailbox URL."""
    return f"sender {name}'s imap_url"


async def senders_with_mailbox(store: Store) -> list[str]:
    """The senders (not removed) that have a reply mailbox of their own, by name."""
    return [row.name for row in await store.list_senders() if row.imap_url]


async def sender_mailbox(store: Store, settings: Settings, name: str) -> ReplyMailbox:
    """The sender's reply mailbox, its URL unsealed now. ValueError saying why it cannot
    be read (never the URL): unknown, removed or without a mailbox, the variable unset, a
    sealed value this key cannot open, a malformed URL."""
    from campaign_core.secret_refs import SecretRefError, unseal  # at use, here only

    row = await store.get_sender(name)
    if row is None or row.removed_at is not None or not row.imap_url:
        raise ValueError(f"sender {name} has no reply mailbox")
    setting = sender_setting(name)
    try:
        url = unseal(row.imap_url, settings)
    except SecretRefError as exc:  # names the variable or key id, never the secret
        raise ValueError(f"{setting}: {exc}") from None
    return ReplyMailbox(name, parse_imap_url(url, setting=setting))


async def poll_reply_mailboxes(
    store: Store, settings: Settings, desk: ReplyDesk, *, limit: int = POLL_LIMIT,
    progress: Callable[[int], None] | None = None, require_any: bool = True,
) -> PollReport:
    """One pass over CAMPAIGN_IMAP_URL's mailbox and every sender's (see the module doc).

    ValueError (naming CAMPAIGN_IMAP_URL) when there is no mailbox at all to read and
    `require_any`, or when CAMPAIGN_IMAP_URL is malformed; the shared mailbox's ImapError
    once the senders' mailboxes have been read. `progress` is called with each UID reached
    and with 0 between mailboxes (a heartbeat)."""
    shared = shared_mailbox(settings)
    names = await senders_with_mailbox(store)
    if shared is None and not names and require_any:
        raise ValueError(f"{SETTING} is not set (imaps://user:password@host/INBOX), and no "
                         "sender has a reply mailbox (`campaign sender add ... --imap-url`)")
    if shared is not None and not names:  # exactly the pass it always was
        return await poll_mailbox(shared.config, store, desk, limit=limit, progress=progress)

    polls: list[MailboxPoll] = []
    reports: list[tuple[ReplyMailbox, PollReport]] = []
    shared_error: ImapError | None = None
    read: set[str] = set()
    if shared is not None:
        try:
            reports.append((shared, await poll_mailbox(shared.config, store, desk, limit=limit,
                                                       progress=progress)))
        except ImapError as exc:
            shared_error = exc
        read.add(shared.config.key)
    for name in names:
        if progress is not None:
            progress(0)
        try:
            box = await sender_mailbox(store, settings, name)
        except ValueError as exc:
            log.warning("reply mailbox of sender %s skipped: %s", name, exc)
            polls.append(MailboxPoll(sender=name, error=str(exc)))
            continue
        if box.config.key in read:  # the same mailbox as one read already this pass
            continue
        read.add(box.config.key)
        try:
            reports.append((box, await poll_mailbox(box.config, store, desk, limit=limit,
                                                    progress=progress)))
        except (ImapError, imaplib.IMAP4.error, OSError) as exc:  # never the password
            reason = f"{box.config.key}: {exc.__class__.__name__}" if not isinstance(
                exc, ImapError) else str(exc)
            log.warning("reply mailbox of sender %s skipped: %s", name, reason)
            polls.append(MailboxPoll(sender=name, mailbox=box.config.key, error=reason))
    if shared_error is not None:
        raise shared_error
    return combined(reports, polls)


def combined(reports: list[tuple[ReplyMailbox, PollReport]], skipped: list[MailboxPoll]
             ) -> PollReport:
    """The pass over several mailboxes as one report (see PollReport)."""
    polls = [MailboxPoll(sender=box.sender, mailbox=r.mailbox, processed=r.processed,
                         last_uid=r.last_uid, more=r.more) for box, r in reports]
    labels = [box.label for box, _ in reports]
    if skipped:
        labels.append("not read: " + ", ".join(f"sender {p.sender}'s mailbox" for p in skipped))
    first = reports[0][1] if reports else None
    return PollReport(
        mailbox=", ".join(labels) or "no mailbox", uidvalidity=first.uidvalidity if first else 0,
        last_uid=first.last_uid if first else 0,
        processed=sum(r.processed for _, r in reports), more=any(r.more for _, r in reports),
        results=[result for _, r in reports for result in r.results],
        mailboxes=polls + skipped)

"""The senders (mailboxes) as the control plane keeps them: add, list, pause, resume, remove,
check, and which of them a start uses (issue 28; `campaign_core/senders.py` has the shapes).

Every door goes through here: `campaign sender ...` and the `/senders` routes, and the
campaign starts (`CampaignManager.start`, `ScheduleManager.create`) for `resolve` and
`preflight`. A sender's secrets (the SMTP and IMAP URLs, the DKIM key) are sealed before
the store sees them (`secret_refs.seal`: `env:VAR` kept as a reference, anything else
encrypted with CAMPAIGN_ENCRYPTION_KEY), and only ever shown redacted; the audit entries
and log lines name what changed, never a secret.

Errors carry the field at fault (`BadInput(field=...)`), and each door phrases it: the
CLI as its flag, the API as the body's field.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.ids import campaign_workflow_id
from campaign_core.models import Channel
from campaign_core.senders import DEFAULT_DAILY_CAP, SenderRow, SenderSpec, SenderStatus
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.temporal import TemporalUnreachable
from starter.errors import BadInput, Conflict, NotFound
from workflows.campaign import CampaignWorkflow

log = logging.getLogger("campaign.senders")

#: Where the senders' own audit entries are kept: a reserved campaign id, which no campaign
#: can have (campaign ids begin with a letter or a digit), as the suppression list's.
SENDER_TRAIL = "_senders"
#: The longest note a pause may carry.
MAX_NOTE = 500
#: The secrets of a sender: sealed before they are stored, never shown in clear.
SECRET_FIELDS = ("smtp_url", "imap_url", "dkim_key")

CheckStatus = Literal["ok", "warn", "fail"]


class CheckLine(BaseModel):
    """One DNS check of a sender: `mx`, `spf`, `dkim` or `dmarc`, with one line of why."""

    name: str
    status: CheckStatus
    detail: str


class SenderCheckReport(BaseModel):
    """`campaign sender check NAME --json` / `GET /senders/{name}/check`."""

    sender: str
    domain: str
    ok: bool = Field(description="No check failed (a warning is not a failure).")
    checks: list[CheckLine]
    dkim_record: str | None = Field(
        default=None, description="The TXT value to publish at "
        "`<dkim_selector>._domainkey.<domain>` for the configured DKIM key.")
    dkim_selector: str | None = None


class SenderChange(BaseModel):
    """What pause, resume and remove answer."""

    name: str
    action: Literal["pause", "resume", "remove"]
    paused_reason: str | None = None
    campaigns_signalled: list[str] = Field(
        default_factory=list, description="resume: the running campaigns whose held sends "
        "were released and told so.")
    campaigns_not_told: list[str] = Field(
        default_factory=list, description="resume: campaigns whose held sends were released "
        "but which could not be told (Temporal not reachable): they send them when their "
        "schedule next wakes.")


# -- checks of what is given -------------------------------------------------------------------


def check_url(value: str, field: str, schemes: tuple[str, ...], *,
              login: bool = False) -> None:
    """BadInput naming `field` unless `value` is `env:VAR` or a `scheme://host[:port]` URL
    of one of `schemes`, with a user and password if `login` (an IMAP mailbox); never
    echoing the value, which may hold a password."""
    if value.startswith("env:"):
        return  # secret_refs.seal checks the variable's name
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in schemes:
        raise BadInput(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)} "
                       "(user and password in it), or env:VARIABLE", field=field)
    if not parts.hostname:
        raise BadInput("the URL has no host", field=field)
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise BadInput("the URL's port is not a number from 0 to 65535", field=field) from None
    if login and (not parts.username or parts.password is None):
        raise BadInput("give the mailbox's user and password in the URL "
                       "(imaps://user:password@host/INBOX)", field=field)
    if login:  # the reply poller's own parser: what it refuses is refused here, not later
        from campaign_core.imap import parse_imap_url

        try:
            parse_imap_url(value, setting=field)
        except ValueError as err:
            raise BadInput(str(err).removeprefix(f"{field}: "), field=field) from None


def dkim_public_value(pem: str) -> tuple[str, str]:
    """(the TXT record to publish, its `p=` value) of a DKIM private key; ValueError with
    the reason when it is not a key the engine signs with."""
    from campaign_core.dkim_sign import load_dkim_key

    key = load_dkim_key(pem)
    return key.public_record(), key.public_key


def smtp_host_of(stored: str | None, settings: Settings) -> str | None:
    """The host of a sender's (sealed) SMTP URL, or None: an outbox sender, or an
    `env:VAR` this process cannot read (the worker reads it when it sends)."""
    if not stored:
        return None
    from campaign_core.secret_refs import SecretRefError, unseal

    try:
        return urlsplit(unseal(stored, settings).strip()).hostname
    except (SecretRefError, ValueError):
        return None


def sealed(value: str | None, field: str, settings: Settings) -> str | None:
    """`value` as the store keeps it; BadInput naming `field` when it cannot be kept (a
    clear secret without CAMPAIGN_ENCRYPTION_KEY, an invalid variable name)."""
    if value is None:
        return None
    from campaign_core.secret_refs import SecretRefError, seal

    try:
        return seal(value, settings, what="the key" if field == "dkim_key" else "the URL")
    except SecretRefError as err:
        raise BadInput(str(err), field=field) from err


def _now() -> datetime:
    return datetime.now(UTC)


def audit_record(kind: str, name: str, data: dict[str, Any], by: str) -> Envelope:
    """A change to sender `name`, for its trail (SENDER_TRAIL): who, what; no secret."""
    at = _now()
    body = {"sender": name, "by": by, **data}
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=SENDER_TRAIL, run_id="control-plane",
                                  agent="control_plane.senders", agent_version="1", attempt=1,
                                  started_at=at, ended_at=at),
        records=[Record(kind=kind, key=name, data=body, provenance=Provenance(
            source=f"request:sender_{kind.removeprefix('sender_')}", agent="control_plane",
            created_at=at, inputs_digest=digest([kind, body, at.isoformat()])))])


# -- which senders a start uses ---------------------------------------------------------------


async def resolve(store: Store, channel: Channel, names: Sequence[str] | None) -> list[str] | None:
    """The senders a campaign on `channel` starts with: those `names`d (each must exist and
    not be removed; a paused one holds its leads until resumed), or by default every sender
    neither paused nor removed. None when the channel takes no sender (webhook) or no sender
    is defined (the implicit CAMPAIGN_FROM sender, as before senders). BadInput naming
    `senders` for an unknown or removed name, or when every defined sender is paused."""
    if channel is Channel.WEBHOOK:
        return None
    if names is not None:
        missing = []
        for name in names:
            row = await store.get_sender(name)
            if row is None or row.removed_at is not None:
                missing.append(name)
        if missing:
            raise BadInput(f"no sender {', '.join(map(repr, missing))} (unknown or removed); "
                           "list the senders to see their names", field="senders")
        return list(names)
    rows = await store.list_senders()
    if not rows:
        return None
    active = [row.name for row in rows if not row.paused]
    if not active:
        paused = ", ".join(f"{row.name} ({row.paused_reason or 'paused'})" for row in rows)
        raise BadInput(f"every sender is paused ({paused}): resume one, or name the senders "
                       "to start with (a named paused sender holds its leads until resumed)",
                       field="senders")
    return active


def one_mailbox_warning(channel: Channel, senders: Sequence[str] | None, leads: int) -> str | None:
    """A warning for a start that would send more than a mailbox's default day from the one
    implicit sender (no sender defined): nothing caps it, and providers flag a mailbox that
    sends hundreds a day (issue 28: "nothing tells them so")."""
    if channel is not Channel.SMTP or senders is not None or leads <= DEFAULT_DAILY_CAP:
        return None
    return (f"{leads} leads will all be sent from one mailbox (CAMPAIGN_FROM), with no daily "
            f"cap: mail providers flag a mailbox that sends more than about "
            f"{DEFAULT_DAILY_CAP} cold messages a day; define senders (mailboxes with caps "
            "and warm-up) to spread them, see docs/senders.md")


async def preflight(settings: Settings, store: Store, names: Sequence[str] | None, *,
                    strict: bool) -> list[str]:
    """The DNS check of each chosen sender that sends over SMTP, before a start: one warning
    line per failing check (and per paused sender named), which the start reports and goes
    on with; with `strict`, BadInput naming `strict_senders`, the sender and its failing
    checks instead."""
    warnings: list[str] = []
    failing: list[str] = []
    for name in names or []:
        row = await store.get_sender(name)
        if row is None:
            continue
        if row.paused:
            warnings.append(f"sender {name} is paused ({row.paused_reason or 'paused'}): its "
                            "leads wait until it is resumed")
        if row.transport != "smtp":
            continue
        report = await check_row(row, settings)
        for check in report.checks:
            if check.status == "fail":
                line = f"sender {name}: {check.name} check failed: {check.detail}"
                warnings.append(line)
                failing.append(line)
    if strict and failing:
        raise BadInput("; ".join(failing), field="strict_senders")
    return warnings


async def check_row(row: SenderRow, settings: Settings) -> SenderCheckReport:
    """`check_sender` (campaign_core/dns_check.py) for a stored sender: its From domain's
    MX, SPF (covering its SMTP host when that can be told), DKIM selector and DMARC."""
    from campaign_core.dns_check import check_sender
    from campaign_core.secret_refs import SecretRefError, unseal

    record, public = None, None
    if row.dkim_key and row.dkim_selector:
        try:
            record, public = dkim_public_value(unseal(row.dkim_key, settings))
        except (SecretRefError, ValueError) as err:
            log.warning("sender %s: its DKIM key cannot be read here (%s)", row.name,
                        type(err).__name__)
    result = await check_sender(
        from_address=row.address, smtp_host=smtp_host_of(row.smtp_url, settings),
        dkim_selector=row.dkim_selector if row.dkim_key else None, dkim_public_key=public,
        resolver=settings.dns_resolver)
    return SenderCheckReport(
        sender=row.name, domain=result.domain, ok=result.ok,
        checks=[CheckLine(name=c.name, status=c.status, detail=c.detail) for c in result.checks],
        dkim_record=record, dkim_selector=row.dkim_selector)


# -- the service --------------------------------------------------------------------------------


class Senders:
    """The senders of one deployment: its settings and store, and a Temporal client only
    when a resumed sender's campaigns are to be told (`client`, made on first use)."""

    def __init__(self, settings: Settings, store: Store,
                 client: Callable[[], Awaitable[Client]] | None = None) -> None:
        self.settings = settings
        self.store = store
        self._client = client

    async def _row(self, name: str) -> SenderRow:
        row = await self.store.get_sender(name)
        if row is None or row.removed_at is not None:
            raise NotFound(f"no sender {name!r}" + (" (removed)" if row else ""))
        return row

    async def add(self, spec: SenderSpec, *, by: str = "unknown") -> SenderStatus:
        """Validate, seal and store a new sender; Conflict when the name is taken."""
        if spec.smtp_url is not None:
            check_url(spec.smtp_url, "smtp_url", ("smtp", "smtps"))
        if spec.imap_url is not None:
            check_url(spec.imap_url, "imap_url", ("imap", "imaps"), login=True)
        if spec.dkim_key is not None:
            try:
                dkim_public_value(spec.dkim_key)
            except ValueError as err:
                raise BadInput(str(err), field="dkim_key") from err
        existing = await self.store.get_sender(spec.name)
        if existing is not None and existing.removed_at is None:
            raise Conflict(f"a sender named {spec.name!r} exists already: remove it first, or "
                           "choose another name")
        row = SenderRow(
            name=spec.name, from_addr=spec.from_, transport=spec.transport,
            smtp_url=sealed(spec.smtp_url, "smtp_url", self.settings),
            imap_url=sealed(spec.imap_url, "imap_url", self.settings),
            daily_cap=spec.daily_cap, hourly_cap=spec.hourly_cap,
            min_gap_seconds=spec.min_gap_seconds, ramp_start=spec.ramp_start,
            ramp_step=spec.ramp_step, dkim_selector=spec.dkim_selector,
            dkim_key=sealed(spec.dkim_key, "dkim_key", self.settings), created_at=_now())
        if not await self.store.add_sender(row):
            raise Conflict(f"a sender named {spec.name!r} exists already: remove it first, or "
                           "choose another name")
        await self._audit("sender_added", row.name, by, {
            "from": row.from_addr, "transport": row.transport, "daily_cap": row.daily_cap,
            "hourly_cap": row.hourly_cap, "min_gap_seconds": row.min_gap_seconds,
            "ramp_start": row.ramp_start, "ramp_step": row.ramp_step,
            "dkim_selector": row.dkim_selector,
            "secrets": [f for f in SECRET_FIELDS if getattr(row, f)]})
        return await self._status(await self._row(row.name))

    async def list(self) -> list[SenderStatus]:
        """Every sender not removed, by name, with its caps, today's cap, recent sends, next
        slot, health and pause (URLs redacted)."""
        return [await self._status(row) for row in await self.store.list_senders()]

    async def get(self, name: str) -> SenderStatus:
        return await self._status(await self._row(name))

    async def pause(self, name: str, note: str | None = None, *, by: str) -> SenderChange:
        """Pause a sender: its sends wait (their leads keep it) until it is resumed."""
        if note is not None and len(note) > MAX_NOTE:
            raise BadInput(f"at most {MAX_NOTE} characters", field="note")
        await self._row(name)
        reason = (note or "").strip() or f"paused by {by}"
        if not await self.store.set_sender_paused(name, True, reason):
            raise NotFound(f"no sender {name!r}")
        await self._audit("sender_paused", name, by, {"reason": reason})
        return SenderChange(name=name, action="pause", paused_reason=reason)

    async def resume(self, name: str, *, by: str) -> SenderChange:
        """Resume a sender: the sends its pause held wait for its capacity again, due now,
        and each running campaign they belong to is told (its `senders_changed` signal)."""
        row = await self._row(name)
        if not await self.store.set_sender_paused(name, False, None):
            raise NotFound(f"no sender {name!r}")
        campaigns = list(dict.fromkeys(await self.store.release_sender_holds(name, _now())))
        # Recorded before the campaigns are told: the resume has happened whatever telling
        # them does (a campaign not told finds its sends due on its next check anyway).
        await self._audit("sender_resumed", name, by, {
            "was": row.paused_reason, "campaigns_released": sorted(campaigns)})
        told, not_told = [], []
        for cid in campaigns:
            try:
                if await self._tell(cid):
                    told.append(cid)
            except TemporalUnreachable as err:
                log.warning("sender %s resumed; campaign %s not told: %s", name, cid, err)
                not_told.append(cid)
        return SenderChange(name=name, action="resume", campaigns_signalled=told,
                            campaigns_not_told=not_told)

    async def remove(self, name: str, *, by: str) -> SenderChange:
        """Mark a sender removed: no new start uses it, and the steps still to go from it
        in running campaigns are stopped when they fall due; its past sends stay on record."""
        await self._row(name)
        if not await self.store.remove_sender(name):
            raise NotFound(f"no sender {name!r}")
        await self._audit("sender_removed", name, by, {})
        return SenderChange(name=name, action="remove")

    async def check(self, name: str) -> SenderCheckReport:
        """The DNS preflight of a sender's From domain (MX, SPF, DKIM, DMARC)."""
        return await check_row(await self._row(name), self.settings)

    # -- helpers -------------------------------------------------------------------------------

    async def _status(self, row: SenderRow) -> SenderStatus:
        from campaign_core.sender_capacity import sender_status

        return await sender_status(self.store, row, self.settings, _now())

    async def _audit(self, kind: str, name: str, by: str, data: dict[str, Any]) -> None:
        await self.store.save_envelope(audit_record(kind, name, data, by))
        log.info("%s: %s by %s", kind.replace("_", " "), name, by)

    async def _tell(self, campaign_id: str) -> bool:
        """Signal `senders_changed` to a campaign; False when it no longer runs (or there
        is no Temporal client to tell it with: its schedule finds the sends due anyway)."""
        if self._client is None:
            return False
        client = await self._client()
        handle = client.get_workflow_handle(campaign_workflow_id(campaign_id))
        try:
            await handle.signal(CampaignWorkflow.senders_changed)
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                return False
            raise
        return True

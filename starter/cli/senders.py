"""`campaign sender add|list|pause|resume|remove|check`: the mailboxes campaigns send from
(issue 28), over `starter.senders.Senders`, as the `/senders` routes are.

They need the store (and, for `check`, DNS); only `resume` talks to Temporal, to tell the
running campaigns whose sends it released. A secret (an SMTP or IMAP URL with its password,
a DKIM key) is never printed: listings show it redacted, `env:VAR` as given.

`check` exits 1 when a check fails (the command worked; its answer is a failure, as a
linter's), 0 when every check is ok or a warning; 2 for an unknown name, as everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from campaign_core.senders import (
    DEFAULT_DAILY_CAP,
    DEFAULT_HOURLY_CAP,
    DEFAULT_MIN_GAP_SECONDS,
    SenderSpec,
    SenderStatus,
)
from campaign_core.sequence import FollowUpError, follow_up_seconds
from campaign_core.settings import load_settings
from starter.cli.app import JsonFlag, emit_json, err, fail, folded_table, out, run, shown
from starter.cli.campaigns import By, os_user
from starter.errors import BadInput, Conflict, NotFound
from starter.manager import ControlPlane
from starter.senders import SenderChange, SenderCheckReport, Senders

sender_app = typer.Typer(
    help="Senders: the mailboxes campaigns send from, each with its caps, warm-up and DKIM "
         "key; a start spreads its leads over them (docs/senders.md).",
    no_args_is_help=True,
)

T = TypeVar("T")
Name = Annotated[str, typer.Argument(metavar="NAME", help="The sender's name.")]
#: What to do about a name that is not a sender, or one that is taken.
LISTED: dict[type[BadInput], str] = {NotFound: "see `campaign sender list`"}
TAKEN: dict[type[BadInput], str] = {Conflict: "`campaign sender remove NAME` frees the name"}
#: The CLI's flag for a field of the sender's body, where it is not the field's own name.
FLAG_OF_FIELD = {"name": "NAME", "from_": "--from", "from": "--from", "transport": "--smtp-url / --outbox",
                 "min_gap_seconds": "--min-gap", "dkim_key": "--dkim-key"}


async def _with_senders(act: Callable[[Senders], Awaitable[T]]) -> T:
    """`act` on the deployment's senders, the store closed after (Temporal only if used)."""
    plane = ControlPlane(load_settings())
    try:
        return await act(Senders(plane.settings, plane.store, plane.client))
    finally:
        await plane.close()


def gap_seconds(text: str) -> int:
    """`--min-gap` (`90s`, `2m`, `0`) in seconds, read as `--follow-up` is; exit 2 if not."""
    if text.strip().lower() in ("0", "0s"):
        return 0
    try:
        return follow_up_seconds(text)
    except FollowUpError as exc:
        fail(2, f"--min-gap: {exc}")


def read_key_file(path: Path) -> str:
    """The DKIM private key (PEM) of `--dkim-key FILE`; exit 2 naming the file if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(2, f"--dkim-key {path}: cannot read ({type(exc).__name__}: "
                f"{getattr(exc, 'strerror', None) or exc})")


def spec_message(error: ValidationError) -> str:
    """What is wrong with the sender the flags describe, each line naming its flag."""
    lines = []
    for e in error.errors(include_url=False, include_input=False):
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-")) if field else ""
        message = str(e["msg"]).removeprefix("Value error, ")
        if not flag:  # a rule over several fields names them as the body does: say flags
            message = re.sub(r"\b(" + "|".join(SenderSpec.model_fields) + r")\b",
                             lambda m: FLAG_OF_FIELD.get(m[1], "--" + m[1].replace("_", "-")),
                             message)
        lines.append(f"{flag}: {message}" if flag else message)
    return "\n".join(lines)


def phrased_field(exc: BadInput) -> str:
    """A service error about one field, as its flag says it (`--dkim-key: ...`)."""
    if not exc.field:
        return str(exc)
    return f"{FLAG_OF_FIELD.get(exc.field, '--' + exc.field.replace('_', '-'))}: {exc.reason}"


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    at = value.astimezone(UTC)
    return "now" if at <= datetime.now(UTC) else f"{at:%Y-%m-%d %H:%M} UTC"


def _rate(value: float) -> str:
    return f"{value * 100:.1f}%"


def status_json(status: SenderStatus) -> dict[str, object]:
    """One sender as `list --json` and `add --json` print it (`from`, not `from_`)."""
    return status.model_dump(mode="json", by_alias=True)


@sender_app.command("add")
def add(
    name: Name,
    from_: Annotated[str, typer.Option("--from", help='The From: "Display Name <address>".')],
    smtp_url: Annotated[str | None, typer.Option(
        "--smtp-url", help="How it sends: smtp(s)://user:pass@host:port, or env:VARIABLE "
        "(read by the worker when it sends). A URL in clear is stored encrypted with "
        "CAMPAIGN_ENCRYPTION_KEY, and refused without it.")] = None,
    outbox: Annotated[bool, typer.Option(
        "--outbox", help="Write its messages to the outbox (with its From) instead of "
        "sending: to try senders without a server.")] = False,
    imap_url: Annotated[str | None, typer.Option(
        "--imap-url", help="Its reply mailbox, polled like CAMPAIGN_IMAP_URL: "
        "imaps://user:pass@host/INBOX or env:VARIABLE.")] = None,
    daily_cap: Annotated[int, typer.Option(
        "--daily-cap", min=1, help="At most this many sends in any 24 hours, over every "
        "campaign.")] = DEFAULT_DAILY_CAP,
    hourly_cap: Annotated[int, typer.Option(
        "--hourly-cap", min=1, help="At most this many sends in any hour.")] = DEFAULT_HOURLY_CAP,
    min_gap: Annotated[str, typer.Option(
        "--min-gap", help="At least this long between two sends (90s, 2m; 0: none), with a "
        "little random jitter.")] = f"{DEFAULT_MIN_GAP_SECONDS}s",
    ramp_start: Annotated[int | None, typer.Option(
        "--ramp-start", min=1, help="Warm-up: the cap of its first day with a send (with "
        "--ramp-step).")] = None,
    ramp_step: Annotated[int | None, typer.Option(
        "--ramp-step", min=0, help="Warm-up: the cap grows by this much on each further day "
        "with a send, up to --daily-cap.")] = None,
    dkim_key: Annotated[Path | None, typer.Option(
        "--dkim-key", metavar="FILE", help="Its DKIM private key (PEM; RSA of 2048 bits or "
        "more, or Ed25519): every message it sends is signed. Stored encrypted.")] = None,
    dkim_selector: Annotated[str | None, typer.Option(
        "--dkim-selector", help="The DKIM selector the key is published under "
        "(SELECTOR._domainkey.DOMAIN).")] = None,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a sender (a mailbox) with its caps, warm-up and DKIM key. Give --smtp-url or
    --outbox. Defaults: 40 a day, 12 an hour, 60s apart, no ramp."""
    if outbox == (smtp_url is not None):
        fail(2, "--smtp-url / --outbox: give one of them (how the sender sends)")
    try:
        spec = SenderSpec.model_validate({
            "name": name, "from": from_, "transport": "outbox" if outbox else "smtp",
            "smtp_url": smtp_url, "imap_url": imap_url, "daily_cap": daily_cap,
            "hourly_cap": hourly_cap, "min_gap_seconds": gap_seconds(min_gap),
            "ramp_start": ramp_start, "ramp_step": ramp_step, "dkim_selector": dkim_selector,
            "dkim_key": read_key_file(dkim_key) if dkim_key is not None else None})
    except ValidationError as exc:
        fail(2, spec_message(exc))

    async def go() -> SenderStatus:
        try:
            return await _with_senders(lambda s: s.add(spec, by=by or os_user()))
        except BadInput as exc:
            if exc.field and not isinstance(exc, Conflict):
                where = f" ({dkim_key})" if exc.field == "dkim_key" else ""
                fail(2, phrased_field(exc) + where)
            raise

    status = run(go(), hints=TAKEN)
    if as_json:
        emit_json(status_json(status))
        return
    how = "outbox" if status.transport == "outbox" else shown(status.smtp_url)
    err.print(f"Sender {shown(status.name)} added: {shown(status.from_)} via {how}; "
              f"{status.daily_cap}/day (today {status.today_cap}), {status.hourly_cap}/hour, "
              f"{status.min_gap_seconds}s apart.", highlight=False)
    if status.dkim_selector:
        err.print(f"Publish its DKIM key: `campaign sender check {shown(status.name)}` shows "
                  "the record.", highlight=False)


@sender_app.command("list")
def list_senders(as_json: JsonFlag = False) -> None:
    """Every sender: caps, today's cap under the ramp, sent in the last 24 h and hour, next
    free slot, bounce and complaint rates, paused and why."""
    rows = run(_with_senders(lambda s: s.list()))
    if as_json:
        emit_json([status_json(r) for r in rows])
        return
    if not rows:
        out.print("No senders: campaigns send as CAMPAIGN_FROM. Add one with `campaign sender "
                  "add NAME --from ... --smtp-url ...`.")
        return
    table = folded_table("name", "from", "caps (day/hour/gap)", "today's cap", "sent 24h/1h",
                  "next slot", "bounces", "complaints", "paused")
    for r in rows:
        ramp = f", ramp {r.ramp_start}+{r.ramp_step}/day" if r.ramp_start is not None else ""
        paused = ("yes" + (f": {r.paused_reason}" if r.paused_reason else "")) if r.paused else ""
        table.add_row(shown(r.name), shown(r.from_),
                      shown(f"{r.daily_cap}/{r.hourly_cap}/{r.min_gap_seconds}s{ramp}"),
                      shown(r.today_cap), shown(f"{r.sent_24h}/{r.sent_1h}"),
                      shown(_when(r.next_slot) if not r.paused else "held"),
                      shown(_rate(r.bounce_rate)), shown(_rate(r.complaint_rate)), shown(paused))
    out.print(table)


@sender_app.command("pause")
def pause(
    name: Name,
    note: Annotated[str | None, typer.Option("--note", help="Why (shown in `sender list`).")]
    = None,
    by: By = None,
) -> None:
    """Pause a sender: its sends wait (its leads keep it) until `campaign sender resume`."""
    change: SenderChange = run(_with_senders(lambda s: s.pause(name, note, by=by or os_user())),
                               hints=LISTED)
    err.print(f"Paused sender {shown(name)} ({shown(change.paused_reason)}): its sends wait "
              f"until `campaign sender resume {shown(name)}`.", highlight=False)


@sender_app.command("resume")
def resume(name: Name, by: By = None) -> None:
    """Resume a sender: the sends its pause held go out as its capacity allows."""
    change: SenderChange = run(_with_senders(lambda s: s.resume(name, by=by or os_user())),
                               hints=LISTED)
    told = (f"; told campaign(s) {shown(', '.join(change.campaigns_signalled))}"
            if change.campaigns_signalled else "")
    err.print(f"Resumed sender {shown(name)}{told}.", highlight=False)
    if change.campaigns_not_told:
        err.print(f"[yellow]Temporal is not reachable: campaign(s) "
                  f"{shown(', '.join(change.campaigns_not_told))} were not told; they send "
                  "the held messages when their schedule next wakes[/]", highlight=False)


@sender_app.command("remove")
def remove(name: Name, by: By = None) -> None:
    """Remove a sender: no new campaign uses it, and the steps still to go from it in
    running campaigns are stopped; its past sends stay on record (the name may be reused)."""
    run(_with_senders(lambda s: s.remove(name, by=by or os_user())), hints=LISTED)
    err.print(f"Removed sender {shown(name)}.", highlight=False)


@sender_app.command("check")
def check(name: Name, as_json: JsonFlag = False) -> None:
    """DNS preflight of the sender's From domain: MX, SPF (covering its SMTP host), the DKIM
    selector's key (matching the configured one) and DMARC, each ok, warn or fail with why.
    CAMPAIGN_DNS_RESOLVER=host:port asks another resolver. Exits 1 when a check fails."""
    report: SenderCheckReport = run(_with_senders(lambda s: s.check(name)), hints=LISTED)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        out.print(f"[bold]{shown(report.sender)}[/] ({shown(report.domain)})", highlight=False)
        for c in report.checks:
            out.print(f"  [{colour[c.status]}]{c.status:<4}[/] {shown(c.name):<6} "
                      f"{shown(c.detail)}", highlight=False)
        if report.dkim_record:
            out.print(f"  publish at {shown(report.dkim_selector)}._domainkey."
                      f"{shown(report.domain)} (TXT): {shown(report.dkim_record)}",
                      highlight=False)
    if not report.ok:
        raise typer.Exit(1)

"""The `campaign` Typer app and what every command shares: consoles, JSON output, exit codes.

Command modules import this one; it imports none of them (`starter/cli/__init__.py`
registers the commands). Exit codes: 0 ok, 2 bad input, 3 Temporal not reachable, 1 else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from campaign_core.codec import EncryptionKeyError
from campaign_core.leads import LeadsFileError
from campaign_core.models import Channel
from campaign_core.settings import Settings, load_settings
from campaign_core.store.base import StoreError
from campaign_core.store.rows import ReportRow
from campaign_core.temporal import TemporalConfigError, TemporalUnreachable
from starter.manager import BadInput, CampaignManager
from starter.start_options import MIN_SEND_RATE, CampaignOptions

app = typer.Typer(
    name="campaign",
    help="Durable multi-agent campaigns on Temporal: draft, approve, deliver exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Piped output is read by scripts and logs: don't squeeze tables into 80 columns.
# No emoji codes: ":warning:" in a company name is shown as typed.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)
log = logging.getLogger("campaign")
T = TypeVar("T")
Opts = TypeVar("Opts", bound=CampaignOptions)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
CampaignId = Annotated[str, typer.Argument(metavar="ID")]
LeadsFile = Annotated[Path, typer.Option("--leads", help="CSV (with header) or JSON Lines file.")]
# The campaign settings `start` and `schedule create` share.
BriefText = Annotated[str | None, typer.Option(help="The brief, as text.")]
BriefFile = Annotated[Path | None, typer.Option("--brief-file", help="The brief, from a file.")]
KbDir = Annotated[Path | None, typer.Option("--kb", help="Knowledge-base directory.")]
ChannelOption = Annotated[Channel, typer.Option(help="Delivery channel.")]
ApprovalTimeout = Annotated[str, typer.Option("--approval-timeout", help="e.g. 72h, 3d.")]
SendWindowOption = Annotated[str | None, typer.Option(
    "--send-window", help="Send only then, in each lead's time zone: '09:00-17:00 Mon-Fri'.")]
DomainLimit = Annotated[int, typer.Option(
    "--domain-limit", min=1, help="At most this many sends a minute to one domain.")]
FollowUpOption = Annotated[list[str] | None, typer.Option(
    "--follow-up", help="A follow-up this long after the previous step's send (30s, 2m, 12h, "
    "3d); repeat for more steps (up to 3). Stops when the person replies, unsubscribes, "
    "bounces or complains.")]
StopOnCompanyReply = Annotated[bool, typer.Option(
    "--stop-on-company-reply", help="A reply from anyone at a lead's company domain stops "
    "the company's other leads too (freemail domains never count).")]
SendRate = Annotated[float | None, typer.Option(
    "--send-rate", min=MIN_SEND_RATE, help="This campaign's sends per second.")]
AllowOverlap = Annotated[bool, typer.Option(
    "--allow-overlap", help="Keep the people in another campaign's sequence still going on, "
    "or who replied within CAMPAIGN_REPLY_COOLDOWN (default 90d): without it they are "
    "skipped and listed (`leads_skipped` in --json).")]
SendersOption = Annotated[list[str] | None, typer.Option(
    "--senders", help="The senders (mailboxes) to spread the leads over, e.g. --senders ana,bo "
    "(or the flag repeated); each must exist (`campaign sender list`). Default: every sender "
    "neither paused nor removed; none defined: CAMPAIGN_FROM as before. smtp and outbox "
    "channels; the webhook channel ignores senders.")]
StrictSenders = Annotated[bool, typer.Option(
    "--strict-senders", help="Refuse the start (exit 2) when a chosen smtp sender fails its "
    "DNS check (`campaign sender check`); without it a failing check is a warning.")]
BudgetUsd = Annotated[float | None, typer.Option(
    "--budget-usd", help="Cap on the campaign's LLM spend in USD: drafting pauses before a "
    "call that could pass it; `campaign resume ID --budget-usd M` raises it.")]


# ANSI/VT escape sequences (CSI, OSC, and two-byte ESC forms, 7- and 8-bit introducers),
# then any other control character, and the bidi controls that reorder what is shown.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"                     # CSI ... final byte
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... BEL/ST
    r"|\x1b[ -/]*[0-~]"                                      # other ESC sequences
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: Any, *, multiline: bool = False) -> str:
    """Any value from the store (or a user's file) made safe to print in the terminal.

    Escape sequences and control characters are removed (so nothing moves the cursor,
    recolours or hides text), Rich markup is escaped (so `[conceal]...` or `[/]` is shown
    as typed), and unless `multiline` a newline or tab becomes a space. Every value the
    CLI prints from the store goes through here; `--json` output does not need it.
    """
    text = "" if value is None else str(value)
    text = _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))
    if not multiline:
        text = text.replace("\n", " ").replace("\t", " ")
    return escape(text)


def fail(code: int, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {shown(message, multiline=True)}", highlight=False)
    raise typer.Exit(code)


def read_body_file(body_file: Path | None) -> str | None:
    """The text of `--body-file` (`-`: standard input), None without one; exit 2 naming the
    file when it cannot be read. Shared by `edit` and `inbox answer`."""
    if body_file is None:
        return None
    try:
        return (typer.get_text_stream("stdin").read() if str(body_file) == "-"
                else body_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        fail(2, f"--body-file {body_file}: cannot read ({exc})")


#: The options whose flag is not their field's name with dashes (see `phrased`).
FLAG_OF_FIELD = {"follow_ups": "--follow-up"}


def phrased(exc: BadInput, hints: dict[type[BadInput], str] | None = None) -> str:
    """A service's error as the CLI says it: the field at fault as its flag (`--id: ...`,
    `--channel smtp: ...`), and the command's hint for that kind of error if it has one."""
    text = str(exc)
    if exc.field:
        flag = FLAG_OF_FIELD.get(exc.field, "--" + exc.field.replace("_", "-"))
        text = f"{flag} {exc.value}: {exc.reason}" if exc.value else f"{flag}: {exc.reason}"
    hint = next((h for kind, h in (hints or {}).items() if isinstance(exc, kind)), None)
    return f"{text} ({hint})" if hint else text


def run(coro: Coroutine[Any, Any, T], *, hints: dict[type[BadInput], str] | None = None) -> T:
    """Run a command's coroutine, mapping failures to the contract's exit codes; `hints`
    adds what to do next to an error of that kind (e.g. the command that lists names)."""
    try:
        return asyncio.run(coro)
    except BadInput as exc:
        fail(2, phrased(exc, hints))
    except (LeadsFileError, EncryptionKeyError, TemporalConfigError) as exc:
        fail(2, str(exc))
    except TemporalUnreachable as exc:
        fail(3, str(exc))
    except StoreError as exc:
        fail(1, f"store: {exc}")
    except typer.Exit:
        raise
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        fail(1, f"{exc.__class__.__name__}: {exc}")


def read_brief(brief: str | None, brief_file: Path | None) -> str:
    """The `--brief` or `--brief-file` text (shared by `start` and `schedule create`), or
    exit 2 naming the option."""
    if brief is not None and brief_file is not None:
        fail(2, "give --brief or --brief-file, not both")
    if brief_file is not None:
        try:
            return brief_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(2, f"--brief-file {brief_file}: cannot read ({exc})")
    return brief or ""


def flag_of(option: str) -> str:
    """The command-line flag of a `CampaignOptions` field: `send_rate` -> `--send-rate`."""
    return FLAG_OF_FIELD.get(option, "--" + option.replace("_", "-"))


def options_message(error: ValidationError) -> str:
    """What is wrong with the options, each line naming its flag (and which repeat of a
    repeated one): the CLI's words for the errors the API reports by body field."""
    lines = []
    for e in error.errors(include_url=False, include_input=False):
        field, *rest = e["loc"]
        flag = flag_of(str(field))
        message = str(e["msg"]).removeprefix("Value error, ").removeprefix(f"{field}: ")
        where = "".join(f"{flag.lstrip('-')} {i + 1}: " for i in rest if isinstance(i, int))
        lines.append(f"{flag}: {where}{message}")
    return "\n".join(lines)


def build_options(model: type[Opts], **values: Any) -> Opts:
    """The start options the flags give (`CampaignOptions`, `ScheduleOptions`), validated
    as the API validates them; exit 2 naming the flag of each that is wrong."""
    try:
        return model(**values)
    except ValidationError as exc:
        fail(2, options_message(exc))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def manager(settings: Settings | None = None) -> CampaignManager:
    return CampaignManager(settings or load_settings())


def with_logging(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("temporalio").setLevel(logging.WARNING)
        return fn(*args, **kwargs)

    return wrapper


def folded_table(*headers: str) -> Table:
    """A table whose long cells (ids, addresses, URLs) fold onto more lines rather than
    being cut with an ellipsis: the user must be able to copy them whole."""
    table = Table(*headers)
    for column in table.columns:
        column.overflow = "fold"
    return table


def report_table(rows: list[ReportRow]) -> Table:
    """`campaign report` (and the demo's closing report) as a table."""
    table = folded_table("lead", "email", "draft", "delivery", "message id / error")
    for r in rows:
        table.add_row(shown(r.lead_id), shown(r.email), shown(r.draft_status),
                      shown(r.delivery_status), shown(r.message_id or r.error or ""))
    return table

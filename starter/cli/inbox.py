"""`campaign inbox`: the replies that need a person, and what a person does with them.

`campaign inbox [--campaign ID] [--intent I ...] [--json]` lists them, newest first;
`inbox answer REPLY_ID [--subject S] [--body-file F] [--send] [--by NAME]` edits the drafted
answer and, with `--send`, sends it (once, however often it is run); `inbox done REPLY_ID`
takes one off the inbox; `inbox intent REPLY_ID INTENT` records a person's reading and
starts the action for it. Through the same `starter.inbox` as the API and the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from starter.cli.app import (
    JsonFlag,
    emit_json,
    err,
    fail,
    folded_table,
    manager,
    out,
    read_body_file,
    run,
    shown,
    with_logging,
)
from starter.cli.campaigns import By, os_user
from starter.errors import BadInput
from starter.manager import CampaignManager

inbox_app = typer.Typer(
    help="The replies that need a person: list them, answer them (sent once), change their "
         "intent, mark them done.", invoke_without_command=True)
T = TypeVar("T")
ReplyId = Annotated[str, typer.Argument(metavar="REPLY_ID",
                                        help="The reply's id (`campaign inbox --json`).")]
#: Lines of a reply's text shown in the table (`--json` has the excerpt in full).
LINES_SHOWN = 3
#: The service's field names as these commands' options and arguments.
_WORDS = {"intent": "--intent", "body": "--body-file", "subject": "--subject",
          "campaign": "--campaign"}


async def _with(act: Callable[[CampaignManager], Awaitable[T]], **words: str) -> T:
    """Run `act` on a manager; a BadInput naming a field is said with this command's own
    option or argument for it (`words` overrides `_WORDS`)."""
    mgr = manager()
    named = _WORDS | words
    try:
        try:
            return await act(mgr)
        except BadInput as exc:
            if exc.field in named:
                raise type(exc)(f"{named[exc.field]}: {exc.reason}") from exc
            raise
    finally:
        await mgr.close()


@inbox_app.callback()
@with_logging
def inbox(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option(
        "--campaign", metavar="ID", help="Only this campaign's replies.")] = None,
    intent: Annotated[list[str] | None, typer.Option(
        "--intent", help="Only this intent (interested, meeting_request, question, unclear, "
        "referral, ...); repeat for several.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The replies that need a person, newest first: the positive ones (interested,
    meeting_request, question), unclear ones, referrals, snoozed ones now due, and those
    awaiting a person's confirmation; each with its drafted answer."""
    if ctx.invoked_subcommand is not None:
        if campaign or intent or as_json:
            fail(2, f"give --campaign, --intent and --json after `inbox "
                    f"{ctx.invoked_subcommand}` (or list without a command)")
        return
    from starter import inbox as service

    items = run(_with(lambda m: service.inbox(m, campaign_id=campaign, intents=intent)))
    if as_json:
        emit_json([i.model_dump() for i in items])
        return
    table = folded_table("received", "reply", "campaign", "email", "intent", "answer", "first lines")
    for i in items:
        lines = "\n".join(i.excerpt.splitlines()[:LINES_SHOWN])
        intent_text = (i.intent or "not read yet") + (
            f" ({i.confidence:.2f})" if i.confidence is not None else "")
        if not i.verified:
            intent_text += ", unverified"
        if (named := i.suggested_lead) is not None:
            who = " ".join(p for p in (named.name, f"<{named.email}>" if named.email else "") if p)
            intent_text += f"\nsuggests {who}"
        table.add_row(shown(i.received_at[:19].replace("T", " ")), shown(i.reply_id),
                      shown(i.campaign_id or ""), shown(i.email), shown(intent_text),
                      shown(i.answer.status), shown(lines, multiline=True))
    out.print(table)
    err.print(f"{len(items)} repl{'y' if len(items) == 1 else 'ies'} to see to; "
              "`campaign inbox answer REPLY_ID --send` sends an answer", highlight=False)


@inbox_app.command("answer")
@with_logging
def answer(
    reply_id: ReplyId,
    body_file: Annotated[Path | None, typer.Option(
        "--body-file", help="The answer's new body, from this file (- for stdin).")] = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", help="The answer's new subject (default: Re: their subject).")] = None,
    send: Annotated[bool, typer.Option(
        "--send", help="Send the answer (once: running this again sends nothing more). "
        "Without it the edit is only saved.")] = False,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Edit the drafted answer to a reply and, with --send, send it in their thread from
    CAMPAIGN_FROM over the campaign's channel (smtp or outbox)."""
    from starter import inbox as service

    body = read_body_file(body_file)
    if body is not None and not body.strip():
        fail(2, f"--body-file {body_file}: the file is empty")
    if subject is not None and not subject.strip():
        fail(2, "--subject: empty")
    who = by or os_user()
    if send:
        sent = run(_with(lambda m: service.send_answer(m, reply_id, by=who, subject=subject,
                                                       body=body)))
        if as_json:
            emit_json(sent.model_dump())
            return
        said = {"sent": f"sent by {shown(sent.by or who)}",
                "already_sent": f"was sent already (by {shown(sent.by or 'someone')}); "
                                "nothing more was sent",
                "sending": "is being sent (the answer workflow runs; run this again to see)"}
        out.print(f"answer to {shown(reply_id)} {said[sent.status]}"
                  + (f", Message-ID {shown(sent.message_id)}" if sent.message_id else ""),
                  highlight=False)
        return
    if body is None and subject is None:
        fail(2, "nothing to do: give --body-file and/or --subject to edit, --send to send")
    saved = run(_with(lambda m: service.save_answer(m, reply_id, subject=subject, body=body,
                                                    by=who)))
    if as_json:
        emit_json(saved.model_dump())
        return
    out.print(f"answer to {shown(reply_id)} saved by {shown(who)}; `campaign inbox answer "
              f"{shown(reply_id)} --send` sends it", highlight=False)


@inbox_app.command("done")
@with_logging
def done(reply_id: ReplyId, by: By = None, as_json: JsonFlag = False) -> None:
    """Take a reply off the inbox (nothing is sent)."""
    from starter import inbox as service

    result = run(_with(lambda m: service.mark_done(m, reply_id, by=by or os_user())))
    if as_json:
        emit_json(result.model_dump())
        return
    out.print(f"reply {shown(reply_id)} done (by {shown(result.by)})", highlight=False)


@inbox_app.command("intent")
@with_logging
def intent(
    reply_id: ReplyId,
    new_intent: Annotated[str, typer.Argument(
        metavar="INTENT", help="interested, meeting_request, question, not_now, "
        "not_interested, unsubscribe, out_of_office, referral, auto_reply, bounce or unclear.")],
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a reply's intent: a person's reading, and the action for it follows (an
    unsubscribe suppresses, a positive intent drafts an answer, ...)."""
    from starter import inbox as service

    result = run(_with(lambda m: service.change_intent(m, reply_id, new_intent,
                                                       by=by or os_user()), intent="INTENT"))
    if as_json:
        emit_json(result.model_dump())
        return
    out.print(f"reply {shown(reply_id)}: intent {shown(result.intent)} (by {shown(result.by)})"
              + ("; its action started" if result.action_started else ""), highlight=False)

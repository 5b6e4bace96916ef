"""The `campaign` command line (Typer + Rich): `main` is the console script.

`app.py` holds the app and the helpers every command shares; one module per command
group defines the commands; this module registers them, in the order `--help` lists them.
With `--json` a command writes exactly one JSON document to stdout; everything else
goes to stderr. Exit codes: 0 ok, 2 bad input, 3 Temporal not reachable, 1 anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

from campaign_core.tracing import flush_tracing
from starter.cli import campaigns, codec, replies, stack, suppression
from starter.cli.app import app
from starter.cli.db import db_app
from starter.cli.inbox import inbox_app
from starter.cli.reviewers import reviewer_app
from starter.cli.schedule import schedule_app
from starter.cli.senders import sender_app

for _name, _command in (
    ("dev", stack.dev),
    ("worker", stack.worker),
    ("api", stack.api),
    ("start", campaigns.start),
    ("add-leads", campaigns.add_leads),
    ("status", campaigns.status),
    ("drafts", campaigns.drafts),
    ("edit", campaigns.edit),
    ("exclude", campaigns.exclude),
    ("include", campaigns.include),
    ("approve", campaigns.approve),
    ("reject", campaigns.reject),
    ("pause", campaigns.pause),
    ("resume", campaigns.resume),
    ("cancel", campaigns.cancel),
    ("report", campaigns.report),
    ("audit", campaigns.audit),
    ("replies", replies.replies),
    ("suppress", suppression.suppress),
    ("suppressions", suppression.suppressions),
    ("unsuppress", suppression.unsuppress),
    ("demo", stack.demo),
):
    app.command(_name)(_command)
app.command("forget", help=suppression.FORGET_HELP)(suppression.forget)
app.command("codec-server")(codec.codec_server)
app.add_typer(db_app, name="db")
app.add_typer(schedule_app, name="schedule")
app.add_typer(sender_app, name="sender")
app.add_typer(reviewer_app, name="reviewer")
app.add_typer(inbox_app, name="inbox")

__all__ = ["app", "main"]


def main() -> None:
    """Run the command, then end the process without interpreter finalization.

    The Temporal client's Rust threads can outlive finalization and abort the process with
    "PyGILState_Release" (temporalio/sdk-python#300), turning a finished command into exit
    -6. So flush what we own (spans, logs, stdio) and leave with `os._exit`.
    """
    code: int = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        flush_tracing()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(code)

"""Commands that run the stack: `dev`, `worker`, `api` and `demo`.

Their heavy imports (uvicorn, FastAPI, the dev server, the workers) happen inside the
command, so the rest of the CLI starts quickly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from campaign_core.codec import EncryptionKeyError
from campaign_core.settings import load_settings
from starter.cli.app import fail, log, run, with_logging
from starter.cli.db import migrate_store
from starter.manager import BadInput


@with_logging
def dev(
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option("--ui-port", help="Temporal Web UI port.")] = 8233,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Start only the server.")] = False,
    api_port: Annotated[int, typer.Option(
        "--api-port", min=0, max=65535,
        help="Serve the API and the review pages on 127.0.0.1 at this port (0: do not).")] = 8000,
) -> None:
    """Start the embedded Temporal dev server (persistent, with UI), all workers, and the API
    with the review pages (printing a one-time sign-in link for the reviewer `dev`)."""
    from campaign_core.temporal import data_converter
    from starter.devstack import run_dev

    settings = load_settings()
    try:
        data_converter(settings)  # no key while CAMPAIGN_REQUIRE_ENCRYPTION is on: stop here
    except EncryptionKeyError as exc:
        fail(2, str(exc))
    if not no_worker or api_port:
        run(migrate_store(settings))  # `campaign dev` keeps its store at the code's schema
    run(run_dev(settings, port=port, ui_port=ui_port, with_workers=not no_worker,
                api_port=api_port))


@with_logging
def worker(
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues (default: all).")] = None,
) -> None:
    """Run workers against TEMPORAL_ADDRESS for all task queues, or the named ones."""
    import worker_main

    try:
        run(worker_main.main(queues.split(",") if queues else None))
    except ValueError as exc:
        fail(2, str(exc))


@with_logging
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev", help="Serve without CAMPAIGN_API_TOKEN (a private machine only).")] = False,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    import uvicorn

    from campaign_core.temporal import data_converter
    from starter.api import create_app

    settings = load_settings()
    try:
        data_converter(settings)  # a malformed CAMPAIGN_ENCRYPTION_KEY stops us here, not later
        application = create_app(settings, insecure_dev=insecure_dev)
    except (BadInput, EncryptionKeyError) as exc:
        fail(2, str(exc))
    if insecure_dev and settings.api_token is None:
        log.warning("serving WITHOUT authentication (--insecure-dev): keep this private")
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)


@with_logging
def demo(
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve without asking.")] = False,
    leads: Annotated[int, typer.Option("--leads", min=1, max=5000, help="How many sample leads.")] = 12,
) -> None:
    """Embedded stack + sample leads + knowledge base, end to end into the outbox."""
    from starter.demo import run_demo

    run(run_demo(load_settings(), auto_approve=auto_approve, n_leads=leads))

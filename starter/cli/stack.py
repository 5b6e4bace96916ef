"""Commands that run the stack: `dev`, `worker`, `api` and `demo`.

Their heavy imports (uvicorn, FastAPI, the dev server, the workers) happen inside the
command, so the rest of the CLI starts quickly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from campaign_core.codec import EncryptionKeyError
from campaign_core.settings import Settings, load_settings
from starter.cli.app import fail, log, run, with_logging
from starter.cli.db import migrate_store
from starter.manager import BadInput


def metrics_at(host: str, port: int | None) -> str | None:
    """`host:port` of a /metrics listener, checked free now so the error is a clear one."""
    from campaign_core.metrics import metrics_address

    at = metrics_address(host, port)
    if at and port and not port_available(host, port):
        fail(2, f"--metrics-port {port}: {host}:{port} is in use (pick another, or 0 for off)")
    return at


#: The /metrics port of `campaign worker` and `campaign dev` when none is given.
DEFAULT_METRICS_PORT = 9464
#: How many ports after the default a process without `--metrics-port` tries when the
#: default is taken (a second worker on the same host: 9465, then 9466, ...).
METRICS_FALLBACKS = 10


def start_metrics(settings: Settings, host: str, port: int | None, *,
                  fallback: bool = False) -> None:
    """Give this process a runtime that exports metrics (Prometheus, else OTLP if set).

    A port the user chose and that is taken is exit 2: they asked for that port. With
    `fallback`, `port` is the command's default, not the user's choice, and being taken
    only means another process of this host got there first (`campaign dev` and a
    `campaign worker`, or two workers, as the README runs them): the next free port after
    it is used, named in a warning on stderr, or none (with a warning) when the next
    METRICS_FALLBACKS are taken too.
    """
    from campaign_core.metrics import install, metrics_address, telemetry_runtime

    if not (fallback and port):
        install(telemetry_runtime(settings, metrics_at(host, port)))
        return
    for candidate in range(port, port + METRICS_FALLBACKS + 1):
        if not port_available(host, candidate):
            continue
        try:
            runtime = telemetry_runtime(settings, metrics_address(host, candidate))
        except ValueError as exc:  # taken between the check and the bind: try the next
            if "in use" not in str(exc):
                raise
            continue
        if candidate != port:
            log.warning("metrics: %s:%s is in use (another worker?); serving /metrics on "
                        "%s:%s instead (--metrics-port N to choose, 0 for off)",
                        host, port, host, candidate)
        install(runtime)
        return
    log.warning("metrics: ports %s-%s on %s are all in use; serving no /metrics "
                "(--metrics-port N to choose one)", port, port + METRICS_FALLBACKS, host)
    install(telemetry_runtime(settings, None))


def served_url(host: str, port: int) -> str:
    """The base URL of an API served on `host`:`port`, as a browser on this machine reaches
    it (a wildcard interface is reached as localhost)."""
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def require_key(settings: Settings) -> None:
    """Exit 2 when the encryption setting is unusable: no key while
    CAMPAIGN_REQUIRE_ENCRYPTION is on, or a malformed CAMPAIGN_ENCRYPTION_KEY. Checked
    before anything else a process opens, so that is the error it reports."""
    from campaign_core.temporal import data_converter

    try:
        data_converter(settings)
    except EncryptionKeyError as exc:
        fail(2, str(exc))


def port_available(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@with_logging
def dev(
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option("--ui-port", help="Temporal Web UI port.")] = 8233,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Start only the server.")] = False,
    api_port: Annotated[int, typer.Option(
        "--api-port", min=0, max=65535,
        help="Serve the API and the review pages on 127.0.0.1 at this port (0: do not).")] = 8000,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", show_default=False,
        help="Prometheus /metrics on 127.0.0.1 (0: off). Default: 9464 (the next free port "
        "when taken) with the workers; none with --no-worker.")] = None,
) -> None:
    """Start the embedded Temporal dev server (persistent, with UI), all workers, and the API
    with the review pages (printing a one-time sign-in link for the reviewer `dev`)."""
    from starter.devstack import run_dev

    settings = load_settings()
    require_key(settings)
    # `--no-worker` runs no workers, so unless asked it serves no /metrics: port 9464 stays
    # free for the `campaign worker` the README starts next to it (OTLP still, when set).
    if metrics_port is None and no_worker:
        metrics_port = 0
    start_metrics(settings, "127.0.0.1",
                  DEFAULT_METRICS_PORT if metrics_port is None else metrics_port,
                  fallback=metrics_port is None)
    if not no_worker or api_port:
        run(migrate_store(settings))  # `campaign dev` keeps its store at the code's schema
    run(run_dev(settings, port=port, ui_port=ui_port, with_workers=not no_worker,
                api_port=api_port))


@with_logging
def worker(
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues (default: all).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", show_default=False,
        help="Prometheus /metrics port (0: off). Default: 9464, or the next free port when "
        "another process has it (a warning names the one used).")] = None,
    metrics_host: Annotated[str, typer.Option(
        "--metrics-host", help="Interface of the /metrics listener.")] = "127.0.0.1",
) -> None:
    """Run workers against TEMPORAL_ADDRESS for all task queues, or the named ones."""
    import worker_main

    settings = load_settings()
    require_key(settings)  # before the port: a missing key is the error to report
    if metrics_port is None:
        start_metrics(settings, metrics_host, DEFAULT_METRICS_PORT, fallback=True)
    else:
        start_metrics(settings, metrics_host, metrics_port)
    try:
        run(worker_main.main(queues.split(",") if queues else None, settings=settings,
                             metrics_installed=True))
    except ValueError as exc:
        fail(2, str(exc))


@with_logging
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev", help="Serve without CAMPAIGN_API_TOKEN (a private machine only).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Prometheus /metrics on its own port (off unless given).")] = None,
    metrics_host: Annotated[str, typer.Option(
        "--metrics-host", help="Interface of the /metrics listener.")] = "127.0.0.1",
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    import uvicorn

    from starter.api import create_app, server_options

    settings = load_settings()
    require_key(settings)
    start_metrics(settings, metrics_host, metrics_port)
    settings.serve_links_from(served_url(host, port))
    try:
        application = create_app(settings, insecure_dev=insecure_dev)
    except BadInput as exc:
        fail(2, str(exc))
    if insecure_dev and settings.api_token is None:
        log.warning("serving WITHOUT authentication (--insecure-dev): keep this private")
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=False,
                **server_options(settings))


@with_logging
def demo(
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve without asking.")] = False,
    leads: Annotated[int, typer.Option("--leads", min=1, max=5000, help="How many sample leads.")] = 12,
) -> None:
    """Embedded stack + sample leads + knowledge base, end to end into the outbox."""
    from starter.demo import run_demo

    run(run_demo(load_settings(), auto_approve=auto_approve, n_leads=leads))

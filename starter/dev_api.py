"""`campaign dev`'s HTTP side: the API and the review pages on loopback, in the same process.

The API is served on 127.0.0.1 only. Its service routes need `CAMPAIGN_API_TOKEN` as
everywhere; when that is unset, dev makes a random service token for this run and keeps it
to itself (it is never printed), so nothing on the machine can start campaigns through the
API unasked. Reviewers need no service token: on first start dev creates the reviewer `dev`,
and on every start it prints a sign-in link for it carrying a one-time code (15 minutes,
stored as its hash, dead once used); the link never carries a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator

import uvicorn
from pydantic import SecretStr
from temporalio.client import Client

from campaign_core.settings import Settings
from starter.manager import CampaignManager
from starter.review_auth import Reviewers

log = logging.getLogger("campaign.dev")

#: The reviewer `campaign dev` creates and signs in with its one-time link.
DEV_REVIEWER = "dev"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `campaign dev` owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def sign_in_link(manager: CampaignManager, base: str, reviewer: str = DEV_REVIEWER) -> str:
    """Create `reviewer` if new, and a one-time sign-in link for them."""
    reviewers = Reviewers(manager.store)
    if await reviewers.ensure(reviewer):
        log.info("created reviewer %r for the review pages", reviewer)
    code = await reviewers.sign_in_code(reviewer)
    return f"{base}/review/sign-in?code={code}"


@contextlib.asynccontextmanager
async def dev_api(settings: Settings, client: Client, port: int) -> AsyncIterator[str]:
    """Serve the API and the pages on 127.0.0.1:`port` while the block runs; yields the
    sign-in link (print it; do not log it)."""
    from starter.api import create_app, server_options

    api_settings = settings.model_copy()
    if api_settings.api_token is None:
        api_settings.api_token = SecretStr(secrets.token_urlsafe(32))  # private to this run
    manager = CampaignManager(api_settings, client=client)
    base = f"http://127.0.0.1:{port}"
    link = await sign_in_link(manager, base)
    server = _Server(uvicorn.Config(create_app(api_settings, manager=manager), host="127.0.0.1",
                                    port=port, log_level="warning", access_log=False,
                                    lifespan="on", **server_options(api_settings)))
    task = asyncio.create_task(server.serve(), name="campaign-dev-api")
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise RuntimeError(f"the API could not listen on {base} (choose another --api-port)")
            await asyncio.sleep(0.02)
        yield link
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        await manager.close()

"""An ASGI app under a real uvicorn on a free loopback port, and an httpx client for it:
the one way the tests serve the API, the pages and the codec server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from campaign_core.ports import free_port


@contextlib.asynccontextmanager
async def serving(app: Any, *, port: int | None = None, client_timeout: float = 60,
                  follow_redirects: bool = False, **options: Any
                  ) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served on `port` (a free one by default) with extra uvicorn `options`; the
    server stops when the block ends."""
    listen = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=listen,
                                           log_level="warning", lifespan="on", **options))
    task = asyncio.create_task(server.serve())
    for _ in range(250):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listen}", timeout=client_timeout,
                                     follow_redirects=follow_redirects) as client:
            yield client
    finally:
        server.should_exit = True
        await task

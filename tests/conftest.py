"""Shared fixtures: Temporal servers from the installed packages, a fresh store per test.

Every test that skips time gets its own time-skipping server, so no test shares a clock;
the dev server (real time) is one per session and xdist worker. Every test gets its own
task-queue prefix and CAMPAIGN_HOME.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.devstack import in_memory_dev_server
from tests.fakes.llm_server import LLMTestServer
from tests.fakes.time_skipping import TimeSkippingServer
from tests.fakes.webhook_receiver import Hook
from worker_main import build_workers

REPO = Path(__file__).resolve().parent.parent
#: Debian's Chromium: the browser tests drive it (Playwright downloads nothing).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KB = REPO / "starter" / "demo_data" / "kb"


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own (starting one takes about 0.2 s)."""
    env = await TimeSkippingServer.start()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (in memory), with the project's search attributes."""
    env = await in_memory_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def prefix() -> str:
    """A fresh task-queue prefix per test, so no test sees another's tasks."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private CAMPAIGN_HOME; the env is cleared of anything that would leak in."""
    h = tmp_path / "home"
    h.mkdir()
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_UI_URL", "CAMPAIGN_STORE_URL", "OPENAI_API_KEY",
                "CAMPAIGN_TASK_QUEUE_PREFIX", "CAMPAIGN_LLM_PROVIDER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAMPAIGN_HOME", str(h))
    monkeypatch.chdir(tmp_path)
    return h


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings()


@pytest.fixture
def llm() -> Iterator[LLMTestServer]:
    """The OpenAI-compatible test server (real HTTP, for the real `openai` client); a 429 it
    is told to answer asks for a 7 s wait. A module may override it with its own server."""
    with LLMTestServer(retry_after=7) as server:
        yield server


@pytest.fixture
def llm_settings(settings: Settings, llm: LLMTestServer) -> Settings:
    """Settings that point the real openai client at the test server, with prices, so spend
    and budgets are counted."""
    return settings.model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": llm.base_url, "llm_model": "test-model", "llm_timeout_seconds": 5.0,
        "llm_price_input": 1.0, "llm_price_output": 2.0,
    })


@pytest.fixture
async def store(settings: Settings) -> SqliteStore:
    s = SqliteStore(settings.campaign_home / "campaign.db")
    await s.migrate()
    return s


@pytest.fixture
def run_workers(
    store: SqliteStore, settings: Settings, prefix: str
) -> Callable[..., Any]:
    """`async with run_workers(client, overrides={...})`: every queue's worker, running."""
    import contextlib

    @contextlib.asynccontextmanager
    async def _run(client: Client, **kwargs: Any) -> AsyncIterator[list[Worker]]:
        workers = build_workers(client, store, settings, prefix=prefix, **kwargs)
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            yield workers

    return _run


@pytest.fixture
def hook_factory() -> Iterator[Callable[[list[int]], Hook]]:
    """`hook_factory([500, 200])`: a running webhook receiver with scripted statuses."""
    import threading

    started: list[Hook] = []

    def make(statuses: list[int]) -> Hook:
        hook = Hook(statuses)
        threading.Thread(target=hook.server.serve_forever, daemon=True).start()
        started.append(hook)
        return hook

    yield make
    for hook in started:
        hook.server.shutdown()
        hook.server.server_close()


@pytest.fixture
def hook(hook_factory: Callable[[list[int]], Hook]) -> Hook:
    """A running webhook receiver that answers 200."""
    return hook_factory([])


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skipped without one (failed in CI, which must run these)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    """A headless Chromium driven by Playwright (`playwright.async_api.Browser`)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files run first. `make test` shares files between two xdist workers
    (`--dist loadfile`) in collection order; a minutes-long file collected last would run
    alone on one worker while the other sits idle. A file's weight is the longest
    `timeout` any of its tests declares, then whether it has a `slow` test; stable, so the
    order within a weight stays."""
    def weight(item: pytest.Item) -> tuple[float, bool]:
        timeout = item.get_closest_marker("timeout")
        return (float(timeout.args[0]) if timeout and timeout.args else 0.0,
                item.get_closest_marker("slow") is not None)

    heaviest: dict[Path, tuple[float, bool]] = {}
    for item in items:
        heaviest[item.path] = max(heaviest.get(item.path, (0.0, False)), weight(item))
    items.sort(key=lambda item: heaviest[item.path], reverse=True)

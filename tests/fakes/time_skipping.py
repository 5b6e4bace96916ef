"""The time-skipping test server, whose `sleep` skips in bounded steps with explicit deadlines.

The server answers a skip only when its clock reaches the target, and the clock stands
still while an activity or workflow task runs. The SDK's `sleep` sends one RPC without a
deadline, so the client's 30 s default applies, and the server keeps skipping after the
client gives up. Here every step of at most an hour has a generous deadline of its own,
and a step that outlasts it fails the test, saying so. docs/architecture.md ("The test suite")
has the details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.testservice.v1 import (
    LockTimeSkippingRequest,
    SleepRequest,
    UnlockTimeSkippingRequest,
)
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from campaign_core.temporal import test_server_path

STEP = timedelta(hours=1)
STEP_DEADLINE = timedelta(seconds=120)  # real time; a step takes milliseconds when idle


class TimeSkippingServer(WorkflowEnvironment):
    """`WorkflowEnvironment.start_time_skipping`, with a `sleep` that cannot outlast its RPC."""

    def __init__(self, inner: WorkflowEnvironment) -> None:
        super().__init__(inner.client)
        self._inner = inner

    @classmethod
    async def start(cls) -> TimeSkippingServer:
        return cls(await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=test_server_path(),
        ))

    async def sleep(self, duration: timedelta | float) -> None:
        """Skip `duration` of workflow time, an hour per RPC, each with an explicit deadline."""
        left = duration if isinstance(duration, timedelta) else timedelta(seconds=duration)
        while left > timedelta(0):
            step = min(left, STEP)
            request = SleepRequest()
            request.duration.FromTimedelta(step)
            try:
                await self.client.test_service.unlock_time_skipping_with_sleep(
                    request, timeout=STEP_DEADLINE)
            except RPCError as err:
                raise AssertionError(
                    f"the time-skipping server did not skip {step} within {STEP_DEADLINE} of real "
                    f"time (an activity or workflow task held its clock): {err}") from err
            left -= step

    @asynccontextmanager
    async def unlocked(self) -> AsyncIterator[None]:
        """Let the server skip time freely inside the block, e.g. around
        `client.get_workflow_handle(...).result()`.

        The server skips only while no one holds its time lock, and the client holds one
        except inside `sleep` or the `result()` of a handle that `start_workflow` returned
        (the SDK's `_TimeSkippingWorkflowHandle` unlocks around it). A handle from
        `get_workflow_handle` waits with the lock held: timers then run at wall speed, which
        looks like a server that stopped skipping (e.g. after a child continued as new) but
        is only the handle."""
        await self.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        try:
            yield
        finally:
            await self.client.test_service.lock_time_skipping(LockTimeSkippingRequest())

    async def get_current_time(self, handle: WorkflowHandle[Any, Any] | None = None) -> datetime:
        return await self._inner.get_current_time()

    @property
    def supports_time_skipping_v1(self) -> bool:
        return True

    @contextmanager
    def auto_time_skipping_disabled(self) -> Iterator[None]:
        with self._inner.auto_time_skipping_disabled():
            yield

    async def shutdown(self) -> None:
        await self._inner.shutdown()


@asynccontextmanager
async def skipping(env: WorkflowEnvironment) -> AsyncIterator[None]:
    """`env.unlocked()` on the time-skipping server, nothing on a real one."""
    if isinstance(env, TimeSkippingServer):
        async with env.unlocked():
            yield
    else:
        yield

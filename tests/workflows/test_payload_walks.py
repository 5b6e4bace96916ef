"""The SDK's payload walks are skipped only when they can change nothing.

End to end, the codec path is held by tests/api/test_codec.py (history holds no plaintext with
CAMPAIGN_ENCRYPTION_KEY set) and every workflow test runs through the skipping path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import temporalio.bridge.worker as bridge_worker
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_commands import ScheduleActivity, WorkflowCommand
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec

from campaign_core import sdk_patches
from worker_main import workflow_runner


class Marking(PayloadCodec):
    """Marks every payload it encodes, so a test can see that the walk ran."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload(metadata={**p.metadata, "marked": b"1"}, data=p.data) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def completion() -> WorkflowActivationCompletion:
    done = WorkflowActivationCompletion(run_id="r")
    done.successful.commands.append(WorkflowCommand(schedule_activity=ScheduleActivity(
        seq=1, activity_id="1", activity_type="a", task_queue="q",
        arguments=[Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])))
    return done


def argument(done: WorkflowActivationCompletion) -> Payload:
    return done.successful.commands[0].schedule_activity.arguments[0]


def test_only_a_converter_with_neither_codec_nor_external_storage_skips() -> None:
    assert sdk_patches.walks_change_nothing(pydantic_data_converter)
    with_codec = dataclasses.replace(pydantic_data_converter, payload_codec=Marking())
    assert not sdk_patches.walks_change_nothing(with_codec)
    assert not sdk_patches.walks_change_nothing(object())  # not a converter: the SDK's walk


async def test_the_walk_still_runs_with_a_codec_and_is_skipped_without() -> None:
    sdk_patches.install_payload_walks()
    with_codec = dataclasses.replace(pydantic_data_converter, payload_codec=Marking())
    done = completion()
    await bridge_worker.encode_completion(done, with_codec, encode_headers=False,
                                          storage_concurrency_limit=1)
    assert argument(done).metadata["marked"] == b"1"  # the codec saw the payload

    done = completion()
    metrics = await bridge_worker.encode_completion(done, pydantic_data_converter,
                                                    encode_headers=False,
                                                    storage_concurrency_limit=1)
    assert "marked" not in argument(done).metadata and metrics.payload_count == 0


async def test_the_workers_runner_installs_it_once(ts_env) -> None:
    sdk_patches.install_payload_walks()
    wrapped = (bridge_worker.decode_activation, bridge_worker.encode_completion)
    sdk = tuple(getattr(f, "__wrapped__") for f in wrapped)  # noqa: B009
    assert not any(getattr(f, sdk_patches._MARK, False) for f in sdk)
    try:
        bridge_worker.decode_activation, bridge_worker.encode_completion = sdk
        workflow_runner(ts_env.client)  # what build_workers calls for every worker
        installed = (bridge_worker.decode_activation, bridge_worker.encode_completion)
        assert all(getattr(f, sdk_patches._MARK, False) for f in installed)
        workflow_runner(ts_env.client)
        assert (bridge_worker.decode_activation, bridge_worker.encode_completion) == installed
    finally:
        bridge_worker.decode_activation, bridge_worker.encode_completion = wrapped

"""Skip the SDK's walks over a workflow task's payloads when they can change nothing.

For every workflow activation, Temporal's Python SDK (1.35) walks the activation's
protobuf in Python three times before the workflow sees it (storage references, external
storage, the payload codec), and the completion three times after (the codec, external
storage, references), whether or not the data converter has a payload codec or external
storage. Without either, every walk hands each payload list to a method that returns it
unchanged; the SDK's own `DataConverter._decode_payload_has_effect` says as much. In a
profile of one-lead runs the walks were about 30% of the samples in the worker's handling
of a workflow task (a trivial activation took 5.5 ms at p50 with them, 4.3 without), on
the path every lead takes about ten times.

`install()` wraps the two functions the workflow worker calls for this
(`temporalio.bridge.worker.decode_activation` and `encode_completion`, looked up on that
module at each call): with neither a codec nor external storage on the converter they
return at once; otherwise they call the SDK's own, unchanged. With
CAMPAIGN_ENCRYPTION_KEY set there is a codec, so every payload is still encrypted and
decrypted. What is given up without a codec: the SDK would name a payload stored
externally by another client (TMPRL1105) when this worker has no external storage; the
engine never stores payloads externally, and such a payload would fail to decode instead.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import temporalio.bridge.worker as bridge_worker
from temporalio.converter import DataConverter
from temporalio.converter._extstore import StorageOperationMetrics

_Walk = Callable[..., Awaitable[StorageOperationMetrics]]

#: Set on a wrapper so `install()` never wraps twice.
_MARK = "__campaign_skips_idle_walks__"


def walks_change_nothing(converter: object) -> bool:
    """True when the converter has no codec and no external storage (walks are no-ops)."""
    return (isinstance(converter, DataConverter) and converter.payload_codec is None
            and getattr(converter, "external_storage", None) is None)


def _skipping(walk: _Walk) -> _Walk:
    @functools.wraps(walk)
    async def wrapper(message: Any, data_converter: Any, *args: Any,
                      **kwargs: Any) -> StorageOperationMetrics:
        if walks_change_nothing(data_converter):
            return StorageOperationMetrics()
        return await walk(message, data_converter, *args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def install() -> None:
    """Wrap the SDK's two walks (once per process; later calls do nothing)."""
    for name in ("decode_activation", "encode_completion"):
        walk = getattr(bridge_worker, name, None)
        if walk is None or getattr(walk, _MARK, False):
            continue  # an SDK without it keeps its own behaviour; already wrapped
        setattr(bridge_worker, name, _skipping(walk))

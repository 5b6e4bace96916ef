"""Metrics: the Temporal SDK's own and the engine's, through one Temporal `Runtime`.

A runtime has one metrics exporter, so the engine's counters go through the same meter
as the SDK's (task slots, schedule-to-start latency, poll results): a Prometheus
`/metrics` listener when a metrics port is given, else OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set, else nothing. Workflows count through
`workflow.metric_meter()`, which stays silent during replay, so a counter moves once per
event of the campaign; activities count real work (an LLM call answered from the cache
is not a call).

A Prometheus port is served by `campaign_core.metrics_listener`: the runtime's text plus
gauges that describe the store (each sender's remaining capacity and whether it is
paused), which `watch_senders` refreshes in the background and which, unlike the
runtime's own gauges, can lose a series (a removed sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import MetricCounter, MetricGauge, MetricHistogramFloat, MetricMeter
from temporalio.runtime import (
    OpenTelemetryConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
)

from campaign_core.intents import ReplyIntent
from campaign_core.metrics_listener import MetricsListener, Series, StoreGauges
from campaign_core.ports import free_port
from campaign_core.settings import Settings

if TYPE_CHECKING:
    from campaign_core.senders import SenderStatus
    from campaign_core.store.base import Store

log = logging.getLogger(__name__)

#: Buckets of the per-call LLM cost histogram, in USD (its `_sum` is the spend).
COST_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]
#: Buckets of the API latency histogram, in seconds.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


def telemetry_runtime(settings: Settings, metrics_address: str | None) -> Runtime | None:
    """The process's runtime: Prometheus on `metrics_address` ("host:port"), else OTLP.

    With an address, /metrics there is a `MetricsListener` in front of the runtime's own
    exporter (on a loopback port of its own), so the store's gauges can be served beside
    the runtime's; `install(runtime)` gives the process's metrics those gauges.
    None when neither is configured: the SDK's default runtime, which exports nothing.
    """
    if metrics_address:
        listener = MetricsListener(metrics_address, StoreGauges())  # ValueError "in use"
        try:
            runtime, upstream = _prometheus_runtime()
        except BaseException:
            listener.close()
            raise
        listener.start(upstream)
        _listeners[runtime] = listener
        return runtime
    if settings.otlp_endpoint:
        metrics = OpenTelemetryConfig(
            url=settings.otlp_endpoint.rstrip("/") + "/v1/metrics",
            http=True,
            durations_as_seconds=True,
            metric_periodicity=timedelta(seconds=15),
        )
        return Runtime(telemetry=TelemetryConfig(metrics=metrics))
    return None


#: The listener in front of each runtime `telemetry_runtime` made for Prometheus.
_listeners: weakref.WeakKeyDictionary[Runtime, MetricsListener] = weakref.WeakKeyDictionary()
#: How many loopback ports the runtime's own exporter tries (another process may take the
#: one picked between the pick and the bind).
_UPSTREAM_TRIES = 5


def _prometheus_runtime() -> tuple[Runtime, str]:
    """A runtime whose exporter listens on a free loopback port; that "host:port"."""
    for attempt in range(_UPSTREAM_TRIES):
        upstream = f"127.0.0.1:{free_port()}"
        config = PrometheusConfig(
            bind_address=upstream,
            counters_total_suffix=True,
            durations_as_seconds=True,
            histogram_bucket_overrides={
                "campaign_llm_cost_usd": COST_BUCKETS,
                "campaign_api_request_duration": LATENCY_BUCKETS,
            },
        )
        try:
            return Runtime(telemetry=TelemetryConfig(metrics=config)), upstream
        except ValueError as exc:
            if "in use" not in str(exc) or attempt == _UPSTREAM_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def listener_of(runtime: Runtime | None) -> MetricsListener | None:
    """The /metrics listener serving `runtime`'s metrics, if it has one."""
    return _listeners.get(runtime) if runtime is not None else None


def metrics_address(host: str, port: int | None) -> str | None:
    """`host:port` for the Prometheus listener, or None when no port is given (0 = off)."""
    if not port:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EngineMetrics:
    """The engine's instruments on one meter (named `campaign_*`; counters end in _total).

    Instruments are created on first use and kept: creating one calls into the runtime.
    Workflows build one per use over `workflow.metric_meter()` (silent during replay);
    everything else shares the process's, from `process_metrics()`.
    """

    def __init__(self, meter: MetricMeter, store_gauges: StoreGauges | None = None) -> None:
        self.meter = meter
        #: Where the store's gauges go when a /metrics listener serves them (else the meter).
        self.store_gauges = store_gauges
        self._sender_series: set[str] = set()
        self._counters: dict[str, MetricCounter] = {}
        self._histograms: dict[str, MetricHistogramFloat] = {}
        self._gauges: dict[str, MetricGauge] = {}

    def count(self, name: str, value: int = 1, attrs: Mapping[str, str] | None = None) -> None:
        """Add to the counter `campaign_<name>` (exported as `campaign_<name>_total`)."""
        if value <= 0:
            return
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self.meter.create_counter(
                f"campaign_{name}", _HELP.get(name))
        counter.add(value, dict(attrs or {}))

    def _histogram(self, name: str, unit: str | None = None) -> MetricHistogramFloat:
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = self.meter.create_histogram_float(
                f"campaign_{name}", _HELP.get(name), unit)
        return histogram

    def leads(self, drafted: int = 0, failed: int = 0) -> None:
        self.count("leads_drafted", drafted)
        self.count("leads_draft_failed", failed)

    def approved(self, drafts: int) -> None:
        self.count("drafts_approved", drafts)

    def message(self, channel: str, outcome: str, step: int | None = None,
                sender: str | None = None) -> None:
        """One message's outcome: sent, suppressed, failed, or stopped (a follow-up a stop
        condition held at its due time; not a failure); `step` its place in the sequence
        (1 to 1 + MAX_FOLLOW_UPS, so the label stays bounded), the positive reply rate's
        denominator being the first steps sent; `sender` the mailbox it left from (one
        value per sender, so bounded), "" for the implicit sender (CAMPAIGN_SMTP_URL /
        CAMPAIGN_FROM when no sender is defined) and for a message that had none."""
        attrs = {"channel": channel, "outcome": outcome, "sender": sender or ""}
        if step is not None:
            attrs["step"] = str(step)
        self.count("messages", 1, attrs)
        if outcome == "suppressed":
            self.count("suppressed_sends")

    def llm_call(self, *, purpose: str, outcome: str, prompt_tokens: int,
                 completion_tokens: int, cost_usd: float | None) -> None:
        self.count("llm_calls", 1, {"purpose": purpose, "outcome": outcome})
        self.count("llm_tokens", prompt_tokens, {"direction": "input"})
        self.count("llm_tokens", completion_tokens, {"direction": "output"})
        if cost_usd is not None:
            self._histogram("llm_cost_usd").record(cost_usd)

    def guardrail(self, *, repaired: bool, failed: bool) -> None:
        self.count("guardrail_repairs", int(repaired))
        self.count("guardrail_failures", int(failed))

    def delivery_event(self, kind: str) -> None:
        """bounce, complaint or unsubscribe (a webhook, a page, a mailbox); replies have
        their own `reply`, with labels."""
        name = {"bounce": "bounces", "complaint": "complaints",
                "unsubscribe": "unsubscribes"}.get(kind)
        if name:
            self.count(name)

    def reply(self, *, kind: str, matched_by: str, intent: str | None = None) -> None:
        """One received message, counted once: `kind` reply, auto_reply or bounce;
        `matched_by` message_id, address, or none (no lead found, so an unmatched inbox shows
        in the metrics too); `intent` what the message means (`reply_intent_label`: one of
        the eleven intents, else the kind of a machine's message, else `unclassified`)."""
        self.count("replies", 1, {"kind": kind, "matched_by": matched_by,
                                  "intent": reply_intent_label(intent, kind)})

    def api_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.count("api_requests", 1, {"method": method, "route": route, "status": str(status)})
        self._histogram("api_request_duration", "s").record(
            seconds, {"method": method, "route": route})

    def backlog(self, task_queue: str, kind: str, count: int) -> None:
        self._gauge("task_queue_backlog").set(count, {"task_queue": task_queue, "kind": kind})

    def _gauge(self, name: str) -> MetricGauge:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = self.meter.create_gauge(f"campaign_{name}", _HELP[name])
        return gauge

    def sender_paused(self, sender: str) -> None:
        """A sender paused itself (bounces or complaints passed their threshold)."""
        self.count("sender_auto_pauses", 1, {"sender": sender})

    def senders(self, statuses: Iterable[SenderStatus]) -> None:
        """Each sender's remaining capacity (its cap of the rolling 24 hours today, under
        the ramp, minus its sends in them; 0 while paused) and whether it is paused, as
        the store has them now: exactly these senders, so a removed one's series goes.

        Through the /metrics listener when the process has one; else (OTLP) through the
        meter, which cannot forget a series: a sender gone since the last refresh reads 0
        there until the process restarts."""
        capacity: list[Series] = []
        paused: list[Series] = []
        for s in statuses:
            labels: Mapping[str, str] = {"sender": s.name}
            capacity.append((labels, 0 if s.paused else max(0, s.today_cap - s.sent_24h)))
            paused.append((labels, 1 if s.paused else 0))
        if self.store_gauges is not None:
            for name, series in (("sender_capacity_remaining", capacity),
                                 ("sender_paused", paused)):
                self.store_gauges.replace(f"campaign_{name}", _HELP[name], series)
            return
        names = {str(labels["sender"]) for labels, _ in capacity}
        gone = [({"sender": n}, 0.0) for n in sorted(self._sender_series - names)]
        self._sender_series = names
        for name, series in (("sender_capacity_remaining", capacity + gone),
                             ("sender_paused", paused + gone)):
            for labels, value in series:
                self._gauge(name).set(int(value), dict(labels))


#: The `intent` label of a person's reply the classifier has not read.
UNCLASSIFIED = "unclassified"
#: Every value the `intent` label can take: the eleven intents and `unclassified`.
INTENT_LABELS = frozenset({*(i.value for i in ReplyIntent), UNCLASSIFIED})


def reply_intent_label(intent: str | None, kind: str) -> str:
    """The `intent` label: bounded to the enum (anything else reads `unclassified`), a
    machine's message (auto_reply, bounce) by its kind until it is read."""
    if intent in INTENT_LABELS:
        return str(intent)
    return kind if intent is None and kind in {"auto_reply", "bounce"} else UNCLASSIFIED


_process: EngineMetrics | None = None
_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> EngineMetrics:
    """Make `runtime` the process's: its clients use it, its meter is the engine's.

    None: the SDK's default runtime and a meter that records nothing.
    """
    global _process, _runtime
    _runtime = runtime
    listener = listener_of(runtime)
    _process = EngineMetrics(runtime.metric_meter if runtime else MetricMeter.noop,
                             listener.gauges if listener else None)
    return _process


def installed_runtime() -> Runtime | None:
    """The runtime `install` set, for every client this process connects."""
    return _runtime


def process_metrics() -> EngineMetrics:
    """The process's engine metrics (recording nothing until `install`)."""
    return _process if _process is not None else install(None)


_HELP = {
    "leads_drafted": "Leads whose draft was stored.",
    "leads_draft_failed": "Leads that could not be drafted.",
    "drafts_approved": "Drafts approved for delivery.",
    "messages": "Messages by channel, outcome (sent, suppressed, failed, stopped), step and "
                "sender (\"\": the implicit sender).",
    "suppressed_sends": "Sends skipped because the address is suppressed.",
    "llm_calls": "LLM calls made (not answered from the cache), by purpose and outcome.",
    "llm_tokens": "LLM tokens by direction (input, output).",
    "llm_cost_usd": "Cost of each LLM call in USD; the _sum is the spend.",
    "guardrail_repairs": "Drafts that needed the one repair call.",
    "guardrail_failures": "Drafts that failed their guardrails after the repair.",
    "bounces": "Bounces reported for our messages.",
    "complaints": "Spam complaints reported for our messages.",
    "unsubscribes": "Unsubscribes from our links.",
    "replies": "Received messages recorded, by kind, how they matched a lead and intent.",
    "api_requests": "HTTP API requests by method, route and status.",
    "api_request_duration": "HTTP API request latency.",
    "task_queue_backlog": "Approximate backlog of each task queue (server statistics).",
    "sender_capacity_remaining": "Sends each sender may still make in the rolling 24 hours "
                                 "(today's cap under the ramp minus its sends; 0 while paused).",
    "sender_paused": "1 while the sender is paused (by a person or by its bounces or complaints).",
    "sender_auto_pauses": "Senders paused by their own bounce or complaint rate.",
}


async def watch_backlog(client: Client, task_queues: list[str], stop: asyncio.Event,
                        every: float = 15.0) -> None:
    """Export each queue's approximate backlog (the server's task-queue statistics).

    Runs until `stop` is set; a failed poll is logged and retried at the next tick, since
    a missing gauge point must never take a worker down.
    """
    metrics = process_metrics()
    kinds = {"workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
             "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}
    while not stop.is_set():
        for queue in task_queues:
            for kind, queue_type in kinds.items():
                try:
                    answer = await client.workflow_service.describe_task_queue(
                        DescribeTaskQueueRequest(
                            namespace=client.namespace, task_queue=TaskQueue(name=queue),
                            task_queue_type=queue_type, report_stats=True),
                        timeout=timedelta(seconds=5))
                except Exception as exc:  # a gauge is best effort
                    log.debug("backlog of %s (%s) not read: %s", queue, kind, exc)
                    continue
                metrics.backlog(queue, kind, answer.stats.approximate_backlog_count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


#: How often `watch_senders` reads the senders from the store.
SENDER_REFRESH_SECONDS = 30.0


async def watch_senders(store: Store, settings: Settings, stop: asyncio.Event,
                        every: float = SENDER_REFRESH_SECONDS) -> None:
    """Export each sender's remaining capacity and paused state, read from the store now
    and every `every` seconds until `stop` is set (the gauges describe the store, which
    every process shares; a scrape serves the last reading and never waits for it).

    A failed read is logged and retried at the next tick: a gauge never takes a worker down.
    """
    from campaign_core.sender_capacity import sender_status

    metrics = process_metrics()
    failing = False
    while not stop.is_set():
        try:
            now = datetime.now(UTC)
            metrics.senders([await sender_status(store, row, settings, now)
                             for row in await store.list_senders()])
            failing = False
        except Exception as exc:  # a gauge is best effort; said once per run of failures
            (log.debug if failing else log.warning)("sender gauges not refreshed: %s", exc)
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)

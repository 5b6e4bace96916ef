"""ScheduleManager: recurring campaigns on Temporal Schedules (`campaign schedule ...`).

Leads are stored once under a template campaign; each firing starts a new campaign from
them. See "Schedules" in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.leads import IntakeResult, RejectedRow, rekeyed
from campaign_core.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    CampaignInput,
    Channel,
    ScheduledCampaignInput,
)
from campaign_core.registry import WORKFLOW_QUEUE, queue_name
from campaign_core.send_window import SendWindow
from campaign_core.sequence import describe_seconds
from campaign_core.store.base import new_lead_id_salt
from starter.manager import (
    TEMPLATE_ID_PREFIX,
    BadInput,
    Conflict,
    ControlPlane,
    NotFound,
    budget_option,
)
from workflows.campaign import search_attributes
from workflows.scheduled import (
    SCHEDULE_ID_PREFIX,
    ScheduledCampaign,
    kickoff_workflow_id,
    schedule_id,
    scheduled_campaign_id,
)

T = TypeVar("T")

#: What a schedule name may look like: it becomes part of every campaign id it starts.
SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
#: The memo key holding what `schedule list` and the Web UI show about a schedule.
MEMO_KEY = "campaign_schedule"
CATCHUP_WINDOW = timedelta(hours=1)
#: A firing that could not even start its campaign within this time is dropped.
FIRING_TIMEOUT = timedelta(days=1)
NEXT_RUNS_SHOWN = 3


class BadCron(BadInput):
    """A cron expression (or its time zone) that Temporal cannot read."""


def check_schedule_name(name: str) -> str:
    if not re.match(SCHEDULE_NAME_PATTERN, name):
        raise BadInput(f"schedule name {name!r} must be 1-40 letters, digits, '.', '_' or '-' "
                       "(starting with a letter or digit)")
    return name


def template_id_for(name: str) -> str:
    """A fresh template campaign id for the schedule `name` (read the leads file for it), in
    the prefix `campaign start` refuses, so no start can add leads to a template."""
    return f"{TEMPLATE_ID_PREFIX}{check_schedule_name(name)}-{uuid.uuid4().hex[:8]}"


@dataclass
class ScheduleCreated:
    name: str
    schedule_id: str
    template_id: str
    cron: str
    timezone: str
    paused: bool
    next_runs: list[datetime]
    ui_url: str
    leads_accepted: int
    leads_rejected: list[RejectedRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "schedule_id": self.schedule_id, "template_id": self.template_id,
            "cron": self.cron, "timezone": self.timezone, "paused": self.paused,
            "next_runs": [t.isoformat() for t in self.next_runs], "ui_url": self.ui_url,
            "leads_accepted": self.leads_accepted,
            "leads_rejected": [r.model_dump() for r in self.leads_rejected],
        }


@dataclass
class ScheduleSummary:
    name: str
    schedule_id: str
    cron: str
    timezone: str
    paused: bool
    note: str | None
    next_runs: list[datetime]
    recent_campaigns: list[str]
    template_id: str | None
    leads: int | None
    channel: str | None
    ui_url: str
    queue_prefix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "schedule_id": self.schedule_id, "cron": self.cron,
            "timezone": self.timezone, "paused": self.paused, "note": self.note,
            "next_runs": [t.isoformat() for t in self.next_runs],
            "recent_campaigns": self.recent_campaigns, "template_id": self.template_id,
            "leads": self.leads, "channel": self.channel, "ui_url": self.ui_url,
        }


class ScheduleManager(ControlPlane):
    """Creates, lists, pauses, resumes, triggers and deletes recurring campaigns."""

    def ui_url(self, sid: str) -> str:
        return self.ui_link("schedules", sid)

    async def _handle(self, name: str) -> ScheduleHandle:
        check_schedule_name(name)
        client = await self.client()
        return client.get_schedule_handle(schedule_id(name))

    async def _known(self, name: str, call: Callable[[ScheduleHandle], Awaitable[T]]) -> T:
        """`call(handle)`, with an unknown schedule reported as `NotFound` (exit 2)."""
        handle = await self._handle(name)
        try:
            return await call(handle)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"unknown schedule {name!r} (see `campaign schedule list`)") from err
            raise

    # -- create -------------------------------------------------------------------------

    async def create(
        self, name: str, intake: IntakeResult, *, template_id: str, cron: str,
        cron_timezone: str = "UTC", brief: str = "", kb_dir: Path | None = None,
        channel: Channel = Channel.OUTBOX,
        approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        send_window: SendWindow | None = None, domain_limit_per_minute: int | None = 20,
        send_rate_per_second: float | None = None, paused: bool = False,
        source: str = "", follow_up_seconds: list[int] | None = None,
        stop_on_company_reply: bool = False, budget_usd: float | None = None,
    ) -> ScheduleCreated:
        """Store the leads once under `template_id`, then create the schedule.

        The leads must have been read for `template_id` (`template_id_for`). Nothing is
        created when the name is taken, the cron expression is invalid or no lead is
        valid. The schedule is created paused and resumed only once the template is
        stored, so no firing can find it empty.
        """
        check_schedule_name(name)
        if not template_id.startswith(f"{TEMPLATE_ID_PREFIX}{name}-"):
            raise BadInput(f"template id {template_id!r} was not made for schedule {name!r}")
        cron = " ".join(cron.split())
        if not cron:
            raise BadCron("--cron: give a cron expression such as '0 9 * * MON'")
        try:
            ZoneInfo(cron_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BadCron(f"--cron-timezone: unknown time zone {cron_timezone!r}") from exc
        self.check_options(channel, kb_dir)
        budget_option(budget_usd)
        if not intake.leads:
            raise BadInput("no valid lead to schedule campaigns with")

        sid = schedule_id(name)
        leads = len(intake.leads)
        campaign = CampaignInput(
            campaign_id=template_id, name=name, channel=channel,
            approval_timeout_seconds=approval_timeout_seconds, send_window=send_window,
            queue_prefix=self.queue_prefix, domain_limit_per_minute=domain_limit_per_minute,
            send_rate_per_second=send_rate_per_second,
            use_search_attributes=self.use_search_attributes,
            follow_up_seconds=follow_up_seconds or [],
            stop_on_company_reply=stop_on_company_reply,
        )
        window = send_window.describe() if send_window else "any time"
        memo = {
            "name": name, "template_id": template_id, "cron": cron, "timezone": cron_timezone,
            "leads": leads, "channel": channel.value, "queue_prefix": self.queue_prefix,
            "approval_timeout": str(timedelta(seconds=approval_timeout_seconds)),
            "send_window": window, "knowledge_base": kb_dir.name if kb_dir else None,
            "leads_file": source or None, "created_at": datetime.now(UTC).isoformat(),
            "follow_ups": [describe_seconds(s) for s in follow_up_seconds or []],
            "stop_on_company_reply": stop_on_company_reply,
            "budget_usd": budget_usd,
        }
        summary = (f"Recurring campaign {name!r}: {leads} leads, {channel.value}, "
                   f"cron {cron!r} ({cron_timezone})")
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                ScheduledCampaign.run,
                ScheduledCampaignInput(schedule=name, template_id=template_id, campaign=campaign),
                id=kickoff_workflow_id(name),
                task_queue=queue_name(WORKFLOW_QUEUE, self.queue_prefix),
                execution_timeout=FIRING_TIMEOUT,
                static_summary=f"Firing of {summary[0].lower()}{summary[1:]}",
                static_details=(
                    f"**Schedule** `{name}` → a new campaign `{name}-YYYYMMDD-HHMMSS`\n\n"
                    f"* leads: {leads} (template `{template_id}`)\n* channel: {channel.value}\n"
                    f"* approval timeout: {timedelta(seconds=approval_timeout_seconds)}\n"
                    f"* knowledge base: {kb_dir.name if kb_dir else 'none'}\n"
                    f"* send window: {window}"
                ),
                typed_search_attributes=search_attributes(template_id, "scheduled")
                if self.use_search_attributes else TypedSearchAttributes.empty,
            ),
            spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=cron_timezone),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP,
                                  catchup_window=CATCHUP_WINDOW, pause_on_failure=True),
            state=ScheduleState(paused=True, note=f"being created: {summary}"),
        )
        client = await self.client()
        try:
            handle = await client.create_schedule(sid, schedule, memo={MEMO_KEY: memo})
        except ScheduleAlreadyRunningError as exc:
            raise Conflict(f"schedule {name!r} already exists: delete it first "
                           f"(`campaign schedule delete {name}`) or choose another name") from exc
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT:
                reason = err.message.removeprefix("Invalid schedule spec: ")
                raise BadCron(f"--cron {cron!r}: {reason}") from err
            raise
        try:
            await self.store.upsert_campaign(
                campaign_id=template_id, name=f"{name} (schedule template)", brief=brief,
                channel=channel.value, kb_dir=str(kb_dir.resolve()) if kb_dir else None,
                workflow_id=sid, lead_id_salt=await new_lead_id_salt(self.store, template_id),
                budget_usd=budget_usd,  # each firing's campaign gets the same cap
            )
            row = await self.store.get_campaign(template_id)
            keyed = rekeyed(intake, template_id, row.lead_id_salt if row else None)
            await self.store.upsert_leads(template_id, keyed.leads)
            if paused:
                await handle.pause(note=f"created paused: {summary}")
            else:
                await handle.unpause(note=summary)
            desc = await handle.describe()
        except Exception:
            with contextlib.suppress(RPCError):  # leave no schedule with a missing template
                await handle.delete()
            raise
        return ScheduleCreated(
            name=name, schedule_id=sid, template_id=template_id, cron=cron,
            timezone=cron_timezone, paused=paused,
            next_runs=[] if paused else list(desc.info.next_action_times[:NEXT_RUNS_SHOWN]),
            ui_url=self.ui_url(sid), leads_accepted=leads, leads_rejected=list(intake.rejected),
        )

    # -- read ---------------------------------------------------------------------------

    async def _summary(self, desc: ScheduleDescription) -> ScheduleSummary:
        name = desc.id.removeprefix(SCHEDULE_ID_PREFIX)
        memo: dict[str, Any] = {}
        try:
            value = await desc.memo_value(MEMO_KEY, default={})
            memo = value if isinstance(value, dict) else {}
        except Exception:  # a memo this code cannot read: show what the schedule itself says
            memo = {}
        spec = desc.schedule.spec
        state = desc.schedule.state
        recent = sorted(desc.info.recent_actions, key=lambda a: a.scheduled_at, reverse=True)
        return ScheduleSummary(
            name=name, schedule_id=desc.id,
            cron=str(memo.get("cron") or ", ".join(spec.cron_expressions) or "?"),
            timezone=str(memo.get("timezone") or spec.time_zone_name or "UTC"),
            paused=state.paused, note=state.note or None,
            # Temporal still computes the cron's times while paused; none of them will fire.
            next_runs=[] if state.paused else list(desc.info.next_action_times[:NEXT_RUNS_SHOWN]),
            recent_campaigns=[scheduled_campaign_id(name, a.scheduled_at) for a in recent],
            template_id=memo.get("template_id"), leads=memo.get("leads"),
            channel=memo.get("channel"), ui_url=self.ui_url(desc.id),
            queue_prefix=str(memo.get("queue_prefix") or ""),
        )

    async def describe(self, name: str) -> ScheduleSummary:
        desc = await self._known(name, lambda h: h.describe())
        return await self._summary(desc)

    async def list(self) -> list[ScheduleSummary]:
        """This deployment's recurring campaigns (those with its task-queue prefix), by name.

        The list comes from Temporal's visibility store, which may lag a new schedule
        by a moment; each entry is then described, so its state is current.
        """
        client = await self.client()
        found: list[ScheduleSummary] = []
        async for entry in await client.list_schedules():
            if not entry.id.startswith(SCHEDULE_ID_PREFIX):
                continue
            try:
                desc = await client.get_schedule_handle(entry.id).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    continue  # deleted since it was listed
                raise
            summary = await self._summary(desc)
            if summary.queue_prefix == self.queue_prefix:
                found.append(summary)
        return sorted(found, key=lambda s: s.name)

    # -- control ------------------------------------------------------------------------

    async def pause(self, name: str, note: str | None = None) -> None:
        """No firing until resumed; campaigns already started go on."""
        await self._known(name, lambda h: h.pause(note=note or "paused by `campaign schedule pause`"))

    async def resume(self, name: str, note: str | None = None) -> None:
        await self._known(name, lambda h: h.unpause(
            note=note or "resumed by `campaign schedule resume`"))

    async def trigger(self, name: str) -> None:
        """Fire now, once, even while paused (a campaign named after this moment)."""
        await self._known(name, lambda h: h.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL))

    async def delete(self, name: str) -> None:
        """Delete the schedule. Campaigns it started go on, and its template stays in the
        store like any campaign's data (`campaign forget` erases a person everywhere)."""
        await self._known(name, lambda h: h.delete())

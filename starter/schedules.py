"""ScheduleManager: recurring campaigns on Temporal Schedules (`campaign schedule ...`).

Leads are stored once under a template campaign; each firing starts a new campaign from
them. See "Schedules" in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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

from activities.schedule_agent import SCHEDULE_BUDGET
from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest, now_utc
from campaign_core.leads import IntakeResult, RejectedRow, rekeyed
from campaign_core.models import ScheduledCampaignInput
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.sequence import describe_seconds
from campaign_core.store.base import new_lead_id_salt
from starter.manager import (
    TEMPLATE_ID_PREFIX,
    BadInput,
    Conflict,
    ControlPlane,
    NotFound,
)
from starter.senders import preflight, resolve
from starter.start_options import ScheduleOptions
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
    """A cron expression (or its time zone) that Temporal cannot read, or one that fires
    more often than CAMPAIGN_SCHEDULE_MIN_INTERVAL allows."""


# -- how often a cron expression fires ------------------------------------------------------
#
# Every firing starts a new campaign with a budget of its own, so `@every 1s` would start a
# campaign (and pay for its drafts) every second. The gap is found here, before anything is
# created, by reading the expression as Temporal does (service/worker/scheduler/calendar.go:
# 5, 6 or 7 fields, a day matching both day-of-month and day-of-week, names as prefixes);
# an expression read otherwise is left to Temporal, and the times it then computes are
# checked again (`ScheduleManager._refuse_short_gap`).

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0, "d": 86400.0}
_PREDEFINED = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@hourly": "0 * * * *"}
_MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december"]
_DAY_NAMES = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
#: How far ahead matching days are looked for: two years hold every month and weekday.
_DAYS_AHEAD = 800


def min_interval(setting: str) -> timedelta:
    """CAMPAIGN_SCHEDULE_MIN_INTERVAL (`1h`, `30m`, `3600`) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", setting.lower())
    if match is None:
        raise BadInput(f"CAMPAIGN_SCHEDULE_MIN_INTERVAL: {setting!r} is not a duration like 1h")
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def _go_duration(text: str) -> timedelta | None:
    """A Go duration as Temporal reads `@every` (`90m`, `1h30m`, `1.5h`, `2d`), or None."""
    if not text or _GO_DURATION.sub("", text):
        return None
    return timedelta(seconds=sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(text)))


def _field(text: str, low: int, high: int, names: list[str] | None = None,
           shortest: int = 3) -> set[int] | None:
    """The values one cron field matches, or None when it does not read as Temporal's."""

    def value(word: str) -> int:
        if names and len(word) >= shortest and not word.isdigit():
            for i, name in enumerate(names):
                if name.startswith(word.lower()):
                    return i + (1 if names is _MONTH_NAMES else 0)
            raise ValueError(word)
        return int(word)

    found: set[int] = set()
    try:
        for part in text.split(","):
            step, has_step = 1, "/" in part
            if has_step:
                part, step_text = part.split("/")
                step = int(step_text)
                if step < 1:
                    return None
            start, end = low, high
            if part != "*":
                if "-" in part:
                    first, last = part.split("-")
                    start, end = value(first), value(last)
                else:
                    start = value(part)
                    end = high if has_step else start
            if not low <= start <= high or not start <= end <= high:
                return None
            found.update(range(start, end + 1, step))
    except ValueError:
        return None
    return found


def cron_gap(cron: str, today: date | None = None) -> timedelta | None:
    """The shortest time between two firings of `cron` (wall-clock time in its zone), over
    the next two years; None when it does not read as Temporal's grammar (Temporal then
    decides), or when it fires at most once in that time."""
    text = cron.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        text = text.partition(" ")[2].strip()
    if text.startswith("@every"):
        interval = text.removeprefix("@every").strip().partition("/")[0]
        return _go_duration(interval)
    fields = _PREDEFINED.get(text, text).split()
    if len(fields) == 5:
        fields = ["0", *fields, "*"]
    elif len(fields) == 6:
        fields = ["0", *fields]
    elif len(fields) != 7:
        return None
    seconds, minutes, hours = (_field(fields[0], 0, 59), _field(fields[1], 0, 59),
                               _field(fields[2], 0, 23))
    days, months = _field(fields[3], 1, 31), _field(fields[4], 1, 12, _MONTH_NAMES)
    weekdays = _field(fields[5], 0, 7, _DAY_NAMES, shortest=2)
    years = _field(fields[6], 2000, 2100)
    if None in (seconds, minutes, hours, days, months, weekdays, years):
        return None
    assert seconds and minutes and hours and days and months and weekdays is not None
    assert years is not None
    sunday_too = {0} if 7 in weekdays else set()
    weekdays = {d % 7 for d in weekdays} | sunday_too
    times = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    start = today or datetime.now(UTC).date()
    previous: date | None = None
    for offset in range(_DAYS_AHEAD):
        day = start + timedelta(days=offset)
        # date.weekday(): Monday is 0; cron's day-of-week: Sunday is 0.
        if (day.year in years and day.month in months and day.day in days
                and (day.weekday() + 1) % 7 in weekdays):
            if previous is not None:
                gaps.append((day - previous).days * 86400 - times[-1] + times[0])
            previous = day
    return timedelta(seconds=min(gaps)) if gaps else None


def describe_gap(gap: timedelta) -> str:
    """`1s`, `90m`, `2h`: a gap as people write it."""
    total = int(gap.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{total // size}{unit}"
    return f"{gap.total_seconds():g}s"


def check_schedule_name(name: str) -> str:
    if not re.match(SCHEDULE_NAME_PATTERN, name):
        raise BadInput(f"schedule name {name!r} must be 1-40 letters, digits, '.', '_' or '-' "
                       "(starting with a letter or digit)")
    return name


def template_id_for(name: str) -> str:
    """A fresh template campaign id for the schedule `name` (read the leads file for it), in
    the prefix `campaign start` refuses, so no start can add leads to a template."""
    return f"{TEMPLATE_ID_PREFIX}{check_schedule_name(name)}-{uuid.uuid4().hex[:8]}"


def total_budget_record(name: str, template_id: str, total_budget_usd: float) -> Envelope:
    """The template's audit entry that holds the schedule's total budget, where each
    firing's schedule agent reads it (the schedule's memo is out of an activity's reach)."""
    at = now_utc()
    data = {"schedule": name, "total_budget_usd": total_budget_usd}
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=template_id, run_id="control-plane",
                                  agent="control_plane.schedule", agent_version="1", attempt=1,
                                  started_at=at, ended_at=at),
        records=[Record(kind=SCHEDULE_BUDGET, key=name, data=data, provenance=Provenance(
            source="control_plane", agent="control_plane", created_at=at,
            inputs_digest=digest(data)))],
    )


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
    #: The senders every firing's campaign starts with (issue 28), resolved at creation.
    senders: list[str] | None = None
    #: What the creation went on despite (a chosen sender failing its DNS check).
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "schedule_id": self.schedule_id, "template_id": self.template_id,
            "cron": self.cron, "timezone": self.timezone, "paused": self.paused,
            "next_runs": [t.isoformat() for t in self.next_runs], "ui_url": self.ui_url,
            "leads_accepted": self.leads_accepted,
            "leads_rejected": [r.model_dump() for r in self.leads_rejected],
            "senders": self.senders, "warnings": self.warnings,
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
    total_budget_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "schedule_id": self.schedule_id, "cron": self.cron,
            "timezone": self.timezone, "paused": self.paused, "note": self.note,
            "next_runs": [t.isoformat() for t in self.next_runs],
            "recent_campaigns": self.recent_campaigns, "template_id": self.template_id,
            "leads": self.leads, "channel": self.channel, "ui_url": self.ui_url,
            "total_budget_usd": self.total_budget_usd,
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
                raise NotFound(f"unknown schedule {name!r}") from err
            raise

    # -- create -------------------------------------------------------------------------

    async def create(
        self, name: str, intake: IntakeResult, options: ScheduleOptions, *, template_id: str,
        source: str = "",
    ) -> ScheduleCreated:
        """Store the leads once under `template_id`, then create the schedule.

        `options` are the schedule's (cron, zone, paused, total budget) and those of every
        campaign it starts, as the doors build them; `source` names the leads file. The
        leads must have been read for `template_id` (`template_id_for`). Nothing is
        created when the name is taken, the cron expression is invalid or no lead is
        valid. The schedule is created paused and resumed only once the template is
        stored, so no firing can find it empty.

        A cron firing more often than CAMPAIGN_SCHEDULE_MIN_INTERVAL is refused (BadCron):
        every firing is a new campaign with a budget of its own. `total_budget_usd` caps
        what all the schedule's campaigns spend together (activities/schedule_agent.py).
        """
        check_schedule_name(name)
        if not template_id.startswith(f"{TEMPLATE_ID_PREFIX}{name}-"):
            raise BadInput(f"template id {template_id!r} was not made for schedule {name!r}")
        cron = " ".join(options.cron.split())
        if not cron:
            raise BadCron("give a cron expression such as '0 9 * * MON'", field="cron")
        cron_timezone = options.cron_timezone
        try:
            ZoneInfo(cron_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BadCron(f"unknown time zone {cron_timezone!r}", field="cron_timezone") from exc
        kb_dir = options.kb_dir()
        channel = options.channel
        # A firing starts its campaign from the input stored here, so the senders are
        # resolved now (every active one by default): a sender added later is not used.
        senders = await resolve(self.store, channel, options.senders)
        self.check_options(channel, kb_dir, senders=senders)
        minimum = min_interval(self.settings.schedule_min_interval)
        self._refuse_short_gap(cron, cron_gap(cron), minimum)
        if not intake.leads:
            raise BadInput("no valid lead to schedule campaigns with")
        warnings = await preflight(self.settings, self.store, senders,
                                   strict=options.strict_senders)

        sid = schedule_id(name)
        leads = len(intake.leads)
        paused, total_budget_usd = options.paused, options.total_budget_usd
        campaign = options.campaign_options().model_copy(
            update={"senders": senders}).campaign_input(
            campaign_id=template_id, name=name, queue_prefix=self.queue_prefix,
            use_search_attributes=self.use_search_attributes)
        window = campaign.send_window.describe() if campaign.send_window else "any time"
        memo = {
            "name": name, "template_id": template_id, "cron": cron, "timezone": cron_timezone,
            "leads": leads, "channel": channel.value, "queue_prefix": self.queue_prefix,
            "approval_timeout": str(timedelta(seconds=campaign.approval_timeout_seconds)),
            "send_window": window, "knowledge_base": kb_dir.name if kb_dir else None,
            "leads_file": source or None, "created_at": datetime.now(UTC).isoformat(),
            "follow_ups": [describe_seconds(s) for s in campaign.follow_up_seconds],
            "stop_on_company_reply": campaign.stop_on_company_reply,
            "budget_usd": options.budget_usd, "total_budget_usd": total_budget_usd,
            "allow_overlap": options.allow_overlap, "senders": senders,
        }
        summary = (f"Recurring campaign {name!r}: {leads} leads, {channel.value}, "
                   f"cron {cron!r} ({cron_timezone})")
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                ScheduledCampaign.run,
                ScheduledCampaignInput(schedule=name, template_id=template_id, campaign=campaign,
                                       allow_overlap=options.allow_overlap),
                id=kickoff_workflow_id(name),
                task_queue=queue_name(WORKFLOW_QUEUE, self.queue_prefix),
                execution_timeout=FIRING_TIMEOUT,
                static_summary=f"Firing of {summary[0].lower()}{summary[1:]}",
                static_details=(
                    f"**Schedule** `{name}` → a new campaign `{name}-YYYYMMDD-HHMMSS`\n\n"
                    f"* leads: {leads} (template `{template_id}`)\n* channel: {channel.value}\n"
                    f"{options.describe()}"
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
            raise Conflict(f"schedule {name!r} already exists: delete it first or choose "
                           "another name") from exc
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT:
                reason = err.message.removeprefix("Invalid schedule spec: ")
                raise BadCron(reason, field="cron", value=repr(cron)) from err
            raise
        try:
            # The times Temporal computed (it reads the cron, paused or not): a gap the
            # reading above could not find (an expression it does not parse) is caught here.
            times = (await handle.describe()).info.next_action_times
            self._refuse_short_gap(cron, min((b - a for a, b in itertools.pairwise(times)),
                                             default=None), minimum)
            await self.store.upsert_campaign(  # each firing's campaign gets the same budget
                campaign_id=template_id, name=f"{name} (schedule template)", workflow_id=sid,
                lead_id_salt=await new_lead_id_salt(self.store, template_id),
                **options.stored())
            row = await self.store.get_campaign(template_id)
            keyed = rekeyed(intake, template_id, row.lead_id_salt if row else None)
            await self.store.upsert_leads(template_id, keyed.leads)
            if total_budget_usd is not None:
                await self.store.save_envelope(total_budget_record(name, template_id,
                                                                   total_budget_usd))
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
            senders=senders, warnings=warnings,
        )

    @staticmethod
    def _refuse_short_gap(cron: str, gap: timedelta | None, minimum: timedelta) -> None:
        """BadCron when `cron` fires twice within less than `minimum` (`gap` None: unknown)."""
        if gap is not None and gap < minimum:
            raise BadCron(f"fires {describe_gap(gap)} apart, more often than every "
                          f"{describe_gap(minimum)} (CAMPAIGN_SCHEDULE_MIN_INTERVAL): each "
                          "firing starts a new campaign with a budget of its own",
                          field="cron", value=repr(cron))

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
            total_budget_usd=memo.get("total_budget_usd"),
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
        """No firing until resumed; campaigns already started go on. `note` says why (each
        door gives its own default: who paused it, and how)."""
        await self._known(name, lambda h: h.pause(note=note or "paused"))

    async def resume(self, name: str, note: str | None = None) -> None:
        await self._known(name, lambda h: h.unpause(
            note=note or "resumed"))

    async def trigger(self, name: str) -> None:
        """Fire now, once, even while paused (a campaign named after this moment)."""
        await self._known(name, lambda h: h.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL))

    async def delete(self, name: str) -> None:
        """Delete the schedule. Campaigns it started go on, and its template stays in the
        store like any campaign's data (`campaign forget` erases a person everywhere)."""
        await self._known(name, lambda h: h.delete())

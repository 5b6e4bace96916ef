"""What `status` says about replies, and when `report` says a step is due, on every backend.

`Store.status_figures` gives the counts (the same as `counts`) and the reply figures of
`outcomes.status_figures`: the verified replies by intent, the positive reply rate over
first steps sent, and each step's sent messages and positive replies, a reply that came
by address (no step) going to the lead's last step sent. `report` rows of scheduled steps
carry their due time in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from campaign_core.ids import message_key
from campaign_core.models import StepFigures
from campaign_core.store.base import Store
from tests.fakes import pg_fixtures
from tests.store import test_store
from tests.store.test_store import Backend, draft, new_campaign

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend

DUE = datetime(2031, 1, 2, 9, 0, tzinfo=UTC)


async def sent(store: Store, cid: str, lead_id: str, step: int) -> None:
    await store.upsert_delivery(message_key=message_key(cid, lead_id, step), campaign_id=cid,
                                lead_id=lead_id, step=step, channel="outbox", status="sent",
                                message_id=f"<{lead_id}-{step}@test>")


async def reply(store: Store, cid: str | None, lead_id: str | None, name: str, *,
                kind: str = "reply", step: int | None = None, intent: str | None = None,
                verified: bool = True) -> None:
    reply_id, _ = await store.record_reply(
        message_id=f"<{name}@them.example>", kind=kind, email=f"{name}@them.example",
        source="webhook", campaign_id=cid, lead_id=lead_id, step=step,
        matched_by="message_id" if step else "address", verified=verified)
    if intent is not None:
        assert await store.record_reply_intent(reply_id, intent, 0.9, "stop")


async def delivering_campaign(store: Store) -> list[str]:
    """Ana got both steps, Bo step 1 (step 2 scheduled), Cy step 1 (step 2 stopped), Di
    nothing yet: four leads of a 2-step sequence, approved and delivering."""
    leads = (await new_campaign(store, "c1", n=4))
    ids = [lead.lead_id for lead in leads]
    for lead_id in ids:
        for step in (1, 2):
            await draft(store, "c1", lead_id, step)
        await store.set_lead_status("c1", lead_id, "drafted")
    await store.record_decision(campaign_id="c1", decision_id="d1", decision="approve",
                                lead_ids=None, by="rita", note=None)
    await store.set_stage("c1", "delivering")
    ana, bo, cy, _ = ids
    for lead_id in (ana, bo, cy):
        await sent(store, "c1", lead_id, 1)
    await sent(store, "c1", ana, 2)
    await store.set_step_status("c1", ana, 2, "sent")
    await store.schedule_step("c1", bo, 2, DUE)
    await store.set_step_status("c1", cy, 2, "stopped", "meeting_request")
    return ids


async def test_status_figures_tally_replies_by_intent_and_step(backend: Backend) -> None:
    store = backend.store
    ana, bo, cy, di = await delivering_campaign(store)
    # Ana answers by address (no step): her last step sent, step 2, gets it.
    await reply(store, "c1", ana, "ana", intent="interested")
    await reply(store, "c1", bo, "bo-1", step=1)  # not read yet
    await reply(store, "c1", bo, "bo-2", step=1, intent="not_interested")
    await reply(store, "c1", cy, "cy", step=1, intent="meeting_request")
    await reply(store, "c1", cy, "cy-ooo", kind="auto_reply")  # a machine, never read
    await reply(store, "c1", di, "di", intent="interested", verified=False)  # nobody vouched
    await reply(store, None, None, "stranger", intent="interested")  # matched no lead

    counts, figures = await store.status_figures("c1")
    assert counts == await store.counts("c1")  # the same counts as `counts` alone
    assert figures.replies_by_intent == {"auto_reply": 1, "interested": 1, "meeting_request": 1,
                                         "not_interested": 1, "unclassified": 1}
    assert figures.steps == [StepFigures(step=1, sent=3, positive_replies=1),
                             StepFigures(step=2, sent=1, positive_replies=1)]
    assert figures.positive_reply_rate == round(2 / 3, 4)
    # The steps add up to the counts, and the report says the same.
    assert sum(s.sent for s in figures.steps) == counts.sent == 4
    report = await store.report("c1")
    for s in figures.steps:
        assert s.sent == sum(r.step == s.step and r.delivery_status == "sent" for r in report)


async def test_no_first_step_sent_means_no_rate(backend: Backend) -> None:
    store = backend.store
    (ana,) = [lead.lead_id for lead in await new_campaign(store, "c1", n=1)]
    await draft(store, "c1", ana)
    await reply(store, "c1", ana, "early", intent="question")  # wrote in before any send
    _, figures = await store.status_figures("c1")
    assert figures.positive_reply_rate is None
    assert figures.replies_by_intent == {"question": 1}
    assert figures.steps == [StepFigures(step=1, sent=0, positive_replies=1)]
    _, empty = await store.status_figures("nobody")
    assert (empty.replies_by_intent, empty.positive_reply_rate, empty.steps) == ({}, None, [])


async def test_report_rows_of_scheduled_steps_carry_their_due_time(backend: Backend) -> None:
    store = backend.store
    ana, bo, cy, di = await delivering_campaign(store)
    due = {(r.lead_id, r.step): (r.delivery_status, r.due_at) for r in await store.report("c1")}
    assert due[(bo, 2)] == ("pending", "2031-01-02T09:00:00Z")
    assert due[(ana, 2)] == ("sent", None) and due[(cy, 2)] == ("stopped", None)
    assert due[(di, 1)] == ("pending", None)  # waits for its send, not for a time
    assert due[(di, 2)] == ("pending", None)  # not scheduled until step 1 is sent
    assert all(when is None for (lead, step), (_, when) in due.items() if (lead, step) != (bo, 2))

"""Adding leads to a campaign that is still drafting (`campaign add-leads`).

Each added lead is drafted exactly once, whether its id sorts before or after the
paging cursor, across continue-as-new; duplicates of leads already in the campaign
are not added; once drafting is over, adding is refused and nothing is drafted.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from starter.manager import BadInput
from starter.start_options import EngineTuning
from tests.fakes.doubles import fast_agents
from tests.workflows.test_orchestration import finish, leads, start, wait_stage


def more_leads(cid: str, emails: list[str]):
    return parse_lead_rows(enumerate([{"email": e} for e in emails], start=2), cid)


async def test_added_leads_are_drafted_once_across_continue_as_new(
    ts_env, settings, store, prefix, run_workers
) -> None:
    cid = "c-add"
    async with run_workers(ts_env.client, overrides=fast_agents(store)):
        mgr = await start(ts_env, settings, store, prefix, cid, leads(12),
                          tuning=EngineTuning(window=2, page_size=3, leads_per_run=5))
        await mgr.control(cid, "pause")
        first = await mgr.add_leads(cid, more_leads(cid, [f"new{i}@add{i}.example"
                                                          for i in range(9)]))
        assert (first.leads_accepted, first.leads_already_present) == (9, 0)
        # The same file again, plus one lead the campaign already had: nothing doubles.
        again = await mgr.add_leads(cid, more_leads(
            cid, [f"new{i}@add{i}.example" for i in range(9)] + ["lead0@co0.example"]))
        assert (again.leads_accepted, again.leads_already_present) == (0, 10)
        await mgr.control(cid, "resume")
        st = await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
        assert (st.counts.leads, st.counts.drafted, st.counts.draft_failed) == (21, 21, 0)
        counts = await store.counts(cid)
        assert (counts.leads, counts.drafted) == (21, 21)

        with pytest.raises(BadInput, match="only while it is drafting"):
            await mgr.add_leads(cid, more_leads(cid, ["late@late.example"]))
        assert (await store.counts(cid)).leads == 21, "a refused add stores nothing"
        await mgr.approve(cid, by="tester")
        final = await finish(ts_env, cid, timedelta(seconds=5))
    assert final.counts.sent == 21
    assert final.counts.leads == 21, "no lead was started twice"
    assert final.stage is Stage.COMPLETED


"""Pacing measured where it matters: at the receiving SMTP server, in real time.

The dev server (real clock) runs two campaigns on the `smtp` channel against a real
aiosmtpd on loopback; the receive times the server recorded must show the domain limit
(at most N a minute to one domain, other domains not held back) and the campaign's
send rate. Slow by nature (a per-minute limit takes a minute to show), so marked slow.
"""

from __future__ import annotations

import asyncio
import itertools
from email.utils import parseaddr

import pytest
from pydantic import SecretStr

from campaign_core.models import Channel, Stage
from starter.manager import CampaignManager
from tests.fakes.doubles import fast_agents
from tests.fakes.smtp_server import smtp_server
from tests.workflows.test_orchestration import start, wait_stage

pytestmark = pytest.mark.slow


def domain(addr: str) -> str:
    return parseaddr(addr)[1].rpartition("@")[2]


async def test_domain_limit_and_send_rate_hold_at_the_smtp_server(
    dev_env, settings, store, prefix, run_workers
) -> None:
    drafting_only = {k: v for k, v in fast_agents(store).items() if k != "deliver_message"}
    same = [{"email": f"p{i}@same.example", "company": "Same"} for i in range(4)]
    others = [{"email": f"q{i}@other{i}.example", "company": "Other"} for i in range(2)]
    paced = [{"email": f"r{i}@rate{i}.example", "company": "Rate"} for i in range(5)]
    settings.postal_address = "Relay Inc., 1 Main St, Springfield, IL 62701, USA"
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        async with run_workers(dev_env.client, overrides=drafting_only):
            mgrs: list[CampaignManager] = [
                await start(dev_env, settings, store, prefix, "c-domain", same + others,
                            channel=Channel.SMTP, domain_limit=2),
                await start(dev_env, settings, store, prefix, "c-rate", paced, channel=Channel.SMTP,
                            send_rate=2.0),
            ]
            for mgr, cid in zip(mgrs, ("c-domain", "c-rate"), strict=True):
                await wait_stage(dev_env, cid, Stage.AWAITING_APPROVAL)
                await mgr.approve(cid, by="tester")
            for _ in range(1800):  # up to 3 minutes of real time
                if len(sink.messages) == 11:
                    break
                await asyncio.sleep(0.1)
    got = {m.rcpt_tos[0]: m.received_at for m in sink.messages}
    assert len(sink.messages) == len(got) == 11, "one message per lead"

    same_times = sorted(t for a, t in got.items() if domain(a) == "same.example")
    # Any 60-second span (less 1 s for clock and scheduling jitter) holds at most 2.
    for i, t in enumerate(same_times):
        assert len([u for u in same_times[i:] if u < t + 59]) <= 2, same_times
    assert same_times[2] - same_times[0] >= 59, "the third waits for the minute to pass"
    other_times = [t for a, t in got.items() if domain(a).startswith("other")]
    assert max(other_times) - same_times[0] < 30, "other domains are not held back"

    rate_times = sorted(t for a, t in got.items() if domain(a).startswith("rate"))
    gaps = [b - a for a, b in itertools.pairwise(rate_times)]
    assert all(g >= 0.4 for g in gaps), gaps  # 2/s → 0.5 s apart, less jitter
    assert rate_times[-1] - rate_times[0] >= 1.9

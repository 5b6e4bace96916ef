"""The offline writer (issue 24): drafts a person would send, on every step of a sequence.

The demo campaign of docs/guide.md (its leads, knowledge base and brief, three steps) runs on
the time-skipping server with the real agents, and every draft of every step is read back:
it passes the guardrails, holds no markdown and no question lifted from the knowledge base,
and is signed with the sender's name from CAMPAIGN_FROM. The writer is also run directly
over many generated leads and briefs, the way the benchmark makes them.
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.guardrails import Citation, DraftOutput, check_draft
from activities.knowledge import KnowledgeIndex, lead_query
from activities.offline_writer import (
    OFFLINE_ASK,
    OFFLINE_FOLLOW_UP_ASK,
    OFFLINE_LAST_NOTE,
    offline_draft,
    offline_follow_up,
    signature_name,
)
from activities.retrieval.chunking import chunk_kb
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import Stage
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.rows import DraftRow
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB, REPO
from tests.workflows.test_orchestration import wait_stage
from worker_main import build_workers

DEMO = REPO / "starter" / "demo_data"
DEMO_BRIEF = (DEMO / "brief.md").read_text(encoding="utf-8")
CITE_BRIEF = "Book a 20-minute intro call. Cite a passage for every claim."
#: docs/guide.md's `--follow-up 3d --follow-up 7d`.
FOLLOW_UPS = [3 * 86400, 7 * 86400]
SENDER = "Maya Lind <maya@relay.example>"
GROUNDING = [OFFLINE_ASK, OFFLINE_FOLLOW_UP_ASK, OFFLINE_LAST_NOTE]

_MARKDOWN_LINE = re.compile(r"(?m)^\s*(?:[-*+]\s|#)")
_MARKDOWN_LINK = re.compile(r"\[[^\]\n]+\]\([^)\n]+\)")
_QUESTION = re.compile(r"[^.!?\n]*\?")


def kb_text() -> str:
    """Every knowledge-base file, whitespace collapsed (a question may wrap in the source)."""
    return " ".join(" ".join(p.read_text(encoding="utf-8").split()) for p in sorted(KB.iterdir()))


def demo_rows() -> list[dict[str, str]]:
    with (DEMO / "leads.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def problems(body: str, kb: str, sender_name: str) -> list[str]:
    """What makes `body` read as pasted fragments rather than a message a person would send."""
    found = []
    if "**" in body or "__" in body:
        found.append("markdown bold")
    found += [f"markdown line {m.group(0)!r}" for m in _MARKDOWN_LINE.finditer(body)]
    found += [f"markdown link {m.group(0)!r}" for m in _MARKDOWN_LINK.finditer(body)]
    for m in _QUESTION.finditer(body):
        question = " ".join(m.group(0).split())
        if len(question.split()) > 1 and question in kb:
            found.append(f"question copied from the knowledge base: {question!r}")
    if '"' in body or "\u201c" in body:  # the demo's customer quotes are all anonymous
        found.append("a quotation with no named customer")
    lines = body.rstrip().splitlines()
    if len(lines) < 2 or lines[-1].strip() != sender_name or not lines[-2].strip().endswith(","):
        found.append(f"not signed by {sender_name!r}: ends {lines[-2:]!r}")
    return found


@contextlib.asynccontextmanager
async def workers(client: Client, store: Store, settings: Settings,
                  prefix: str) -> AsyncIterator[None]:
    """Every queue's worker, with `settings` (conftest's `run_workers` takes the default
    settings, whose CAMPAIGN_FROM signs "Campaigns")."""
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, store, settings, prefix=prefix):
            await stack.enter_async_context(w)
        yield


async def draft_output(store: Store, draft: DraftRow) -> DraftOutput:
    """The draft as the writer made it: its claims are in the copywriter's envelope."""
    env = await store.get_envelope(draft.envelope_id)
    assert env is not None
    (record,) = [r for r in env.records if r.kind == "draft"]
    return DraftOutput(subject=draft.subject, body=draft.body,
                       personal_points=list(record.data.get("personal_points", [])),
                       citations=[Citation(**c) for c in record.data.get("claims", [])])


@pytest.mark.parametrize("brief", [DEMO_BRIEF, CITE_BRIEF], ids=["demo-brief", "cite-brief"])
async def test_the_demo_sequence_drafts_every_step_as_a_person_would_write_it(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, brief: str,
) -> None:
    """docs/guide.md's start command on the demo data: 12 leads x 3 steps, none failed."""
    sender = settings.model_copy(update={"mail_from": SENDER})
    cid = "c-demo-seq"
    rows = demo_rows()
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    mgr = CampaignManager(sender, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    async with workers(ts_env.client, store, sender, prefix):
        await mgr.start(intake,
                        CampaignOptions(brief=brief, kb=str(KB), follow_ups=[f"{s}s" for s in FOLLOW_UPS]),
                        name=cid, campaign_id=cid)
        await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
    counts = await store.counts(cid)
    drafts = await store.list_drafts(cid)
    assert (counts.drafted, counts.draft_failed) == (len(rows), 0)
    assert sorted(d.step for d in drafts) == sorted([1, 2, 3] * len(rows))
    kb = kb_text()
    campaign = await store.get_campaign(cid)
    assert campaign is not None
    for d in drafts:
        lead = await store.get_lead(cid, d.lead_id)
        assert lead is not None
        passages = await store.get_retrieval(cid, d.lead_id)
        out = await draft_output(store, d)
        where = f"{lead.email} step {d.step}"
        assert check_draft(out, passages=passages, lead=lead, brief=campaign.brief,
                           grounding=GROUNDING) == [], where
        assert out.citations, f"{where}: the brief requires citations"
        assert problems(d.body, kb, "Maya Lind") == [], f"{where}:\n{d.body}"


# -- the writer alone, over many leads and briefs ----------------------------------------


def _lead(i: int, **fields: Any) -> Lead:
    row = {"email": f"lead{i}@co{i % 500}.example", **fields}
    (lead,) = parse_lead_rows([(2, row)], "c-gen").leads
    return lead


def test_the_benchmark_lead_whose_company_reads_as_a_phone_number_is_drafted() -> None:
    """`bench_engine`'s lead 1640 ("Co 1640"): "1640" is a valid German number, and the
    writer put it in the body, where the guardrails take it for an invented phone number."""
    brief = "Book a short intro call."
    lead = _lead(1640, company="Co 1640", first_name="Lead1640")
    draft = offline_draft(lead, [], brief)
    assert check_draft(draft, passages=[], lead=lead, brief=brief, grounding=GROUNDING) == []


def _passages(lead: Lead, brief: str, index: KnowledgeIndex, top_k: int) -> list[dict[str, Any]]:
    """What the knowledge agent retrieves for the lead (BM25, as with no embedding model)."""
    chunks = [index.chunks[i] for i, _ in index.lexical.search(lead_query(lead, brief), top_k)]
    return [{"passage_id": c.chunk_id, "source": c.source, "title": c.title, "text": c.text}
            for c in chunks]


#: Lead fields that made the writer fail a guardrail, or would: numbers read as phone
#: numbers, placeholders, links and addresses, citation-like brackets, markdown.
ODD_FIELDS: list[dict[str, str]] = [
    {"company": "Co 1640", "first_name": "Lead1640"},
    {"company": "Co 1699", "title": "VP 1680"},
    {"company": "{Company}", "first_name": "{first_name}", "title": "[Job Title]"},
    {"company": "TBD", "first_name": "XXX"},
    {"company": "Acme (call +49 30 1234567)", "title": "CEO, mail ceo@acme.example"},
    {"company": "acme.example", "title": "Head of https://evil.example/x"},
    {"company": "C# Labs [notes.md#1-deadbeef]", "first_name": "Ana"},
    {"company": "**Bold** Co", "title": "- VP Sales"},
    {"first_name": "Bo"},
    {},
    {"company": "Northwind  Freight", "title": "VP Operations", "notes": "Runs 12 trucks"},
    {"first_name": "Jo 1645", "company": "A" * 150},
]
BRIEFS = ["", "Book a short intro call.", DEMO_BRIEF, CITE_BRIEF,
          "Cite the source of every figure. Under 90 words."]


@pytest.mark.parametrize("top_k", [1, 3])
def test_every_step_passes_the_guardrails_for_any_lead_and_brief(top_k: int) -> None:
    """Generated leads (the benchmark's, and odd ones) x briefs x a 3-step sequence."""
    index = KnowledgeIndex(chunk_kb(KB))
    leads = [_lead(i, company=f"Co {i}", first_name=f"Lead{i}") for i in range(1600, 1720, 7)]
    leads += [_lead(10_000 + i, **fields) for i, fields in enumerate(ODD_FIELDS)]
    kb = kb_text()
    failures = []
    for brief in BRIEFS:
        for lead in leads:
            for passages in (_passages(lead, brief, index, top_k), []):
                earlier: list[DraftRow] = []
                for step in (1, 2, 3):
                    if step == 1:
                        draft = offline_draft(lead, passages, brief, sender="Maya Lind")
                    else:
                        draft = offline_follow_up(lead, passages, earlier, step, 3,
                                                  subject=f"Re: {earlier[0].subject}",
                                                  brief=brief, sender="Maya Lind")
                    reasons = check_draft(draft, passages=passages, lead=lead, brief=brief,
                                          grounding=GROUNDING)
                    reasons += problems(draft.body, kb, "Maya Lind")
                    if reasons:
                        failures.append((brief[:30], lead.company, step, reasons, draft.body))
                    earlier.append(_row(lead, step, draft))
    assert failures == [], failures[:3]


def _row(lead: Lead, step: int, draft: DraftOutput) -> DraftRow:
    return DraftRow(campaign_id="c-gen", lead_id=lead.lead_id, step=step, subject=draft.subject,
                    body=draft.body, citations=[c.passage_id for c in draft.citations],
                    provenance={}, envelope_id=f"env-{step}", approved=False, created_at="",
                    email=lead.email)


def test_a_quote_is_used_only_with_the_customer_named() -> None:
    lead = _lead(1, company="Northwind Freight", first_name="Maren", title="VP Operations")
    anonymous = {"passage_id": "cs.md#4-00000000", "text": (
        "## Why it fit\n\n\"Our team wanted automation, but not automation that emails a "
        "customer without a human looking at it first,\" said the company's VP Operations.")}
    named = {"passage_id": "cs.md#5-11111111", "text": (
        "## Why it fit\n\n\"Relay gave our dispatchers their evenings back,\" said Jana "
        "Novak, VP Operations at Baltic Haulage.")}
    draft = offline_draft(lead, [anonymous, named], "", sender="Maya Lind")
    assert "the company's VP Operations" not in draft.body
    assert "said Jana Novak, VP Operations at Baltic Haulage." in draft.body
    assert [c.passage_id for c in draft.citations] == ["cs.md#5-11111111"]


def test_the_signature_is_the_display_name_of_campaign_from_or_its_local_part() -> None:
    assert signature_name("Maya Lind <maya@relay.example>") == "Maya Lind"
    assert signature_name('"Lind, Maya" <maya@relay.example>') == "Lind, Maya"
    assert signature_name("Campaigns <campaigns@localhost>") == "Campaigns"
    assert signature_name("maya.lind@relay.example") == "Maya Lind"
    assert signature_name("<sales-team@relay.example>") == "Sales Team"


def test_markdown_and_faq_questions_become_plain_sentences() -> None:
    lead = _lead(2, company="Threadline Outfitters", first_name="Tom")
    passages: list[dict[str, Any]] = [
        {"passage_id": "integrations.md#1-de74c2cf", "text": (
            "## CRM\n\n- **Salesforce** and **HubSpot**: two-way sync of leads, contacts, "
            "accounts and activities. Relay logs every sent message and approval on the CRM "
            "record.\n- **Pipedrive**: one-way sync of leads and activities.")},
        {"passage_id": "faq.txt#2-3c93cb6d", "text": (
            "Who is Relay for?\nRevenue operations managers, VP Sales, Heads of Growth, "
            "marketing directors and CTOs at mid-sized companies.")},
        {"passage_id": "faq.txt#9-622dc691", "text": (
            "Does Relay work with our CRM?\nRelay integrates with [Salesforce](https://"
            "salesforce.example/), HubSpot and Pipedrive, plus Slack.")},
    ]
    draft = offline_draft(lead, passages, CITE_BRIEF, sender="Maya Lind")
    assert "Relay logs every sent message and approval on the CRM record." in draft.body
    assert "Relay integrates with Salesforce, HubSpot and Pipedrive, plus Slack." in draft.body
    assert "?" not in draft.body.replace(OFFLINE_ASK, "")
    assert problems(draft.body, kb_text(), "Maya Lind") == []
    assert check_draft(draft, passages=passages, lead=lead, brief=CITE_BRIEF,
                       grounding=GROUNDING) == []


def test_a_passage_with_no_sentence_to_state_is_still_cited_on_every_step() -> None:
    """A price list or a bare heading holds no sentence a message can state; a brief that
    requires citations still gets one on every step (a line as written, an offer of the
    notes), never the list's markdown."""
    lead = _lead(3, company="Acme", first_name="Ana")
    passages: list[dict[str, Any]] = [
        {"passage_id": "pricing.md#2-05ff952b", "title": "Starter: $49 per seat per month",
         "text": "### Starter: $49 per seat per month\n\n- Up to 10 seats.\n"
                 "- 100,000 workflow steps per month."},
        {"passage_id": "pricing.md#1-dbc09b5b", "title": "Plans", "text": "## Plans"},
    ]
    earlier: list[DraftRow] = []
    for step in (1, 2, 3):
        draft = (offline_draft(lead, passages, CITE_BRIEF, sender="Maya Lind") if step == 1 else
                 offline_follow_up(lead, passages, earlier, step, 3, subject="Re: x",
                                   brief=CITE_BRIEF, sender="Maya Lind"))
        assert draft.citations, draft.body
        assert check_draft(draft, passages=passages, lead=lead, brief=CITE_BRIEF,
                           grounding=GROUNDING) == [], draft.body
        assert problems(draft.body, kb_text(), "Maya Lind") == [], draft.body
        earlier.append(_row(lead, step, draft))
    assert "Up to 10 seats." in earlier[0].body

"""The RAG agent on a small fixture knowledge base: chunking, BM25, dense + RRF, caching."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.knowledge import KnowledgeAgent
from activities.retrieval.chunking import MAX_CHUNK_CHARS, chunk_kb, chunk_text, html_to_markdown
from activities.retrieval.dense import rrf
from activities.retrieval.lexical import stem, tokens
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import LeadInput
from campaign_core.settings import Settings
from tests.fakes.llm_server import LLMTestServer

BRIEF = ("Book a 20-minute intro call with revenue and operations leaders. "
         "Every claim must cite the knowledge base.")
FILES = {
    "case-study-logistics.md": """# Case study: a regional freight carrier

A freight and logistics company with 1,200 employees automated its customer outreach.

## Results

Time from shipment exception to customer update fell from 26 hours to 3 hours for the
operations team and its dispatchers.
""",
    "case-study-bank.md": """# Case study: a digital bank

## Onboarding

The bank's sales team cleared its KYC onboarding backlog and closed enterprise deals sooner.
""",
    "security.md": """# Security and compliance

## Audits

Relay holds a SOC 2 Type II report. CTOs and security teams get the audit package on request.
""",
    "pricing.md": """# Pricing

## Plans

Team plans are priced per seat and billed yearly.
""",
    "about.html": """<html><head><style>.x{color:red}</style><script>var secret = 1;</script></head>
<body><h1>About Relay</h1><p>Relay is a workflow platform for revenue teams.</p>
<h2>Support</h2><p>Support answers within one business day.</p></body></html>""",
    "faq.txt": "What is Relay?\nA durable workflow platform.\n\nWho is it for?\nRevenue teams.\n",
    ".drafts/ignored.md": "# Hidden\n\nNot part of the knowledge base.\n",
}
LEADS = [
    {"email": "maren@northwind.example", "first_name": "Maren", "company": "Northwind Freight",
     "title": "VP Operations", "notes": "shipment exceptions handled in spreadsheets"},
    {"email": "sofia@ledgerly.example", "first_name": "Sofia", "company": "Ledgerly Payments",
     "title": "CTO", "notes": "preparing for a SOC 2 audit"},
    {"email": "kenji@kestrel.example", "first_name": "Kenji", "company": "Kestrel Digital Bank",
     "title": "VP Sales", "notes": "KYC onboarding backlog slows enterprise deals"},
]
EXPECTED = {"maren@northwind.example": "case-study-logistics.md", "sofia@ledgerly.example":
            "security.md", "kenji@kestrel.example": "case-study-bank.md"}


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


async def seed(store, kb: Path, cid: str, leads: list[dict[str, Any]] = LEADS) -> list[Lead]:
    await store.upsert_campaign(campaign_id=cid, name="t", brief=BRIEF, channel="outbox",
                                kb_dir=str(kb), workflow_id=campaign_workflow_id(cid))
    intake = parse_lead_rows(enumerate(leads, start=2), cid)
    await store.upsert_leads(cid, intake.leads)
    return intake.leads


async def retrieve(agent: KnowledgeAgent, cid: str, lead_id: str):
    return await ActivityEnvironment().run(agent.retrieve_knowledge,
                                           LeadInput(campaign_id=cid, lead_id=lead_id))


# -- chunking ------------------------------------------------------------------------------


def test_chunk_ids_are_stable_and_follow_content(kb):
    first = chunk_kb(kb)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in chunk_kb(kb)]
    assert not any(c.source.startswith(".drafts") for c in first), "hidden folders are skipped"
    (kb / "pricing.md").write_text(FILES["pricing.md"].replace("yearly", "monthly"))
    changed = {c.chunk_id for c in chunk_kb(kb)} ^ {c.chunk_id for c in first}
    assert changed and all(cid.startswith("pricing.md#") for cid in changed)


def test_html_is_text_with_headings_and_without_scripts(kb):
    chunks = [c for c in chunk_kb(kb) if c.source == "about.html"]
    assert [c.title for c in chunks] == ["About Relay", "Support"]
    text = " ".join(c.text for c in chunks)
    assert "secret" not in text and "color" not in text and "<" not in text
    assert html_to_markdown("<p>a &amp; b</p>") == "a & b"


def test_long_sections_are_split_at_paragraphs():
    para = "Relay keeps every workflow durable across restarts. " * 10
    chunks = chunk_text("# Doc\n\n" + "\n\n".join([para] * 8), "long.md", ".md")
    assert len(chunks) > 1 and all(len(c.text) <= MAX_CHUNK_CHARS for c in chunks)
    assert all(c.doc_title == "Doc" for c in chunks)


def test_tokens_meet_plurals_and_drop_stopwords():
    assert tokens("The shipments of companies") == ["shipment", "company"]
    assert stem("process") == "process" and stem("status") == "status"


# -- BM25 retrieval ------------------------------------------------------------------------


async def test_retrieval_returns_the_passage_the_lead_points_to(store, settings, kb):
    leads = await seed(store, kb, "k-match")
    agent = KnowledgeAgent(store, settings)
    for lead in leads:
        ref = await retrieve(agent, "k-match", lead.lead_id)
        passages = await store.get_retrieval("k-match", lead.lead_id)
        assert passages[0]["source"] == EXPECTED[lead.email], (lead.email, passages)
        assert len(passages) == settings.retrieval_top_k
        assert {"passage_id", "source", "title", "text", "score"} <= set(passages[0])
        env = await store.get_envelope(ref.envelope_id)
        assert env is not None and [r.key for r in env.records] == [p["passage_id"] for p in passages]
        assert all(r.provenance.model == "bm25" for r in env.records)
        assert all("text" not in r.data for r in env.records), "the audit keeps ids and scores"
    logistics = (await store.get_retrieval("k-match", leads[0].lead_id))[0]
    assert logistics["title"] == "Results", "the section, found through its document's title"


async def test_a_campaign_without_a_knowledge_base_gets_no_passages(store, settings):
    await store.upsert_campaign(campaign_id="k-none", name="t", brief=BRIEF, channel="outbox",
                                kb_dir=None, workflow_id=campaign_workflow_id("k-none"))
    intake = parse_lead_rows(enumerate(LEADS[:1], start=2), "k-none")
    await store.upsert_leads("k-none", intake.leads)
    ref = await retrieve(KnowledgeAgent(store, settings), "k-none", intake.leads[0].lead_id)
    assert ref.record_count == 0


async def test_a_missing_knowledge_base_is_a_permanent_error(store, settings, tmp_path):
    leads = await seed(store, tmp_path / "nope", "k-missing")
    with pytest.raises(ApplicationError) as err:
        await retrieve(KnowledgeAgent(store, settings), "k-missing", leads[0].lead_id)
    assert err.value.type == "InvalidInput" and err.value.non_retryable


async def test_the_index_is_built_once_for_a_500_lead_campaign(store, settings, kb):
    many = [{"email": f"lead{i}@example.com", "company": f"Company {i}",
             "title": ("VP Operations", "CTO", "VP Sales")[i % 3]} for i in range(500)]
    leads = await seed(store, kb, "k-500", many)
    agent = KnowledgeAgent(store, settings)
    gate = asyncio.Semaphore(8)  # as many at once as the knowledge queue runs

    async def one(lead: Lead) -> None:
        async with gate:
            await retrieve(agent, "k-500", lead.lead_id)

    await asyncio.gather(*(one(lead) for lead in leads))
    assert agent.builds == 1
    assert all([await store.get_retrieval("k-500", lead.lead_id) for lead in leads[::50]])
    # A changed knowledge base is a new version: built again, once.
    (kb / "pricing.md").write_text(FILES["pricing.md"] + "\nVolume discounts from 50 seats.\n")
    await asyncio.gather(*(one(lead) for lead in leads[:20]))
    assert agent.builds == 2


# -- dense retrieval fused by reciprocal rank ------------------------------------------------


def test_rrf_rewards_agreement():
    fused = rrf([[1, 2, 3], [3, 1, 4]])
    assert max(fused, key=lambda k: fused[k]) == 1
    assert fused[3] > fused[2] and fused[4] < fused[2]


@pytest.fixture
def embed_server():
    with LLMTestServer() as server:
        yield server


@pytest.fixture
def dense_settings(settings: Settings, embed_server: LLMTestServer) -> Settings:
    return settings.model_copy(update={
        "embedding_model": "test-embed", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": embed_server.base_url, "llm_timeout_seconds": 5.0,
    })


async def test_dense_retrieval_embeds_each_chunk_once(store, kb, dense_settings, embed_server):
    leads = await seed(store, kb, "k-dense")
    n_chunks = len(chunk_kb(kb))
    agent = KnowledgeAgent(store, dense_settings)
    for lead in leads:
        await retrieve(agent, "k-dense", lead.lead_id)
        passages = await store.get_retrieval("k-dense", lead.lead_id)
        assert passages[0]["source"] == EXPECTED[lead.email]
        assert passages[0]["scores"]["dense"] is not None
    embedded = [c.inputs for c in embed_server.calls("embeddings")]
    assert embedded == [n_chunks, 1, 1, 1], "every chunk once, then one query per lead"
    env = await store.get_envelope((await retrieve(agent, "k-dense", leads[0].lead_id)).envelope_id)
    assert env is not None and env.records[0].provenance.model == "bm25+test-embed"
    # Another worker on the same machine: its index comes from the vector cache.
    embed_server.reset()
    other = KnowledgeAgent(store, dense_settings)
    await retrieve(other, "k-dense", leads[1].lead_id)
    assert other.builds == 1 and other.embedder is not None and other.embedder.embedded == 0
    assert embed_server.calls("embeddings") == [], "chunk and query vectors were all cached"


async def test_embedding_failures_follow_the_llm_failure_semantics(store, kb, dense_settings,
                                                                   embed_server):
    leads = await seed(store, kb, "k-dense-429")
    embed_server.retry_after = 4
    embed_server.script("429", path="embeddings")
    with pytest.raises(ApplicationError) as err:
        await retrieve(KnowledgeAgent(store, dense_settings), "k-dense-429", leads[0].lead_id)
    assert err.value.type == "LLMRateLimited" and not err.value.non_retryable
    assert err.value.next_retry_delay is not None and err.value.next_retry_delay.total_seconds() == 4


def test_dense_retrieval_needs_a_key(settings):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        KnowledgeAgent(None, settings.model_copy(update={"embedding_model": "m"}))  # type: ignore[arg-type]

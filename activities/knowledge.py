"""The RAG agent: finds the knowledge-base passages that fit a lead and the brief.

BM25, plus dense retrieval fused by reciprocal rank when an embedding model is set; the index
is built once per knowledge-base content, and the workflow carries passage ids, not documents.
See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import activity

from activities.base import Agent, heartbeating, permanent
from activities.llm_client import make_client
from activities.retrieval.chunking import Chunk, chunk_file, chunk_kb, kb_files, kb_hash, kb_signature
from activities.retrieval.dense import DenseIndex, Embedder, rrf, text_hash
from activities.retrieval.lexical import LexicalIndex, tokens
from campaign_core.envelope import EnvelopeRef, Record, now_utc
from campaign_core.leads import Lead
from campaign_core.models import LeadInput
from campaign_core.settings import Settings
from campaign_core.store.base import Store

if TYPE_CHECKING:
    import numpy as np  # annotations only: the vectors are made in activities/retrieval/dense.py

__all__ = [
    "Chunk",
    "KnowledgeAgent",
    "KnowledgeIndex",
    "chunk_file",
    "dense_query",
    "kb_files",
    "kb_hash",
    "lead_query",
    "tokens",
]

#: How many candidates each ranking contributes to the fusion.
CANDIDATES = 20
#: Indexes kept in memory (one per knowledge-base version in use).
MAX_INDEXES = 4
LEXICAL_MODEL = "bm25"
#: Weight of the brief's BM25 score next to the lead's own fields (1.0).
BRIEF_WEIGHT = 0.05


@dataclass(frozen=True)
class Hit:
    """A ranked chunk with the scores that put it there."""

    chunk: Chunk
    score: float
    bm25: float | None
    dense: float | None


class KnowledgeIndex:
    """BM25 over one knowledge base's chunks, plus dense vectors when configured."""

    def __init__(self, chunks: list[Chunk], dense: DenseIndex | None = None,
                 model: str = LEXICAL_MODEL) -> None:
        self.chunks = chunks
        self.lexical = LexicalIndex(chunks)
        self.dense = dense
        self.model = model

    async def search(self, query: str | list[tuple[str, float]], top_k: int = 3,
                     query_vector: np.ndarray | None = None) -> list[Hit]:
        """Async because the dense half may be answered by the store (pgvector)."""
        lexical = self.lexical.search(query, CANDIDATES)
        if self.dense is None or query_vector is None:
            return [Hit(self.chunks[i], s, s, None) for i, s in lexical[:top_k]]
        dense = await self.dense.search(query_vector, CANDIDATES)
        fused = rrf([[i for i, _ in lexical], [i for i, _ in dense]])
        bm25, cos = dict(lexical), dict(dense)
        order = sorted(fused, key=lambda i: (-fused[i], self.chunks[i].chunk_id))[:top_k]
        return [Hit(self.chunks[i], fused[i], bm25.get(i), cos.get(i)) for i in order]


def lead_fields(lead: Lead) -> str:
    """The lead's own words: what personalises retrieval."""
    return " ".join(f for f in (lead.title, lead.company, lead.notes, *lead.custom.values()) if f)


def lead_query(lead: Lead, brief: str) -> list[tuple[str, float]]:
    """What to look for: the lead's own fields, with the brief only as a tie-breaker.

    The brief is the same for every lead and usually long; weighted equally it would
    pull every lead towards the same generic passages. A lead with no fields at all
    is matched on the brief alone.
    """
    fields = lead_fields(lead)
    return [(fields, 1.0), (brief, BRIEF_WEIGHT)] if fields else [(brief, 1.0)]


def dense_query(lead: Lead, brief: str) -> str:
    """The text embedded for a lead: its fields, or the brief when it has none."""
    return lead_fields(lead) or brief


class KnowledgeAgent(Agent):
    name = "knowledge"
    version = "2"

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
        self.top_k = settings.retrieval_top_k
        self.max_file_bytes = settings.kb_max_file_bytes
        self._indexes: OrderedDict[str, KnowledgeIndex] = OrderedDict()
        self._hashes: dict[str, tuple[tuple[tuple[str, int, int], ...], str]] = {}
        self._build_lock = asyncio.Lock()
        self.builds = 0  # how many indexes were built; read by tests and benchmarks
        self.embedder: Embedder | None = None
        if settings.embedding_model:
            self.embedder = Embedder(make_client(settings), settings.embedding_model, store, settings)

    @property
    def model_label(self) -> str:
        """What provenance names as the retrieval model."""
        return f"{LEXICAL_MODEL}+{self.embedder.model}" if self.embedder else LEXICAL_MODEL

    def _content_hash(self, root: Path) -> str:
        """The folder's content hash, re-read only when a file's size or mtime changed."""
        signature = kb_signature(root, self.max_file_bytes)
        known = self._hashes.get(str(root))
        if known is None or known[0] != signature:
            known = (signature, kb_hash(root, self.max_file_bytes))
            self._hashes[str(root)] = known
        return known[1]

    async def index_for(self, root: Path) -> tuple[str, KnowledgeIndex]:
        """The index of this knowledge-base version, built on first use only."""
        key = f"{await asyncio.to_thread(self._content_hash, root)}:{self.model_label}"
        index = self._indexes.get(key)
        if index is None:
            async with self._build_lock:  # the first caller builds; the others wait for it
                index = self._indexes.get(key)
                if index is None:
                    index = await self._build(root)
                    self._indexes[key] = index
                    self.builds += 1
                    while len(self._indexes) > MAX_INDEXES:
                        self._indexes.popitem(last=False)
        self._indexes.move_to_end(key)
        return key, index

    async def _build(self, root: Path) -> KnowledgeIndex:
        chunks = await asyncio.to_thread(chunk_kb, root, self.max_file_bytes)
        index = await asyncio.to_thread(KnowledgeIndex, chunks, None, self.model_label)
        if self.embedder is not None and chunks:
            texts = [c.search_text for c in chunks]
            vectors = await self.embedder.embed(texts)
            index.dense = DenseIndex(vectors, [text_hash(t) for t in texts], self.embedder.model,
                                     self.store)
        activity.logger.info("built the index of %s: %d chunks (%s)", root, len(chunks),
                             self.model_label)
        return index

    @activity.defn(name="retrieve_knowledge")
    async def retrieve_knowledge(self, inp: LeadInput) -> EnvelopeRef:
        """Store the top passages for the lead; return only the envelope reference."""
        # Heartbeats cover waiting for another lead's index build and embedding calls.
        return await heartbeating(self._retrieve(inp), details=f"retrieving for {inp.lead_id}")

    async def _retrieve(self, inp: LeadInput) -> EnvelopeRef:
        started = now_utc()
        campaign = await self.store.get_campaign(inp.campaign_id)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"campaign {inp.campaign_id} / lead {inp.lead_id} not found")
        passages: list[dict[str, Any]] = []
        kb_key = "none"
        if campaign.kb_dir:
            root = Path(campaign.kb_dir)
            if not root.is_dir():
                raise permanent("InvalidInput", f"knowledge base {root} is not a directory")
            kb_key, index = await self.index_for(root)
            brief = campaign.brief
            query = lead_query(lead, brief)
            vector = None
            if self.embedder is not None and index.dense is not None:
                vector = (await self.embedder.embed([dense_query(lead, brief)]))[0]
            for hit in await index.search(query, self.top_k, vector):
                passages.append({
                    "passage_id": hit.chunk.chunk_id, "source": hit.chunk.source,
                    "title": hit.chunk.title, "text": hit.chunk.text,
                    "score": round(hit.score, 6),
                    "scores": {"bm25": None if hit.bm25 is None else round(hit.bm25, 4),
                               "dense": None if hit.dense is None else round(hit.dense, 4)},
                })
        records = [
            Record(
                kind="passage",
                key=str(p["passage_id"]),
                data={k: v for k, v in p.items() if k != "text"},
                provenance=self.provenance(
                    f"kb:{p['source']}", {"kb": kb_key, "lead": inp.lead_id}, model=self.model_label
                ),
            )
            for p in passages
        ]
        env = self.envelope(inp.campaign_id, records, started)
        ref = await self.keep(env, inp.lead_id, f"{len(passages)} passages")
        await self.store.save_retrieval(inp.campaign_id, inp.lead_id, passages, ref.envelope_id)
        return ref

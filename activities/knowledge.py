"""The RAG agent: finds the knowledge-base passages that fit a lead and the brief.

A knowledge base is a folder of Markdown, text and HTML files, split into chunks
by heading (or paragraph) with stable ids. This skeleton scores chunks with a small
BM25; the index is built once per knowledge-base content hash and kept in memory,
never rebuilt per lead.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.envelope import EnvelopeRef, Record, now_utc
from campaign_core.leads import Lead
from campaign_core.models import LeadInput

KB_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm"}
_WORD = re.compile(r"[a-z0-9]+")
_TAG = re.compile(r"<[^>]+>")
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
    "it", "its", "of", "on", "or", "our", "that", "the", "this", "to", "we", "with", "you", "your",
})


def tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in _STOP and len(t) > 1]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    title: str
    text: str


def chunk_file(path: Path, root: Path) -> list[Chunk]:
    """Split one file into chunks: Markdown by heading, others by blank-line paragraph."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    rel = path.relative_to(root).as_posix()
    if path.suffix.lower() in {".html", ".htm"}:
        raw = html.unescape(_TAG.sub("\n", raw))
    if path.suffix.lower() in {".md", ".markdown"}:
        parts = re.split(r"(?m)^(?=#{1,3} )", raw)
    else:
        parts = re.split(r"\n\s*\n", raw)
    chunks = []
    for index, part in enumerate(p.strip() for p in parts):
        if not part:
            continue
        title = part.splitlines()[0].lstrip("# ").strip()[:120]
        chunk_id = f"{rel}#{index}-" + hashlib.sha256(part.encode()).hexdigest()[:8]
        chunks.append(Chunk(chunk_id, rel, title, part))
    return chunks


class KnowledgeIndex:
    """BM25 over the chunks of one knowledge base."""

    def __init__(self, chunks: list[Chunk], k1: float = 1.5, b: float = 0.75) -> None:
        self.chunks = chunks
        self.k1, self.b = k1, b
        self.tfs = [Counter(tokens(c.title + " " + c.text)) for c in chunks]
        self.lengths = [sum(tf.values()) for tf in self.tfs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if chunks else 0.0
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(chunks)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def search(self, query: str, top_k: int = 3) -> list[tuple[Chunk, float]]:
        q = set(tokens(query))
        scored = []
        for chunk, tf, length in zip(self.chunks, self.tfs, self.lengths, strict=True):
            score = 0.0
            for term in q & tf.keys():
                f = tf[term]
                norm = f + self.k1 * (1 - self.b + self.b * length / (self.avg or 1))
                score += self.idf[term] * f * (self.k1 + 1) / norm
            if score > 0:
                scored.append((chunk, score))
        scored.sort(key=lambda cs: (-cs[1], cs[0].chunk_id))
        return scored[:top_k]


def kb_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in KB_SUFFIXES)


def kb_hash(root: Path) -> str:
    """Content hash of a knowledge base: the cache key of its index."""
    h = hashlib.sha256()
    for path in kb_files(root):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def lead_query(lead: Lead, brief: str) -> str:
    """What to look for: the lead's own fields, weighted above the brief they share."""
    fields = " ".join(f for f in (lead.company, lead.title, lead.notes, *lead.custom.values()) if f)
    return f"{fields} {fields} {fields} {brief}"


class KnowledgeAgent(Agent):
    name = "knowledge"
    top_k = 3

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._indexes: dict[str, KnowledgeIndex] = {}
        self.builds = 0  # how many indexes were built; read by tests and benchmarks

    def index_for(self, root: Path) -> tuple[str, KnowledgeIndex]:
        key = kb_hash(root)
        if key not in self._indexes:
            chunks = [c for path in kb_files(root) for c in chunk_file(path, root)]
            self._indexes[key] = KnowledgeIndex(chunks)
            self.builds += 1
        return key, self._indexes[key]

    @activity.defn(name="retrieve_knowledge")
    async def retrieve_knowledge(self, inp: LeadInput) -> EnvelopeRef:
        """Store the top passages for the lead; return only the envelope reference."""
        started = now_utc()
        campaign = await self.store.get_campaign(inp.campaign_id)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"campaign {inp.campaign_id} / lead {inp.lead_id} not found")
        passages: list[dict[str, object]] = []
        kb_key = "none"
        if campaign.get("kb_dir"):
            root = Path(campaign["kb_dir"])
            if not root.is_dir():
                raise permanent("InvalidInput", f"knowledge base {root} is not a directory")
            kb_key, index = await asyncio.to_thread(self.index_for, root)
            query = lead_query(lead, campaign.get("brief", ""))
            for chunk, score in index.search(query, self.top_k):
                passages.append({
                    "passage_id": chunk.chunk_id, "source": chunk.source, "title": chunk.title,
                    "text": chunk.text, "score": round(score, 4),
                })
        records = [
            Record(
                kind="passage",
                key=str(p["passage_id"]),
                data={k: v for k, v in p.items() if k != "text"},
                provenance=self.provenance(
                    f"kb:{p['source']}", {"kb": kb_key, "lead": inp.lead_id}, model="bm25"
                ),
            )
            for p in passages
        ]
        env = self.envelope(inp.campaign_id, records, started)
        ref = await self.keep(env, inp.lead_id, f"{len(passages)} passages")
        await self.store.save_retrieval(inp.campaign_id, inp.lead_id, passages, ref.envelope_id)
        return ref

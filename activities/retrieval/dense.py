"""Dense retrieval: OpenAI-compatible embeddings, cached by text hash, fused by RRF.

Embeddings cost money and time, so no text is embedded twice: vectors are cached
by (model, sha256 of the text) in a small SQLite file under CAMPAIGN_HOME, shared by
every worker on the machine and surviving restarts. (The campaign store has no
vector table yet; when it gains one, pgvector included, `EmbeddingCache` is the one
class to swap.) The search itself is an in-memory cosine over a numpy matrix, which
is exact and fast for knowledge bases of thousands of chunks.

Dense and BM25 rankings are fused by reciprocal rank (`rrf`): it needs no score
calibration between two very different scorers and rewards passages both agree on.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import openai

from activities.llm_client import provider_call
from campaign_core.settings import Settings

#: The constant of reciprocal-rank fusion (Cormack et al., 2009).
RRF_K = 60
EMBED_BATCH = 64


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """Vectors by (model, text hash) in a SQLite file; safe for concurrent workers (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _conn(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, text_hash TEXT NOT NULL, "
            "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, text_hash))")
        return conn

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        conn = self._conn()
        try:
            found: dict[str, np.ndarray] = {}
            for start in range(0, len(hashes), 500):
                part = list(hashes[start:start + 500])
                rows = conn.execute(
                    f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN "
                    f"({','.join('?' * len(part))})", [model, *part]).fetchall()
                found.update({h: np.frombuffer(v, dtype=np.float32) for h, v in rows})
            return found
        finally:
            conn.close()

    def put(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        conn = self._conn()
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO embeddings(model, text_hash, dim, vector) VALUES (?,?,?,?) "
                    "ON CONFLICT(model, text_hash) DO NOTHING",
                    [(model, h, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes())
                     for h, v in vectors.items()])
        finally:
            conn.close()


class Embedder:
    """Embeds texts with an OpenAI-compatible endpoint, never the same text twice."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, cache: EmbeddingCache,
                 settings: Settings) -> None:
        self.client = client
        self.model = model
        self.cache = cache
        self.settings = settings
        self.embedded = 0  # texts sent to the provider; read by tests and benchmarks

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length vectors, one row per text, from the cache or the provider."""
        hashes = [text_hash(t) for t in texts]
        known = await asyncio.to_thread(self.cache.get, self.model, hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in known))
        by_hash = dict(zip(hashes, texts, strict=True))
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start:start + EMBED_BATCH]
            response = await provider_call(
                self.client.embeddings.create(model=self.model, input=[by_hash[h] for h in batch]),
                what="embeddings", settings=self.settings, details=f"embedding {len(batch)} texts")
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise ValueError(f"embeddings: asked for {len(batch)} vectors, got {len(rows)}")
            fresh = {h: np.asarray(r.embedding, dtype=np.float32) for h, r in zip(batch, rows, strict=True)}
            await asyncio.to_thread(self.cache.put, self.model, fresh)
            known.update(fresh)
            self.embedded += len(batch)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        matrix = np.vstack([known[h] for h in hashes]).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)


class DenseIndex:
    """Cosine similarity over a knowledge base's chunk vectors."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, query_vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
        if self.vectors.size == 0:
            return []
        sims = self.vectors @ query_vector.reshape(-1)
        order = np.argsort(-sims, kind="stable")[:limit]
        return [(int(i), float(sims[i])) for i in order]


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: sum of 1 / (k + rank) over every ranking an item is in."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused

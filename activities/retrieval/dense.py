"""Dense retrieval: OpenAI-compatible embeddings, cached in the store by text hash, fused by RRF.

No text is embedded twice; the search runs in the store when it can (pgvector, Supabase) and
in memory otherwise, with the same ranking. See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from activities.llm_client import provider_call
from campaign_core.settings import Settings
from campaign_core.store.base import Store

if TYPE_CHECKING:
    # numpy and openai are imported where vectors are made or searched: the workflows,
    # the CLI and `campaign forget` (text_hash) import this module without needing them.
    import numpy as np
    import openai

#: The constant of reciprocal-rank fusion (Cormack et al., 2009).
RRF_K = 60
EMBED_BATCH = 64
#: Similarities equal to this many decimals are ties (broken by chunk order).
TIE_DECIMALS = 6


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Embedder:
    """Embeds texts with an OpenAI-compatible endpoint, never the same text twice."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, store: Store,
                 settings: Settings) -> None:
        self.client = client
        self.model = model
        self.store = store
        self.settings = settings
        self.embedded = 0  # texts sent to the provider; read by tests and benchmarks

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length vectors, one row per text, from the store or the provider.

        Each batch the provider returns is stored before the next is asked for, so a
        build cut short by a timeout or a crash resumes where it stopped.
        """
        import numpy as np

        hashes = [text_hash(t) for t in texts]
        unique = list(dict.fromkeys(hashes))
        stored = await self.store.get_embeddings(self.model, unique)
        known = {h: np.asarray(v, dtype=np.float32) for h, v in stored.items()}
        missing = [h for h in unique if h not in known]
        by_hash = dict(zip(hashes, texts, strict=True))
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start:start + EMBED_BATCH]
            response = await provider_call(
                self.client.embeddings.create(model=self.model, input=[by_hash[h] for h in batch]),
                what="embeddings", settings=self.settings, details=f"embedding {len(batch)} texts")
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise ValueError(f"embeddings: asked for {len(batch)} vectors, got {len(rows)}")
            fresh = {h: [float(x) for x in r.embedding] for h, r in zip(batch, rows, strict=True)}
            await self.store.put_embeddings(self.model, fresh)
            known.update({h: np.asarray(v, dtype=np.float32) for h, v in fresh.items()})
            self.embedded += len(batch)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        matrix = np.vstack([known[h] for h in hashes]).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)


class DenseIndex:
    """Cosine similarity over a knowledge base's chunk vectors: in the store, or in memory.

    `hashes` are the chunks' text hashes (row i of `vectors` is chunk i). With a
    `store` and a `model`, a search first asks the store (`Store.vector_search`);
    the first None (it cannot search vectors) makes every later search of this index
    in-memory without asking again.

    Both searches order the same way, so the backend does not change the passages:
    by similarity rounded to `TIE_DECIMALS` (the database's float arithmetic and
    numpy's differ in the last bits), then by chunk order. Chunks with the same text
    share a hash and a score. Only a tie straddling the `limit`-th place could still
    differ (the store breaks it by hash): real embeddings practically never tie.
    """

    def __init__(self, vectors: np.ndarray, hashes: Sequence[str] | None = None,
                 model: str | None = None, store: Store | None = None) -> None:
        self.vectors = vectors
        self.hashes = list(hashes or [])
        self.model = model
        self.store = store if hashes and model else None
        self._rows: dict[str, list[int]] = {}
        for i, h in enumerate(self.hashes):
            self._rows.setdefault(h, []).append(i)
        self.store_searches = 0  # searches the store answered; read by tests and benchmarks

    async def search(self, query_vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
        if self.store is not None and self.model is not None and limit > 0:
            found = await self.store.vector_search(
                self.model, [float(x) for x in query_vector.reshape(-1)], list(self._rows), limit)
            if found is None:
                self.store = None
            else:
                self.store_searches += 1
                ranked = [(i, sim if math.isfinite(sim) else 0.0)
                          for h, sim in found for i in self._rows.get(h, [])]
                ranked.sort(key=lambda hit: (-round(hit[1], TIE_DECIMALS), hit[0]))
                return ranked[:limit]
        return self.search_in_memory(query_vector, limit)

    def search_in_memory(self, query_vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
        import numpy as np

        if self.vectors.size == 0:
            return []
        sims = self.vectors @ query_vector.reshape(-1)
        order = np.argsort(-np.round(sims.astype(np.float64), TIE_DECIMALS), kind="stable")[:limit]
        return [(int(i), float(sims[i])) for i in order]


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: sum of 1 / (k + rank) over every ranking an item is in."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused

"""BM25 over the chunks of one knowledge base, with `bm25s`.

bm25s is used instead of a hand-written scorer because it is a maintained, fast
(sparse-matrix) implementation that needs nothing but numpy and works offline. The
tokenizer is ours, not bm25s's: the same function tokenizes chunks and queries, so
a query's repeated words (the lead's own fields are repeated to weigh them above
the brief) add up, and plural/singular forms meet through a deliberately small
stemmer (no stemming library or data download needed).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from activities.retrieval.chunking import Chunk

if TYPE_CHECKING:
    # bm25s and numpy are imported where an index is built or searched: the workflows and
    # the CLI import the agents' modules for their references and need neither.
    import bm25s

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS_TEXT = """
a about above after again all am an and any are as at be been before being below between both but
by can did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only
or other our ours out over own same she should so some such than that the their them then there
these they this those through to too under until up very was we were what when where which while
who whom why will with you your yours
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def stem(word: str) -> str:
    """Harman's S-stemmer: plurals only ('shipments' -> 'shipment', 'companies' -> 'company').

    Plurals are most of what separates a lead's wording from a document's; a full
    stemmer would need a library for little more gain on short passages.
    """
    if len(word) <= 3:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokens(text: str) -> list[str]:
    return [stem(t) for t in _WORD.findall(text.lower()) if t not in STOPWORDS and len(t) > 1]


class LexicalIndex:
    """bm25s over `chunks`; `search` returns (position, score) for positive scores only."""

    def __init__(self, chunks: list[Chunk], k1: float = 1.5, b: float = 0.75) -> None:
        self.chunks = chunks
        self._retriever: bm25s.BM25 | None = None
        if chunks:
            import bm25s

            # bm25s sets its own logger to DEBUG when imported and logs every index build;
            # keep that out of worker logs.
            logging.getLogger("bm25s").setLevel(logging.WARNING)
            self._retriever = bm25s.BM25(k1=k1, b=b)
            self._retriever.index([tokens(f"{c.title} {c.search_text}") or [""] for c in chunks],
                                  show_progress=False)

    def search(self, query: str | list[tuple[str, float]], limit: int) -> list[tuple[int, float]]:
        """Chunks by descending score; `query` may be weighted parts [(text, weight), ...]."""
        parts = [(query, 1.0)] if isinstance(query, str) else query
        if self._retriever is None:
            return []
        import numpy as np

        scores = np.zeros(len(self.chunks), dtype=float)
        for text, weight in parts:
            q = tokens(text)
            if q and weight:
                scores += weight * np.asarray(self._retriever.get_scores(q), dtype=float)
        ranked = sorted((i for i in range(len(self.chunks)) if scores[i] > 0),
                        key=lambda i: (-scores[i], self.chunks[i].chunk_id))
        return [(i, float(scores[i])) for i in ranked[:limit]]

"""Retrieval for the RAG agent: chunking, BM25 (bm25s), optional dense search and fusion.

Kept apart from the activity (`activities.knowledge`) so the index can be built,
tested and benchmarked without Temporal.
"""

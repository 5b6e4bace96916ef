"""Turning a knowledge-base folder into chunks with stable ids.

A knowledge base is a folder of Markdown, text and HTML files. Markdown (and HTML,
whose h1-h3 become headings) is split at headings, text files at blank lines, and
a section longer than `MAX_CHUNK_CHARS` is split again at paragraph boundaries, so
a passage is small enough to quote and to fit a prompt.

A chunk id is `<relative path>#<index>-<first 8 hex of the text's sha256>`: the same
file content always gives the same ids, and an edited chunk gets a new id, so an
old citation can never silently point at different text. The chunk hash (sha256 of
the text) is what dense vectors are cached by.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

KB_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})
MAX_CHUNK_CHARS = 1500

_HEADING = re.compile(r"(?m)^(?=#{1,3} )")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SCRIPT = re.compile(r"(?is)<(script|style|noscript)\b.*?</\1\s*>")
_HTML_HEADING = re.compile(r"(?is)<h([1-3])\b[^>]*>(.*?)</h\1\s*>")
_BLOCK = re.compile(r"(?i)</?(?:p|div|section|article|li|ul|ol|br|tr|table|h[4-6]|blockquote)\b[^>]*>")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage of a knowledge-base file."""

    chunk_id: str
    source: str  # path relative to the knowledge-base root
    title: str  # the section's heading (or first line)
    text: str
    doc_title: str = ""  # the file's first heading: context for sections like "Results"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def search_text(self) -> str:
        """What is indexed: the section with its document's title, so it is found in context."""
        prefix = self.doc_title if self.doc_title and self.doc_title != self.title else ""
        return f"{prefix}\n{self.text}".strip()


def html_to_markdown(raw: str) -> str:
    """Enough HTML to text for retrieval: no scripts or styles, headings kept as headings."""
    raw = _SCRIPT.sub(" ", raw)
    raw = _HTML_HEADING.sub(lambda m: f"\n\n{'#' * int(m.group(1))} {_TAG.sub('', m.group(2)).strip()}\n\n",
                            raw)
    raw = _BLOCK.sub("\n\n", raw)
    text = html.unescape(_TAG.sub(" ", raw))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _split_long(part: str) -> list[str]:
    """Split an over-long section at paragraph boundaries into pieces of bounded size."""
    if len(part) <= MAX_CHUNK_CHARS:
        return [part]
    pieces: list[str] = []
    current = ""
    for para in (p.strip() for p in _PARAGRAPH.split(part)):
        if not para:
            continue
        if current and len(current) + len(para) + 2 > MAX_CHUNK_CHARS:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def chunk_text(raw: str, rel: str, suffix: str) -> list[Chunk]:
    """The chunks of one file's content; `rel` names it in ids and sources."""
    suffix = suffix.lower()
    if suffix in {".html", ".htm"}:
        raw, suffix = html_to_markdown(raw), ".md"
    structured = suffix in {".md", ".markdown"}
    parts = _HEADING.split(raw) if structured else _PARAGRAPH.split(raw)
    sections = [p.strip() for p in parts if p.strip()]
    first = sections[0].splitlines()[0] if sections else ""
    doc_title = first.lstrip("# ").strip()[:120] if structured and first.startswith("#") else ""
    chunks: list[Chunk] = []
    for section in sections:
        for piece in _split_long(section):
            title = piece.splitlines()[0].lstrip("# ").strip()[:120]
            chunk_id = f"{rel}#{len(chunks)}-" + hashlib.sha256(piece.encode()).hexdigest()[:8]
            chunks.append(Chunk(chunk_id, rel, title, piece, doc_title))
    return chunks


def chunk_file(path: Path, root: Path) -> list[Chunk]:
    """Split one file into chunks (see the module doc for how)."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    return chunk_text(raw, path.relative_to(root).as_posix(), path.suffix)


def kb_files(root: Path) -> list[Path]:
    """The knowledge base's files, in a stable order; hidden files and folders are skipped."""
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in KB_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def kb_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint (path, size, mtime) used to skip re-hashing an unchanged folder."""
    out = []
    for p in kb_files(root):
        st = os.stat(p)
        out.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def kb_hash(root: Path) -> str:
    """Content hash of a knowledge base: the cache key of its index."""
    h = hashlib.sha256()
    for path in kb_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def chunk_kb(root: Path) -> list[Chunk]:
    return [c for path in kb_files(root) for c in chunk_file(path, root)]

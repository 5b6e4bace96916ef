"""Turning a knowledge-base folder into chunks with stable ids.

Ids change when a chunk's text does, so a citation never points at different text; only
regular files inside the folder and under the size cap are read.
See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

KB_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})
MAX_CHUNK_CHARS = 1500
#: Largest knowledge-base file read (the default of CAMPAIGN_KB_MAX_FILE_BYTES).
DEFAULT_MAX_FILE_BYTES = 5 * 1024 * 1024

log = logging.getLogger(__name__)

_HEADING = re.compile(r"(?m)^(?=#{1,3} )")
_PARAGRAPH = re.compile(r"\n\s*\n")
#: A `<` with no `>` before the next `<` (or the end) opens no tag; each scan stops at
#: the next `<` or `>`, so finding them all is linear.
_STRAY_LT = re.compile(r"<(?=[^<>]*(?:<|\Z))")
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3}
_BLOCK_TAGS = frozenset({"p", "div", "section", "article", "li", "ul", "ol", "br", "tr",
                         "table", "h4", "h5", "h6", "blockquote"})


class KbFileSkipped(Exception):
    """A knowledge-base file that is not read, and why."""


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


class _TextExtractor(HTMLParser):
    """Text of an HTML page: h1-h3 as Markdown headings, blocks as paragraphs, and
    nothing from scripts, styles, noscript or templates."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.heading: str | None = None
        self.heading_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif self.heading is not None:
            self.heading_text.append(" ")
        elif tag in _HTML_HEADINGS:
            self.heading, self.heading_text = tag, []
        else:
            self.parts.append("\n\n" if tag in _BLOCK_TAGS else " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag == self.heading:
            self._close_heading()
        elif self.heading is None:
            self.parts.append("\n\n" if tag in _BLOCK_TAGS else " ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            (self.heading_text if self.heading is not None else self.parts).append(data)

    def _close_heading(self) -> None:
        assert self.heading is not None
        text = " ".join("".join(self.heading_text).split())
        self.parts.append(f"\n\n{'#' * _HTML_HEADINGS[self.heading]} {text}\n\n")
        self.heading = None

    def text(self) -> str:
        self.close()
        if self.heading is not None:
            self._close_heading()
        return "".join(self.parts)


def _without_comments(raw: str) -> str:
    """Drop `<!-- ... -->` comments (an unclosed one runs to the end), in linear time."""
    out: list[str] = []
    pos = 0
    while (start := raw.find("<!--", pos)) >= 0:
        out.append(raw[pos:start])
        end = raw.find("-->", start + 4)
        if end < 0:
            return "".join(out)
        pos = end + 3
    out.append(raw[pos:])
    return "".join(out)


def html_to_markdown(raw: str) -> str:
    """Enough HTML to text for retrieval: no scripts or styles, headings kept as headings.

    Comments and stray `<` are disarmed first, so the parser's own look-ahead for a
    closing `>` or `-->` never rescans the rest of the page for each of them.
    """
    parser = _TextExtractor()
    parser.feed(_STRAY_LT.sub("&lt;", _without_comments(raw)))
    lines = [" ".join(line.split()) for line in parser.text().splitlines()]
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


def read_kb_file(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of one knowledge-base file, or `KbFileSkipped` saying why not.

    The file must resolve to a regular file inside `root` (a symlink may point only
    within the folder) and be at most `max_bytes` long. It is opened without following
    a symlink and checked again on the open descriptor, so swapping the file for a
    link between the check and the read gains nothing.
    """
    real_root = root.resolve()
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise KbFileSkipped(f"cannot be resolved ({err})") from err
    if not real.is_relative_to(real_root):
        raise KbFileSkipped("resolves outside the knowledge-base folder")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise KbFileSkipped(f"cannot be opened ({err.strerror or err})") from err
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KbFileSkipped("is not a regular file")
        if st.st_size > max_bytes:
            raise KbFileSkipped(f"is {st.st_size} bytes, over the limit of {max_bytes} "
                                "(CAMPAIGN_KB_MAX_FILE_BYTES)")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise KbFileSkipped(f"grew over the limit of {max_bytes} bytes while being read")
    return data


def chunk_file(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Chunk]:
    """Split one file into chunks (see the module doc for how)."""
    raw = read_kb_file(path, root, max_bytes).decode("utf-8", errors="replace")
    return chunk_text(raw, path.relative_to(root).as_posix(), path.suffix)


def scan_kb(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES
            ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to read, in a stable order, and the files skipped with the reason.

    Hidden files and folders are not looked at; directory symlinks are not followed
    (a file they lead to inside the folder is found by its own path anyway).
    """
    real_root = root.resolve()
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in list(dirnames):
            if name.startswith("."):
                dirnames.remove(name)
            elif (here / name).is_symlink():
                dirnames.remove(name)
                skipped.append((here / name, "is a symlink to a folder (not followed)"))
        for name in filenames:
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in KB_SUFFIXES:
                continue
            try:
                st = path.stat()  # follows a symlink: what would be read
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as err:
                skipped.append((path, f"cannot be read ({err})"))
                continue
            if not real.is_relative_to(real_root):
                skipped.append((path, "resolves outside the knowledge-base folder"))
            elif not stat.S_ISREG(st.st_mode):
                skipped.append((path, "is not a regular file"))
            elif st.st_size > max_bytes:
                skipped.append((path, f"is {st.st_size} bytes, over the limit of {max_bytes} "
                                      "(CAMPAIGN_KB_MAX_FILE_BYTES)"))
            else:
                files.append(path)
    return sorted(files), sorted(skipped)


def kb_files(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Path]:
    """The knowledge base's readable files, in a stable order (see `scan_kb`)."""
    return scan_kb(root, max_bytes)[0]


def kb_signature(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES
                 ) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint (path, size, mtime) used to skip re-hashing an unchanged folder."""
    out = []
    for p in kb_files(root, max_bytes):
        st = os.stat(p)
        out.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def kb_hash(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """Content hash of a knowledge base: the cache key of its index."""
    h = hashlib.sha256()
    for path in kb_files(root, max_bytes):
        try:
            data = read_kb_file(path, root, max_bytes)
        except KbFileSkipped:
            continue  # changed since the scan; chunk_kb logs it
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def chunk_kb(root: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Chunk]:
    """Every chunk of the knowledge base; each file skipped is logged with the reason."""
    files, skipped = scan_kb(root, max_bytes)
    chunks: list[Chunk] = []
    for path in files:
        try:
            chunks += chunk_file(path, root, max_bytes)
        except KbFileSkipped as err:
            skipped.append((path, str(err)))
    for path, reason in skipped:
        log.warning("knowledge base %s: skipped %s: it %s", root,
                    path.relative_to(root).as_posix(), reason)
    return chunks

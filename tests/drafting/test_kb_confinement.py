"""The knowledge base stays inside its folder (issue 11).

A symlink `kb/notes.txt -> ../outside/secret.env` (or a linked folder) must not put
the secret into the index, hence into a prompt or an offline email; an oversize file
is skipped; both are logged with the reason. HTML is parsed by the stdlib parser, and
input built to make a regex or the parser rescan the page is handled in one pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from activities.knowledge import KnowledgeAgent
from activities.retrieval.chunking import (
    KbFileSkipped,
    chunk_kb,
    html_to_markdown,
    kb_files,
    kb_hash,
    read_kb_file,
)
from campaign_core.settings import Settings

SECRET = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """`kb/` with one real file, next to `outside/` holding a secret."""
    kb = tmp_path / "kb"
    (kb / "sub").mkdir(parents=True)
    (kb / "faq.md").write_text("# FAQ\n\nRelay is a workflow platform for revenue teams.\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.env").write_text(f"{SECRET}\n")
    (outside / "secret.md").write_text(f"# Keys\n\n{SECRET}\n")
    return kb


def _all_text(kb: Path, **kw: int) -> str:
    return "\n".join(c.text for c in chunk_kb(kb, **kw))


def test_a_file_symlink_out_of_the_folder_is_not_read(tree: Path, caplog):
    (tree / "notes.txt").symlink_to("../outside/secret.env")
    (tree / "sub" / "keys.md").symlink_to(tree.parent / "outside" / "secret.md")
    before = kb_hash(tree)
    with caplog.at_level(logging.WARNING):
        text = _all_text(tree)
    assert "wJalrXUtnFEMI" not in text and "Relay is a workflow platform" in text
    assert [p.name for p in kb_files(tree)] == ["faq.md"]
    assert "notes.txt: it resolves outside the knowledge-base folder" in caplog.text
    assert "sub/keys.md: it resolves outside the knowledge-base folder" in caplog.text
    (tree / "notes.txt").unlink()
    assert kb_hash(tree) == before, "the link never counted"
    with pytest.raises(KbFileSkipped, match="outside"):
        read_kb_file(tree / "sub" / "keys.md", tree)


def test_a_folder_symlink_out_of_the_folder_is_not_followed(tree: Path, caplog):
    (tree / "linked").symlink_to(tree.parent / "outside", target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        text = _all_text(tree)
    assert "wJalrXUtnFEMI" not in text
    assert [p.name for p in kb_files(tree)] == ["faq.md"]
    assert "linked: it is a symlink to a folder (not followed)" in caplog.text


def test_a_symlink_within_the_folder_is_read(tree: Path):
    (tree / "sub" / "faq-again.md").symlink_to("../faq.md")
    assert [p.name for p in kb_files(tree)] == ["faq.md", "faq-again.md"]


def test_an_oversize_file_is_skipped_and_logged(tree: Path, caplog):
    (tree / "big.md").write_text("# Big\n\n" + "x" * 200 + "\n")
    size = (tree / "big.md").stat().st_size
    with caplog.at_level(logging.WARNING):
        text = _all_text(tree, max_bytes=size - 1)
    assert "xxxx" not in text and "Relay is a workflow platform" in text
    assert f"big.md: it is {size} bytes, over the limit of {size - 1}" in caplog.text
    assert "CAMPAIGN_KB_MAX_FILE_BYTES" in caplog.text
    assert "xxxx" in _all_text(tree, max_bytes=size), "a file of exactly the limit is read"


async def test_the_agent_indexes_neither_links_out_nor_oversize_files(tree: Path, store,
                                                                       settings: Settings):
    (tree / "notes.txt").symlink_to("../outside/secret.env")
    (tree / "big.md").write_text("# Big\n\n" + "y" * 5000 + "\n")
    agent = KnowledgeAgent(store, settings.model_copy(update={"kb_max_file_bytes": 1000}))
    _, index = await agent.index_for(tree)
    assert {c.source for c in index.chunks} == {"faq.md"}


def test_settings_default_is_5_mb(settings: Settings):
    assert settings.kb_max_file_bytes == 5 * 1024 * 1024
    assert Settings(CAMPAIGN_KB_MAX_FILE_BYTES=1234).kb_max_file_bytes == 1234


# -- HTML ------------------------------------------------------------------------------------


def test_html_is_parsed_not_pattern_matched():
    page = ("<html><head><title>Relay</title><style>p>a{color:red}</style></head><body>"
            "<!-- <script> --><p>Keep this sentence.</p>"
            "<h2>Sup<b>port</b></h2><p>Answers &amp; fixes within a day.</p>"
            "<script type='text/javascript'>var token = '</p>secret';</script>"
            "<noscript><p>Enable JavaScript</p></noscript><p>After.</p></body></html>")
    text = html_to_markdown(page)
    assert "Keep this sentence." in text, "a comment hides nothing after it"
    assert "## Sup port" in text and "Answers & fixes within a day." in text
    assert "secret" not in text and "color" not in text and "Enable JavaScript" not in text
    assert text.endswith("After.")


def test_8k_unclosed_script_tags_parse_in_one_pass():
    page = ("<p>Intro.</p>" + "<script" * 8000
            + "<script>var secret = 1;</script><p>Outro.</p>")
    text = html_to_markdown(page)
    assert text.startswith("Intro.") and text.endswith("Outro.")
    assert "secret" not in text
    assert html_to_markdown("<p>Intro.</p>" + "<!--" * 8000) == "Intro."
    assert html_to_markdown("<a " * 8000 + "><p>End.</p>").endswith("End.")

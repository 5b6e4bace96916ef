"""Issue 11, email identity: every spelling of one mailbox is one lead and one suppression.

Fullwidth letters (NFKC) and an internationalised domain in Unicode or in punycode
(IDNA) are the same address, so one person gets one message, and suppressing or
forgetting any spelling covers the others. Plus-addressing stays distinct, and an
address already in ASCII lower case keeps the lead id it always had.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from campaign_core.leads import lead_id_for, normalise_email, read_leads_file
from campaign_core.store.sqlite import SqliteStore
from starter.cli import app as cli_app

JANE = "jane@example.com"
JANE_FULLWIDTH = "jane@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"  # fullwidth 'example'
USER_IDN = "user@ex\u00e4mple.com"  # exämple
USER_PUNYCODE = "user@xn--exmple-cua.com"


def test_spellings_of_one_mailbox_normalise_alike() -> None:
    assert normalise_email(JANE_FULLWIDTH) == JANE
    assert normalise_email(f"  {JANE.upper()} ") == JANE
    assert normalise_email(USER_IDN) == USER_PUNYCODE
    assert normalise_email("USER@EX\u00c4MPLE.COM") == USER_PUNYCODE
    assert normalise_email("jane+news@example.com") == "jane+news@example.com"  # not jane


def test_an_ascii_address_keeps_the_lead_id_it_had() -> None:
    # Computed with the previous normalisation (strip, lower-case, NFC).
    assert lead_id_for("acme-q3", "Jane.Doe+news@Example.com ") == "ld_1af00c5b266a2683"


def test_a_leads_file_with_four_spellings_yields_two_leads(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name,company\n"
                     f"{JANE},Jane,\n{JANE_FULLWIDTH},,Acme\n"
                     f"{USER_IDN},Uli,\n{USER_PUNYCODE},,Umlaut GmbH\n", encoding="utf-8")
    result = read_leads_file(leads, "c1")
    assert result.rejected == []
    assert [(lead.email, lead.first_name, lead.company, lead.rows) for lead in result.leads] == [
        (JANE, "Jane", "Acme", [2, 3]), (USER_PUNYCODE, "Uli", "Umlaut GmbH", [4, 5])]
    assert result.leads[1].lead_id == lead_id_for("c1", USER_IDN) == lead_id_for("c1", USER_PUNYCODE)


async def test_suppressing_one_spelling_suppresses_the_others(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "campaign.db")
    await store.migrate()
    assert await store.add_suppressions([JANE_FULLWIDTH, USER_PUNYCODE], "manual",
                                        source="manual") == 2
    assert await store.add_suppressions([JANE, USER_IDN], "manual",
                                        source="manual") == 0  # already there
    for address in (JANE, JANE_FULLWIDTH, USER_IDN, USER_PUNYCODE):
        assert await store.is_suppressed(address), address
    assert not await store.is_suppressed("jane+news@example.com")


def test_campaign_suppress_of_the_fullwidth_spelling(home: Path) -> None:
    result = CliRunner().invoke(cli_app, ["suppress", JANE_FULLWIDTH])
    assert result.exit_code == 0, result.output
    assert asyncio.run(SqliteStore(home / "campaign.db").is_suppressed(JANE))


async def test_forget_by_the_unicode_spelling_erases_the_punycode_lead(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "campaign.db")
    await store.migrate()
    leads = tmp_path / "leads.csv"
    leads.write_text(f"email,first_name\n{USER_PUNYCODE},Uli\n{JANE},Jane\n", encoding="utf-8")
    await store.upsert_campaign(campaign_id="c1", name="c1", brief="Book a call.",
                                channel="outbox", kb_dir=None, workflow_id="campaign:c1")
    await store.upsert_leads("c1", read_leads_file(leads, "c1").leads)
    counts = await store.forget(USER_IDN)
    assert counts["leads"] == 1
    assert await store.list_lead_ids("c1", None, 10) == [lead_id_for("c1", JANE)]
    assert await store.is_suppressed(USER_PUNYCODE)

"""Tests for leads intake: row rejection, merging, identity and file-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_core.leads import (
    Lead,
    LeadsFileError,
    lead_id_for,
    normalise_email,
    parse_lead_rows,
    read_leads_file,
)

CAMPAIGN = "cmp_test"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _by_email(leads: list[Lead]) -> dict[str, Lead]:
    return {lead.email: lead for lead in leads}


def test_csv_bad_rows_rejected_with_row_numbers_and_reasons(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "leads.csv",
        "email,first_name,timezone\n"  # row 1
        "ann@example.com,Ann,Europe/London\n"  # row 2
        ",NoEmail,\n"  # row 3
        "foo@,Bad,\n"  # row 4
        "bob@example.com,Bob,Mars/Base\n"  # row 5
        "cat@example.com,Cat,\n",  # row 6
    )
    result = read_leads_file(path, CAMPAIGN)

    assert [lead.email for lead in result.leads] == ["ann@example.com", "cat@example.com"]
    assert [lead.rows for lead in result.leads] == [[2], [6]]
    assert result.leads[0].timezone == "Europe/London"

    rejected = {r.row: r.error for r in result.rejected}
    assert sorted(rejected) == [3, 4, 5]
    assert rejected[3] == "email: missing"
    assert rejected[4].startswith("email: 'foo@' is not a valid address (")
    assert rejected[5] == "timezone: unknown time zone 'Mars/Base'"


def test_duplicates_merged_first_non_empty_wins(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dupes.csv",
        "email,first_name,company,industry,region\n"
        "Ann@Example.com,Ann,,,EMEA\n"  # row 2: company and industry empty
        "other@example.com,Olga,Other Ltd,,\n"  # row 3
        "  ann@EXAMPLE.com ,Annie,Acme,Robotics,APAC\n",  # row 4: same person
    )
    result = read_leads_file(path, CAMPAIGN)

    assert [lead.email for lead in result.leads] == ["ann@example.com", "other@example.com"]
    ann = result.leads[0]
    assert ann.rows == [2, 4]
    assert ann.first_name == "Ann"  # first non-empty value wins
    assert ann.company == "Acme"  # filled from the later row
    assert ann.custom == {"industry": "Robotics", "region": "EMEA"}
    assert ann.lead_id == lead_id_for(CAMPAIGN, "ann@example.com")
    assert result.rejected == []


def test_lead_id_is_stable_and_campaign_scoped() -> None:
    first = lead_id_for("cmp_a", "ann@example.com")
    assert first == lead_id_for("cmp_a", "  ANN@example.com ")
    assert first != lead_id_for("cmp_b", "ann@example.com")
    assert first != lead_id_for("cmp_a", "bob@example.com")
    assert first.startswith("ld_")
    assert len(first) == len("ld_") + 16
    int(first[3:], 16)  # hex


def test_lead_id_same_across_imports(tmp_path: Path) -> None:
    csv_path = _write(tmp_path, "a.csv", "email\nann@example.com\n")
    jsonl_path = _write(tmp_path, "b.jsonl", '{"email": "ANN@example.com"}\n')
    from_csv = read_leads_file(csv_path, CAMPAIGN).leads[0]
    from_jsonl = read_leads_file(jsonl_path, CAMPAIGN).leads[0]
    assert from_csv.lead_id == from_jsonl.lead_id


def test_normalise_email() -> None:
    assert normalise_email("  Ann@Example.COM\t") == "ann@example.com"


def test_header_mapping_and_custom_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "people.csv",
        " Email ,First Name,LAST NAME,Company,Favourite Colour\n"
        "ann@example.com, Ann ,Smith,Acme,green\n",
    )
    (lead,) = read_leads_file(path, CAMPAIGN).leads
    assert lead.first_name == "Ann"
    assert lead.last_name == "Smith"
    assert lead.company == "Acme"
    assert lead.custom == {"favourite_colour": "green"}
    assert lead.title is None


def test_jsonl_non_object_line_rejected_good_line_accepted(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "leads.jsonl",
        '["not", "an", "object"]\n'  # line 1
        "\n"  # line 2: blank, skipped
        '{"email": "ann@example.com", "First Name": "Ann", "employees": 42}\n'  # line 3
        '{"email": "bob@example.com", "tags": {"a": 1}}\n'  # line 4: nested value
        "{broken\n",  # line 5
    )
    result = read_leads_file(path, CAMPAIGN)

    (lead,) = result.leads
    assert lead.email == "ann@example.com"
    assert lead.first_name == "Ann"
    assert lead.custom == {"employees": "42"}
    assert lead.rows == [3]

    rejected = {r.row: r.error for r in result.rejected}
    assert sorted(rejected) == [1, 4, 5]
    assert "not a JSON object" in rejected[1]
    assert rejected[4].startswith("tags:")
    assert "not valid JSON" in rejected[5]


def test_sniffs_jsonl_for_unknown_extension(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.txt", '\n{"email": "ann@example.com"}\n')
    assert [lead.email for lead in read_leads_file(path, CAMPAIGN).leads] == ["ann@example.com"]


def test_overlong_value_rejected_naming_field() -> None:
    result = parse_lead_rows(
        [
            (7, {"email": "ann@example.com", "notes": "x" * 2001}),
            (8, {"email": "bob@example.com", "notes": "x" * 2000}),
        ],
        CAMPAIGN,
    )
    assert [lead.email for lead in result.leads] == ["bob@example.com"]
    assert len(result.rejected) == 1
    assert result.rejected[0].row == 7
    assert result.rejected[0].error.startswith("notes:")


def test_no_valid_row_raises_with_file_name_and_reasons(tmp_path: Path) -> None:
    path = _write(tmp_path, "all_bad_leads.csv", "email,name\n,Ann\nnot-an-email,Bob\n")
    with pytest.raises(LeadsFileError) as info:
        read_leads_file(path, CAMPAIGN)
    message = str(info.value)
    assert "all_bad_leads.csv" in message
    assert "no valid row" in message
    assert "row 2: email: missing" in message
    assert "row 3: email:" in message


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(LeadsFileError, match=r"nowhere\.csv"):
        read_leads_file(path, CAMPAIGN)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.csv", "\n  \n")
    with pytest.raises(LeadsFileError, match=r"empty\.csv.*empty"):
        read_leads_file(path, CAMPAIGN)


def test_not_utf8_raises(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,first_name\nann@example.com,Zo\u00eb\n".encode("latin-1"))
    with pytest.raises(LeadsFileError, match=r"latin1\.csv.*UTF-8"):
        read_leads_file(path, CAMPAIGN)


def test_csv_without_email_column_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "no_email.csv", "name,company\nAnn,Acme\n")
    with pytest.raises(LeadsFileError, match=r"no_email\.csv.*'email' column"):
        read_leads_file(path, CAMPAIGN)


def test_bom_prefixed_csv(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfEmail,First Name\r\nann@example.com,Ann\r\n")
    (lead,) = read_leads_file(path, CAMPAIGN).leads
    assert lead.email == "ann@example.com"
    assert lead.first_name == "Ann"
    assert lead.custom == {}


def test_multiline_quoted_cell_keeps_following_row_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "multiline.csv",
        "email,notes\n"  # line 1
        'ann@example.com,"first line\nsecond line\nthird line"\n'  # lines 2-4
        "bad-email,after the multi-line cell\n"  # line 5
        "bob@example.com,ok\n",  # line 6
    )
    result = read_leads_file(path, CAMPAIGN)
    ann, bob = result.leads
    assert ann.notes == "first line\nsecond line\nthird line"
    assert ann.rows == [2]
    assert bob.rows == [6]
    assert [(r.row, r.error.split(":")[0]) for r in result.rejected] == [(5, "email")]


def test_parse_lead_rows_uses_caller_row_numbers() -> None:
    result = parse_lead_rows(
        [
            (10, {"email": "ann@example.com", "subscribed": True}),
            (20, {"email": "ANN@example.com", "title": "CTO"}),
            (30, {"first_name": "Nobody"}),
        ],
        CAMPAIGN,
    )
    (lead,) = result.leads
    assert lead.rows == [10, 20]
    assert lead.title == "CTO"
    assert lead.custom == {"subscribed": "True"}
    assert [(r.row, r.error) for r in result.rejected] == [(30, "email: missing")]

"""Leads intake: turn a user's CSV or JSON Lines file into validated, de-duplicated leads.

Intake decides identity (the normalised email address; ids derived from campaign and email)
and rejects bad rows one by one instead of failing the file.
See "Intake and identity" in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import idna
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, Field

__all__ = [
    "HEADER_FIELDS",
    "KNOWN_FIELDS",
    "MAX_VALUE_LENGTH",
    "SMTPUTF8_WARNING",
    "IntakeResult",
    "Lead",
    "LeadsFileError",
    "RejectedRow",
    "Utf8Address",
    "address_forms",
    "campaign_salt",
    "lead_id_for",
    "needs_smtputf8",
    "needs_smtputf8_leads",
    "normalise_email",
    "parse_lead_rows",
    "read_leads_file",
    "rekeyed",
]

KNOWN_FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "website",
    "timezone",
    "notes",
)
"""Columns that map onto `Lead` attributes; every other column goes to `Lead.custom`."""

MAX_VALUE_LENGTH = 2000
"""Longest accepted cell. Longer values are almost always a broken export (a whole
document pasted into a cell, a runaway quote) and would bloat every prompt built from
the lead, so the row is rejected instead of silently truncated."""

HEADER_FIELDS: tuple[str, ...] = ("first_name", "last_name", "company", "title")
"""Fields that can reach an email header (the `To` name, a subject): they may hold no
control character and no `=?`, which a mail library may decode as an encoded word into a
forged header line. Rendering neutralises both again; intake refuses them outright."""

_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
_CSV_SUFFIXES = frozenset({".csv"})
_REASONS_IN_MESSAGE = 5
_JSON_SCALARS = (str, int, float, bool)


class Lead(BaseModel):
    """One person to contact, after normalisation and merging of duplicate rows."""

    lead_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    title: str | None = None
    website: str | None = None
    timezone: str | None = None
    notes: str | None = None
    custom: dict[str, str] = Field(default_factory=dict)
    rows: list[int] = Field(default_factory=list)


class RejectedRow(BaseModel):
    """A source row that was left out, with a reason naming the offending field."""

    row: int
    error: str


class Utf8Address(BaseModel):
    """An accepted lead whose address needs SMTPUTF8 (`row`: its first source row)."""

    row: int
    email: str


SMTPUTF8_WARNING = "needs SMTPUTF8: delivered only if the SMTP server offers it"
"""What intake says of an address with a non-ASCII local part (see `needs_smtputf8`)."""


class IntakeResult(BaseModel):
    """The accepted leads (in order of first appearance) and the rows left out."""

    leads: list[Lead]
    rejected: list[RejectedRow]


class LeadsFileError(Exception):
    """The leads file as a whole is unusable; the message names the file and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"leads file {str(path)!r}: {reason}")


def normalise_email(raw: str) -> str:
    """Return the canonical form of an address, which is the lead's identity.

    Surrounding whitespace and letter case are artefacts of how the list was typed or
    exported, not different people, so they are removed. Unicode is put in NFKC form
    (a fullwidth `e` is `e`) and an internationalised domain is written
    in its IDNA ASCII form (`exämple.com` is `xn--exmple-cua.com`), so every spelling of
    one mailbox hashes to the same lead id. An address already in ASCII lower case is
    returned as it is (so its lead id is the one it always had); plus-addressing stays.
    """
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", raw).strip().lower())
    local, at, domain = text.rpartition("@")
    if not at or domain.isascii():
        return text
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:  # not a domain name: validation rejects it with the reason
        return text


def address_forms(raw: str) -> list[str]:
    """The normalised address, then the forms earlier versions stored it under (a lead's
    NFC Unicode domain, a suppression's trimmed lower case), for lookups of older rows."""
    canonical = normalise_email(raw)
    local, _, domain = canonical.rpartition("@")
    forms = [canonical]
    if "xn--" in domain:
        with contextlib.suppress(idna.IDNAError):
            forms.append(unicodedata.normalize("NFC", f"{local}@{idna.decode(domain)}"))
    forms += [unicodedata.normalize("NFC", raw.strip().lower()), raw.strip().lower()]
    return list(dict.fromkeys(forms))


def lead_id_for(campaign_id: str, email: str, salt: str | None = None) -> str:
    """Derive the lead id from the campaign, the (normalised) email address and its salt.

    The id is a pure function of its inputs so that re-running intake, or importing
    the same person twice, can never create a second lead (and so a second send);
    the campaign is part of it so one person in two campaigns has two separate leads.

    `salt` is the campaign's `lead_id_salt` (a keyed hash of a secret kept in the store):
    lead ids travel through Temporal history, and without a salt anyone holding a
    candidate address could confirm it from an id. Campaigns stored before salting
    existed have no salt and keep their plain sha256 ids.
    """
    message = f"{campaign_id}\n{normalise_email(email)}".encode()
    if salt is None:
        return f"ld_{hashlib.sha256(message).hexdigest()[:16]}"
    return f"ld_{hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()[:16]}"


def campaign_salt(secret: str, campaign_id: str) -> str:
    """A new campaign's lead-id salt: the store's secret keyed to the campaign id, so
    every process (and a retried start) derives the same salt for the same campaign."""
    return hmac.new(secret.encode(), f"lead-id-salt\n{campaign_id}".encode(),
                    hashlib.sha256).hexdigest()


def rekeyed(intake: IntakeResult, campaign_id: str, salt: str | None) -> IntakeResult:
    """The intake's leads with the ids of `campaign_id` under its salt (its lead-id scheme)."""
    leads = [lead.model_copy(update={"lead_id": lead_id_for(campaign_id, lead.email, salt)})
             for lead in intake.leads]
    return IntakeResult(leads=leads, rejected=list(intake.rejected))


def _normalise_key(raw: str) -> str:
    """Map a header such as " First  Name " to the field name "first_name"."""
    return "_".join(raw.strip().lower().split())


def _clean_row(
    values: Mapping[str, object],
) -> tuple[dict[str, str], list[str]]:
    """Normalise one row's keys and values; return the non-empty values and the errors.

    Every problem in the row is collected rather than stopping at the first, so that
    the user can fix a row in one go.
    """
    cleaned: dict[str, str] = {}
    errors: list[str] = []
    seen: set[str] = set()
    for raw_key, raw_value in values.items():
        key = _normalise_key(str(raw_key))
        if not key:
            # Spreadsheets export trailing unnamed columns; they carry nothing usable.
            continue
        if key in seen:
            errors.append(f"{key}: given more than once")
            continue
        seen.add(key)
        if raw_value is None:
            continue
        if isinstance(raw_value, Mapping | list | tuple):
            errors.append(f"{key}: nested {type(raw_value).__name__} values are not allowed")
            continue
        if not isinstance(raw_value, _JSON_SCALARS):
            errors.append(f"{key}: unsupported value of type {type(raw_value).__name__}")
            continue
        text = str(raw_value).strip()
        if not text:
            continue
        if len(text) > MAX_VALUE_LENGTH:
            errors.append(f"{key}: value is {len(text)} characters long (limit {MAX_VALUE_LENGTH})")
            continue
        cleaned[key] = text
    return cleaned, errors


def needs_smtputf8(email: str) -> bool:
    """Whether the address can travel over SMTP only with the SMTPUTF8 extension (RFC 6531).

    Intake writes the domain in its IDNA ASCII form, so only a non-ASCII local part
    (`josé.muñoz@...`) needs it: such an address is valid, but a server that does not
    offer SMTPUTF8 cannot take it, and there is no ASCII spelling of it to fall back to.
    """
    return not email.rpartition("@")[0].isascii()


def needs_smtputf8_leads(leads: Iterable[Lead]) -> list[Utf8Address]:
    """The accepted leads whose address needs SMTPUTF8, in order, each with its first row:
    what `start` and `add-leads` warn about, since these are delivered only by an SMTP
    server that offers the extension (the outbox and webhook channels take them as is)."""
    return [Utf8Address(row=lead.rows[0] if lead.rows else 0, email=lead.email)
            for lead in leads if needs_smtputf8(lead.email)]


def valid_email(raw: str) -> str:
    """The normalised address, or ValueError saying why it is not one (for CLI/API input)."""
    email = normalise_email(raw)
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{raw!r} is not a valid address ({exc})") from None
    return email


def _check_email(cleaned: Mapping[str, str], errors: list[str]) -> str | None:
    """Return the normalised email of a row, or None after recording why it is unusable."""
    raw = cleaned.get("email")
    if raw is None:
        if not any(e.startswith("email:") for e in errors):
            errors.append("email: missing")
        return None
    email = normalise_email(raw)
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        errors.append(f"email: {raw!r} is not a valid address ({exc})")
        return None
    return email


def _control_character(text: str) -> str | None:
    """The first control character (or Unicode line separator) in `text`, as U+XXXX."""
    for ch in text:
        if unicodedata.category(ch) in {"Cc", "Zl", "Zp"}:
            return f"U+{ord(ch):04X}"
    return None


def _check_header_safety(cleaned: Mapping[str, str], errors: list[str]) -> None:
    """Refuse what could forge an email header, and NUL anywhere (no store keeps it)."""
    for key, value in cleaned.items():
        if key in HEADER_FIELDS:
            bad = _control_character(value)
            if bad is not None:
                errors.append(f"{key}: contains the control character {bad}, not allowed in "
                              "a value that can reach an email header")
            elif "=?" in value:
                errors.append(f"{key}: contains '=?' (an encoded-word opener), not allowed in "
                              "a value that can reach an email header")
        elif key != "email" and "\x00" in value:
            errors.append(f"{key}: contains the control character U+0000 (NUL)")


def _check_timezone(cleaned: Mapping[str, str], errors: list[str]) -> None:
    """Record an error if the row names a time zone that send scheduling could not use."""
    tz = cleaned.get("timezone")
    if tz is None:
        return
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"timezone: unknown time zone {tz!r}")


class _Intake:
    """Accumulates accepted leads (merging duplicates) and rejected rows, in order."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        self.leads: dict[str, Lead] = {}
        self.rejected: list[RejectedRow] = []

    def reject(self, row: int, error: str) -> None:
        self.rejected.append(RejectedRow(row=row, error=error))

    def add(self, row: int, values: Mapping[str, object]) -> None:
        """Validate one row and either merge it into its lead or reject it."""
        cleaned, errors = _clean_row(values)
        email = _check_email(cleaned, errors)
        _check_timezone(cleaned, errors)
        _check_header_safety(cleaned, errors)
        if errors or email is None:
            self.reject(row, "; ".join(errors))
            return
        known = {k: v for k, v in cleaned.items() if k in KNOWN_FIELDS and k != "email"}
        custom = {k: v for k, v in cleaned.items() if k not in KNOWN_FIELDS}
        lead = self.leads.get(email)
        if lead is None:
            self.leads[email] = Lead(
                lead_id=lead_id_for(self.campaign_id, email),
                email=email,
                custom=custom,
                rows=[row],
                **known,
            )
            return
        # A duplicate: earlier rows win, later rows only fill what was left empty.
        updates: dict[str, object] = {k: v for k, v in known.items() if getattr(lead, k) is None}
        updates["custom"] = {**custom, **lead.custom}
        updates["rows"] = [*lead.rows, row]
        self.leads[email] = lead.model_copy(update=updates)

    def result(self) -> IntakeResult:
        return IntakeResult(leads=list(self.leads.values()), rejected=self.rejected)


def parse_lead_rows(
    rows: Iterable[tuple[int, Mapping[str, object]]], campaign_id: str
) -> IntakeResult:
    """Validate and merge already-parsed rows, each paired with the row number to report.

    This is the format-independent core, usable by callers that get rows from
    somewhere other than a file (an API request, a database export).
    """
    intake = _Intake(campaign_id)
    for row, values in rows:
        intake.add(row, values)
    return intake.result()


def _read_text(path: Path) -> str:
    """Read the file as UTF-8, tolerating the BOM that spreadsheet programs write."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise LeadsFileError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise LeadsFileError(path, "is a directory, not a file") from exc
    except OSError as exc:
        raise LeadsFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LeadsFileError(
            path,
            f"is not UTF-8 text (invalid byte at offset {exc.start}); "
            "save it as UTF-8 CSV or JSON Lines",
        ) from exc


def _is_json_lines(path: Path, text: str) -> bool:
    """Decide the format from the extension, sniffing the content for other names."""
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return True
    if suffix in _CSV_SUFFIXES:
        return False
    return text.lstrip()[:1] == "{"


def _feed_json_lines(path: Path, text: str, intake: _Intake) -> None:
    """Feed each non-blank line of a JSON Lines text to the intake, numbered from 1."""
    # Split on "\n" only: str.splitlines() would also split on U+2028 and similar,
    # which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            value: object = json.loads(stripped)
        except json.JSONDecodeError as exc:
            intake.reject(number, f"line is not valid JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            intake.reject(number, f"line is not a JSON object (got {_json_type(value)})")
            continue
        intake.add(number, value)


def _json_type(value: object) -> str:
    """Name a parsed JSON value's type the way the user wrote it, for messages."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (row number, cells) for each non-blank CSV record.

    The row number is the line on which the record starts, taken from the reader's
    line count, so a quoted cell spanning several lines does not shift the numbers
    reported for the rows after it.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LeadsFileError(path, f"is not valid CSV at line {start} ({exc})") from exc
        if any(cell.strip() for cell in cells):
            yield start, cells


def _feed_csv(path: Path, text: str, intake: _Intake) -> None:
    """Feed each CSV data row to the intake, keyed by the normalised header names."""
    records = _csv_records(path, text)
    header_record = next(records, None)
    if header_record is None:
        raise LeadsFileError(path, "is empty")
    _, header_cells = header_record
    header = [_normalise_key(cell) for cell in header_cells]
    if "email" not in header:
        shown = ", ".join(repr(cell) for cell in header_cells)
        raise LeadsFileError(path, f"has no 'email' column (header row: {shown})")
    duplicates = sorted({name for name in header if name and header.count(name) > 1})
    if duplicates:
        raise LeadsFileError(path, f"has duplicate columns: {', '.join(duplicates)}")
    width = len(header)
    for row, cells in records:
        extra = [cell for cell in cells[width:] if cell.strip()]
        if extra:
            # More cells than headers means the row is misaligned (usually an unquoted
            # comma); accepting it would put values under the wrong fields.
            intake.reject(row, f"row has {len(cells)} cells but the header has {width}")
            continue
        values = {name: cell for name, cell in zip(header, cells, strict=False) if name}
        intake.add(row, values)


def read_leads_file(path: Path, campaign_id: str) -> IntakeResult:
    """Read a CSV or JSON Lines leads file into validated, merged leads.

    Bad rows are returned in `rejected`; a file that cannot be read, or that has no
    valid row at all, raises `LeadsFileError` with the file name and the reasons.
    """
    text = _read_text(path)
    if not text.strip():
        raise LeadsFileError(path, "is empty")
    intake = _Intake(campaign_id)
    if _is_json_lines(path, text):
        _feed_json_lines(path, text, intake)
    else:
        _feed_csv(path, text, intake)
    result = intake.result()
    if not result.leads:
        if not result.rejected:
            raise LeadsFileError(path, "has a header but no data rows")
        reasons = "; ".join(
            f"row {r.row}: {r.error}" for r in result.rejected[:_REASONS_IN_MESSAGE]
        )
        more = len(result.rejected) - _REASONS_IN_MESSAGE
        if more > 0:
            reasons += f"; and {more} more"
        raise LeadsFileError(path, f"has no valid row ({reasons})")
    return result

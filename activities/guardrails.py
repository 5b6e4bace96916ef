"""Checks every draft must pass before it can reach a person's review queue.

Code, not prompt text, so a model cannot ignore them; each returns human-readable reasons
that go back to the model for repair and to the user. See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from campaign_core.leads import Lead

SUBJECT_MAX_CHARS = 120
BODY_MIN_WORDS = 15
BODY_MAX_WORDS = 300
BODY_MAX_CHARS = 4000
#: Share of a citation's claim words that must appear in the body.
CLAIM_OVERLAP = 0.5


class Citation(BaseModel):
    """One claim of the body and the retrieved passage that supports it."""

    model_config = ConfigDict(extra="forbid")

    passage_id: str = Field(description="The id of one of the passages given in the prompt.")
    claim: str = Field(description="The sentence or phrase of the body that this passage supports.")


class DraftOutput(BaseModel):
    """The copywriter's structured output: what the model must return, field by field."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(description="Email subject line, plain text, one line.")
    body: str = Field(description="Email body, plain text, greeting to sign-off.")
    personal_points: list[str] = Field(
        description="The facts about this lead that the message uses to personalise it.")
    citations: list[Citation] = Field(
        description="Every factual claim of the body with the passage id that supports it.")


#: Unfilled template slots a model (or a template) can leave behind.
PLACEHOLDERS = [
    re.compile(r"\{\{[^{}]*\}\}"),                                # {{ first_name }}
    re.compile(r"\{\s*[A-Za-z_][\w .-]{0,40}\}"),                  # {first_name}, {Company}
    re.compile(r"\$\{[^}]*\}"),                                    # ${name}
    re.compile(r"%\([a-z_]+\)s"),                                  # %(name)s
    re.compile(r"\[(?:[A-Z][A-Za-z]*|[A-Z]{2,})(?:[ _-][A-Za-z]+){0,3}\]"),  # [Company], [First Name]
    re.compile(r"<(?:[a-z]+_[a-z_]+|first ?name|last ?name|company|name|title)>", re.I),
    re.compile(r"\b(?:INSERT|TODO|TBD|XXX)\b"),
    re.compile(r"\blorem ipsum\b", re.I),
]
#: An inline citation marker in a body: `[kb/file.md#3-1a2b3c4d]`.
INLINE_CITATION = re.compile(r"\[([^\[\]\s]+#[^\[\]\s]+)\]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z0-9']+")
#: Words that carry no content: left out when comparing a draft's words with its sources.
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
    "it", "its", "of", "on", "or", "our", "that", "the", "this", "to", "we", "with", "you", "your",
})
_WORD_LIMIT = re.compile(
    r"\b(?:under|below|fewer than|less than|at most|no more than|max(?:imum)?(?: of)?|up to|"
    r"within)\s+(\d{1,4})\s+words\b", re.I)
_CITATION_DEMAND = re.compile(
    r"\bcit(?:e|es|ed|ing|ation|ations)\b|\bsource(?:d|s)?\s+(?:every|each|all)\b", re.I)


#: Regions whose national formats are read as phone numbers (international `+` ones always).
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU")
#: The fewest digits a valid number holds: a 4-digit German national number (the shortest
#: national length of PHONE_REGIONS; any `+` number has at least 6). A test derives it again
#: from the installed phonenumbers metadata.
MIN_PHONE_DIGITS = 4
#: Letters: no phone number candidate spans one (the matcher reads no vanity numbers).
_LETTERS = re.compile(r"[^\W\d_]+")
_DIGIT = re.compile(r"\d")
_URL = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"'()\[\]{}]+|\bwww\.[^\s<>\"'()\[\]{}]+")
_EMAIL = re.compile(r"(?i)(?<![\w.+-])[\w.+-]+@(?:[a-z0-9-]+\.)+[a-z]{2,63}(?![\w-])")
_DOMAIN = re.compile(r"(?i)(?<![\w@./-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}))"
                     r"(?![\w-])(/[^\s<>\"'()\[\]{}]*)?")
_TRAILING = ".,;:!?'\""
#: Top-level domains that make a bare `name.tld` (no path) a web address; any two-letter
#: one (a country) counts too, except the usual file extensions.
_TLDS = frozenset({
    "com", "net", "org", "io", "co", "ai", "app", "dev", "biz", "info", "xyz", "online",
    "site", "tech", "cloud", "email", "link", "page", "shop", "store", "live", "pro", "gov",
    "edu", "mil", "int", "example", "test", "invalid", "local", "localhost", "internal",
})
_NOT_TLDS = frozenset({"md", "py", "js", "sh", "rb", "cs", "ts", "go"})


@dataclass(frozen=True)
class Contacts:
    """The links (by host), email addresses and phone numbers (E.164) found in a text."""

    hosts: dict[str, str]  # host -> the text as written
    bare_hosts: set[str]  # hosts written as a bare name with no path (`acme.com`)
    emails: dict[str, str]
    phones: dict[str, set[str]]  # the number as written -> its E.164 readings

    @property
    def phone_readings(self) -> set[str]:
        return {e164 for readings in self.phones.values() for e164 in readings}


def _host(value: str) -> str:
    host = urlsplit(value if "://" in value else f"http://{value}").hostname or ""
    return host.lower().removeprefix("www.").rstrip(".")


def may_hold_phone(text: str) -> bool:
    """False when no stretch of `text` between letters has MIN_PHONE_DIGITS digits, so no
    phone number can be in it ("a 20-minute call" has none)."""
    return any(len(_DIGIT.findall(piece)) >= MIN_PHONE_DIGITS for piece in _LETTERS.split(text))


def _phones(text: str) -> dict[str, set[str]]:
    """Each valid phone number as written, with its readings in every region tried."""
    found: dict[str, set[str]] = {}
    if not may_hold_phone(text):  # the matcher is costly even when it finds nothing
        return found
    import phonenumbers  # here, not at the top: workflows and the CLI import this module

    for region in PHONE_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region,
                                                      leniency=phonenumbers.Leniency.VALID):
            e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            found.setdefault(match.raw_string, set()).add(e164)
    return found


def contacts(text: str) -> Contacts:
    """Every link, bare domain, email address and phone number in `text`."""
    text = INLINE_CITATION.sub(" ", text)
    hosts: dict[str, str] = {}
    bare: set[str] = set()
    for m in _URL.finditer(text):
        written = m.group(0).rstrip(_TRAILING)
        if _host(written):
            hosts.setdefault(_host(written), written)
    text = _URL.sub(" ", text)
    emails = {m.group(0).lower(): m.group(0) for m in _EMAIL.finditer(text)}
    text = _EMAIL.sub(" ", text)
    for m in _DOMAIN.finditer(text):
        name, tld, path = m.group(1), m.group(2), m.group(3)
        if not path:
            if tld.isupper() and len(tld) > 2:  # ASP.NET, VB.NET
                continue
            if tld.lower() not in _TLDS and (len(tld) != 2 or tld.lower() in _NOT_TLDS):
                continue
            bare.add(_host(name))
        written = (name + (path or "")).rstrip(_TRAILING)
        hosts.setdefault(_host(name), written)
    return Contacts(hosts, bare, emails, _phones(text))


def unsupported_contacts(text: str, *, sources: Iterable[str], lead: Lead) -> list[str]:
    """Reasons for each link, address or number in `text` that no source gives.

    A link is fine when its host is the lead's website's, or one named in a source; a
    bare domain (no path) may also name the lead's own organisation (its company or
    email domain). Email addresses and phone numbers must appear in a source.
    """
    found = contacts(text)
    given = contacts("\n".join(sources))
    allowed_hosts = set(given.hosts) | {e.rpartition("@")[2] for e in given.emails}
    if lead.website:
        allowed_hosts.add(_host(lead.website.strip()))
    own = {lead.email.rpartition("@")[2].lower()}
    if lead.company:
        own.add(lead.company.strip().lower().removeprefix("www."))
    reasons: list[str] = []
    for host, written in found.hosts.items():
        if host in allowed_hosts or (host in found.bare_hosts and host in own):
            continue
        reasons.append(f"the draft has a link or web address ({written}) that is in neither the "
                       "brief, the passages nor the lead's website: remove it")
    for email, written in found.emails.items():
        if email not in given.emails:
            reasons.append(f"the draft has an email address ({written}) that is in neither the "
                           "brief nor the passages: remove it")
    for written, readings in found.phones.items():
        if not readings & given.phone_readings:
            reasons.append(f"the draft has a phone number ({written}) that is in neither the "
                           "brief nor the passages: remove it")
    return list(dict.fromkeys(reasons))


@dataclass(frozen=True)
class BriefRules:
    """What the brief asks for that code can check."""

    max_words: int = BODY_MAX_WORDS
    citations_required: bool = False

    @classmethod
    def from_brief(cls, brief: str) -> BriefRules:
        limits = [int(n) for n in _WORD_LIMIT.findall(brief)]
        return cls(
            max_words=min([*limits, BODY_MAX_WORDS]) if limits else BODY_MAX_WORDS,
            citations_required=bool(_CITATION_DEMAND.search(brief)),
        )


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1]


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def placeholders(text: str) -> list[str]:
    """Every unfilled placeholder in `text`, in order of appearance."""
    text = INLINE_CITATION.sub(" ", text)
    spans = sorted(((m.start(), m.end()) for p in PLACEHOLDERS for m in p.finditer(text)),
                   key=lambda se: (se[0], -se[1]))
    kept: list[tuple[int, int]] = []
    for start, end in spans:  # `{x}` inside `${x}` or `{{ x }}` is the same placeholder
        if not any(s <= start and end <= e for s, e in kept):
            kept.append((start, end))
    return [text[s:e] for s, e in kept]


def word_count(text: str) -> int:
    return len(_WORD.findall(INLINE_CITATION.sub(" ", text)))


def _lead_text(lead: Lead) -> str:
    fields = (lead.first_name, lead.last_name, lead.company, lead.title, lead.website, lead.notes)
    return " ".join([*(f for f in fields if f), *lead.custom.values()])


def size_and_placeholders(subject: str, body: str, rules: BriefRules) -> list[str]:
    """The body's length limits and unfilled placeholders anywhere: for written drafts
    and reviewers' edits alike."""
    reasons = []
    words = word_count(body)
    if words < BODY_MIN_WORDS:
        reasons.append(f"the body has {words} words; at least {BODY_MIN_WORDS}")
    elif words > rules.max_words:
        reasons.append(f"the body has {words} words; the limit is {rules.max_words}")
    if len(body) > BODY_MAX_CHARS:
        reasons.append(f"the body has {len(body)} characters; at most {BODY_MAX_CHARS}")
    for where, text in (("subject", subject), ("body", body)):
        found = placeholders(text)
        if found:
            reasons.append(f"the {where} has unfilled placeholders: {', '.join(dict.fromkeys(found))}")
    return reasons


def check_draft(
    draft: DraftOutput,
    *,
    passages: list[dict[str, object]],
    lead: Lead,
    brief: str,
    grounding: Iterable[str] = (),
) -> list[str]:
    """Every reason `draft` may not be shown to a reviewer; empty when it passes.

    `grounding` is extra text whose numbers a draft may repeat without a citation
    (e.g. the offline template's own fixed sentences).
    """
    rules = BriefRules.from_brief(brief)
    reasons: list[str] = []
    subject, body = draft.subject.strip(), draft.body.strip()
    if not subject:
        reasons.append("the subject is empty")
    elif len(subject) > SUBJECT_MAX_CHARS:
        reasons.append(f"the subject has {len(subject)} characters; at most {SUBJECT_MAX_CHARS}")
    if "\n" in subject:
        reasons.append("the subject must be one line")
    reasons += size_and_placeholders(subject, body, rules)

    by_id = {str(p["passage_id"]): p for p in passages}
    cited = [c.passage_id for c in draft.citations] + INLINE_CITATION.findall(body)
    unknown = [pid for pid in dict.fromkeys(cited) if pid not in by_id]
    for pid in unknown:
        reasons.append(f"citation {pid!r} is not one of the retrieved passages "
                       f"({', '.join(by_id) or 'none were retrieved'})")
    body_words = set(_content_words(body))
    for c in draft.citations:
        claim = _content_words(c.claim)
        if not claim:
            reasons.append(f"the citation of {c.passage_id!r} does not say which claim it supports")
        elif sum(w in body_words for w in claim) / len(claim) < CLAIM_OVERLAP:
            reasons.append(f"the claim cited to {c.passage_id!r} ({c.claim[:80]!r}) is not in the body")

    passage_texts = [str(p.get("text", "")) for p in passages]
    reasons += unsupported_contacts(f"{subject}\n{body}", sources=[brief, *passage_texts, *grounding],
                                    lead=lead)

    if rules.citations_required:
        if by_id and not draft.citations:
            reasons.append("the brief requires every claim to cite a passage, and there are no citations")
        cited_text = " ".join(str(by_id[pid].get("text", "")) for pid in cited if pid in by_id)
        allowed = _numbers(" ".join([cited_text, brief, _lead_text(lead), *grounding]))
        loose = sorted(_numbers(INLINE_CITATION.sub(" ", body)) - allowed, key=lambda n: (len(n), n))
        if loose:
            reasons.append("the body states figures no cited passage supports: " + ", ".join(loose)
                           + " (cite the passage they come from or leave them out)")
    return reasons



#: Unicode categories a header must not hold (controls, line and paragraph separators).
_HEADER_UNSAFE = frozenset({"Cc", "Zl", "Zp"})
#: Controls a body may hold: line ends and tabs.
_BODY_CONTROLS = frozenset("\n\r\t")


def _unsafe_chars(text: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    return list(dict.fromkeys(f"U+{ord(ch):04X}" for ch in text
                              if ch not in allowed and unicodedata.category(ch) in _HEADER_UNSAFE))


def check_edit(
    subject: str, body: str, *, passages: list[dict[str, object]], lead: Lead, brief: str,
    grounding: Iterable[str] = (),
) -> list[str]:
    """Every reason a reviewer's edit may not become the draft; empty when it passes.

    The checks of a written draft that apply to text a person wrote: length, unfilled
    placeholders, characters unsafe in a mail header, citation markers to no retrieved
    passage, and links, addresses or phone numbers that no source gives. (Claims need
    no citation: the reviewer vouches for them.)
    """
    rules = BriefRules.from_brief(brief)
    reasons: list[str] = []
    subject, body = subject.strip(), body.strip()
    if not subject:
        reasons.append("the subject is empty")
    elif len(subject) > SUBJECT_MAX_CHARS:
        reasons.append(f"the subject has {len(subject)} characters; at most {SUBJECT_MAX_CHARS}")
    unsafe = _unsafe_chars(subject)
    if unsafe:
        reasons.append("the subject must be one line, without control characters "
                       f"(found {', '.join(unsafe)})")
    if "=?" in subject:
        reasons.append("the subject has '=?', which mail programs read as an encoded word")
    unsafe = _unsafe_chars(body, _BODY_CONTROLS)
    if unsafe:
        reasons.append(f"the body has control characters: {', '.join(unsafe)}")
    reasons += size_and_placeholders(subject, body, rules)
    known = {str(p["passage_id"]) for p in passages}
    for pid in dict.fromkeys(INLINE_CITATION.findall(body)):
        if pid not in known:
            reasons.append(f"citation {pid!r} is not one of the retrieved passages")
    passage_texts = [str(p.get("text", "")) for p in passages]
    reasons += unsupported_contacts(f"{subject}\n{body}", sources=[brief, *passage_texts, *grounding],
                                    lead=lead)
    return reasons

"""The offline writer: the drafts of every step when no LLM is configured.

It is the first writer a newcomer meets, so its drafts must read as a message a person
would send (plain sentences, a named signature), and they must pass the same guardrails
as a model's on every step of a sequence, for any lead and any brief: the copywriter
keeps a failed offline draft as failed (a repair would write the same text), so a
disagreement here fails the lead. See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from activities.guardrails import (
    INLINE_CITATION,
    STOP_WORDS,
    SUBJECT_MAX_CHARS,
    BriefRules,
    Citation,
    DraftOutput,
    contacts,
    placeholders,
    unsupported_contacts,
    word_count,
)
from campaign_core.leads import Lead
from campaign_core.settings import Settings
from campaign_core.store.rows import DraftRow

#: Part of the copywriter's cache key: bump it whenever the text this module writes changes.
TEMPLATE_VERSION = "offline-v2"
#: The writer's fixed sentences. The copywriter passes them to the guardrails as grounding,
#: so the figures in them ("20-minute") need no citation.
OFFLINE_ASK = "Would a 20-minute call next week be useful to see whether this fits?"
OFFLINE_FOLLOW_UP_ASK = "If the timing is wrong, a one-line reply saying so is just as welcome."
OFFLINE_LAST_NOTE = ("This is my last note on this for now, so I will not keep filling your "
                     "inbox. If it becomes a priority later, a short reply is all it takes "
                     "and I will pick it up from there.")
SIGN_OFF = "Best regards,"


def signature_name(mail_from: str) -> str:
    """The name a draft is signed with: the display name of the sender's address
    (`CAMPAIGN_FROM`), else its local part written as words ("maya.lind" -> "Maya Lind").

    A message a person would send ends with who sent it; the address's display name is
    what the recipient's mail program shows beside it, so the two agree.
    """
    name, address = parseaddr(mail_from)
    name = " ".join(name.split())
    if name:
        return name
    local = address.rpartition("@")[0] or address
    words = [w for w in re.split(r"[._+\-]+", local) if w]
    return " ".join(w.capitalize() if w.islower() else w for w in words)


#: Who an unconfigured deployment signs as (`CAMPAIGN_FROM`'s default).
DEFAULT_SIGNATURE = signature_name(str(Settings.model_fields["mail_from"].default))

# -- lead fields -------------------------------------------------------------------------

_MARKDOWN_MARKS = re.compile(r"\*\*|__|`")
_LEADING_MARKS = re.compile(r"^(?:[-*+#>•]+\s*)+")
#: A standalone number, as the guardrails' figure check reads one.
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")


def _plain(value: str | None) -> str:
    """A lead field on one line, without the markdown marks a spreadsheet cell may carry."""
    text = _MARKDOWN_MARKS.sub("", " ".join((value or "").split()))
    return _LEADING_MARKS.sub("", text).strip()


def _safe(text: str, lead: Lead, *, figures: bool = True) -> bool:
    """Whether the writer may put `text` (a lead's field, the sender's name) into a draft.

    The guardrails read the whole draft, and they take no lead field as a source of phone
    numbers, addresses or placeholders: "Co 1640" holds a valid German phone number and
    "{Company}" an unfilled slot. Such a field is left out (the sentence says "yours"),
    because the writer cannot repair it and a draft that fails is no draft. `figures`
    False also refuses standalone numbers (the sender's name is not a lead field, so a
    brief that requires citations would count its numbers as unsupported figures).
    """
    if not text:
        return False
    probe = f" {text} "
    return not (placeholders(probe) or INLINE_CITATION.search(probe)
                or unsupported_contacts(probe, sources=[], lead=lead)
                or (not figures and _NUMBER.search(probe)))


@dataclass(frozen=True)
class _Who:
    """The lead fields a draft uses, each one only when it is safe to write."""

    first_name: str
    company: str
    title: str

    @classmethod
    def of(cls, lead: Lead) -> _Who:
        def field(value: str | None, longest: int) -> str:
            text = _plain(value)
            return text if len(text) <= longest and _safe(text, lead) else ""

        return cls(field(lead.first_name, 60), field(lead.company, 90), field(lead.title, 90))

    @property
    def greeting(self) -> str:
        return f"Hi {self.first_name}," if self.first_name else "Hello,"

    @property
    def points(self) -> list[str]:
        return [p for p in (self.first_name, self.company, self.title) if p]


def _signature(sender: str, lead: Lead) -> list[str]:
    name = _plain(sender)
    return [SIGN_OFF, name] if _safe(name, lead, figures=False) else [SIGN_OFF.rstrip(",")]


# -- facts from passages -----------------------------------------------------------------

_HEADING = re.compile(r"^\s{0,3}#{1,6}(?:\s|$)")
_RULE = re.compile(r"^\s*(?:[-=*_]\s*){3,}$")
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\((?:[^()\n]|\([^()\n]*\))*\)")
_REF_LINK = re.compile(r"\[([^\]\n]+)\]\[[^\]\n]*\]")
_AUTOLINK = re.compile(r"<(?:https?|mailto):[^>\s]+>")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<!\w)([*_])(?=\S)(.+?)(?<=\S)\1(?!\w)")
_CODE = re.compile(r"`+([^`]*)`+")
#: A sentence ends at . ! or ? (and a closing quote), before a capital, digit or quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)]?\s+(?=[\"\u201c(]?[A-Z0-9])")
#: "Label: rest" at a sentence's start (`GDPR: Relay acts as ...`): a list item's label.
_LABEL = re.compile(r"^([^.:;!?]{1,40}):\s+(\S.*)$")
_QUOTES = re.compile(r"[\"\u201c\u201d]")
_QUOTED = re.compile(r"\"[^\"]*\"|\u201c[^\u201d]*\u201d")
_ATTRIBUTION = re.compile(r"\b(?:said|says|explained|explains|added|adds|noted|notes|told|"
                          r"according to)\b", re.I)
#: Words that leave the speaker of a quotation unnamed ("the company's VP Operations").
_UNNAMED = frozenset({"the", "a", "an", "one", "our", "their", "its", "his", "her", "this",
                      "that", "another", "each", "every", "some", "we", "they", "he", "she"})
#: A sentence opening with these leans on the one before it, which the draft does not quote.
_DANGLING = frozenset({"it", "this", "that", "these", "those", "they", "their", "its", "he",
                       "she", "his", "her", "here", "such", "also", "both", "then", "so",
                       "but", "and", "or", "not", "yes", "no", "from"})


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: Finite verbs common in product and case-study text. A list item or the answer after an
#: FAQ question is used only when it holds one: "Revenue operations managers, VP Sales, ..."
#: answers "Who is Relay for?" and says nothing on its own.
_VERBS = _word_set("""
is are was were has have had does do did can cannot will would could should may might must
gets got makes made takes took gives gave runs ran keeps kept lets sends sent helps fell rose
grew spent won became brought built chose found held led lost paid saw went wrote fits syncs
waits resumes retries integrates connects includes supports notifies provides allows requires
reduces approves receives encrypts carries covers acts""")
#: -s forms that are as often plural nouns ("lead lists", "approval logs"): verbs only
#: after a name ("Relay logs every message").
_NOUN_OR_VERB = _word_set("""
lists drafts logs hosts checks tracks stores costs cuts works signs moves offers saves needs
uses starts stops finishes launches means reaches stays goes comes holds handles runs""")
#: Base forms that are verbs after a plural subject ("Customers run ...", "Workflows resume").
_PLURAL_VERBS = _word_set("""
run resume use need get take make keep pay save see spend choose connect integrate offer
include retry send approve sign reach stay finish receive become grow move go come launch
carry""")
_PLURAL_SUBJECTS = frozenset({"we", "you", "they", "people"})
#: Before a past participle these make it an adjective ("a recorded approval").
_DETERMINERS = frozenset({"a", "an", "the", "every", "each", "no", "any", "its", "their", "our",
                          "your", "his", "her", "this", "that", "these", "those", "and", "or"})
#: What follows a past tense that has an object or a measure ("passed a", "cut it",
#: "reclaimed roughly"); before anything else it is more likely a participle
#: ("certified information security", "tasks created for reps").
_OBJECT_STARTS = _DETERMINERS | frozenset({"us", "them", "it", "him", "me", "you", "up", "out",
                                           "down", "back", "more", "less", "about", "over"})
_WORDS = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*")
_TOKENS = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\u2019%-]*")
_CONTENT = re.compile(r"[a-z0-9']+")
#: A sentence about the source rather than the product ("The customer asked to remain
#: anonymous"): it reads oddly in a message, and it points at a quotation left out.
_ABOUT_SOURCE = re.compile(r"\banonym", re.I)
MIN_FACT_WORDS = 6
MAX_FACT_WORDS = 45


@dataclass(frozen=True)
class Fact:
    """One plain sentence of a passage, fit to stand alone in a message, and its source."""

    passage_id: str
    sentence: str  # the claim its citation names
    rank: int  # the passage's place in the retrieval
    score: float  # how well it fits the lead (higher first)
    intro: str = ""  # a fallback's own lead-in (see `fallback_facts`)

    def line(self) -> str:
        """The sentence with its inline citation marker, for the reviewer to trace it.

        No marker when the id is not one the guardrails read as a marker (a path with
        spaces): the citation itself still travels with the draft.
        """
        marker = f"[{self.passage_id}]"
        text = f"{self.intro}{self.sentence}"
        return f"{text} {marker}" if INLINE_CITATION.fullmatch(marker) else text

    def citation(self) -> Citation:
        return Citation(passage_id=self.passage_id, claim=self.sentence)


def _inline_plain(text: str) -> str:
    """A line's text without markdown: links keep their words, images and tags go."""
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _AUTOLINK.sub("", text)
    text = _TAG.sub("", text)
    text = _CODE.sub(r"\1", text)
    text = _STRONG.sub(r"\2", text)
    return _EMPHASIS.sub(r"\2", text)


def _blocks(text: str) -> list[tuple[str, bool]]:
    """The passage as plain blocks of prose, each with whether it is a list item.

    Headings, rules, tables and code are dropped: they are not sentences.
    """
    blocks: list[tuple[list[str], bool]] = []
    current: list[str] | None = None
    fenced = False
    for raw in text.splitlines():
        if _FENCE.match(raw):
            fenced, current = not fenced, None
            continue
        if fenced or _HEADING.match(raw) or _RULE.match(raw) or raw.lstrip().startswith("|"):
            current = None
            continue
        line = raw.strip().lstrip(">").strip()
        if not line:
            current = None
            continue
        item = _BULLET.match(line)
        if item or current is None:
            current = []
            blocks.append((current, bool(item)))
            line = line[item.end():] if item else line
        current.append(line)
    return [(" ".join(_inline_plain(line) for line in lines).strip(), item)
            for lines, item in blocks if lines]


def _has_verb(sentence: str) -> bool:
    """A rough test that a sentence says something (has a finite verb), for list items and
    FAQ answers, which are often labels or fragments. No tagger ships with the engine, so
    this reads word lists, a past tense before an object, and base forms after a plural
    subject; it refuses some real sentences, which costs only a choice of fact."""
    tokens = _TOKENS.findall(sentence)
    words = [t.lower() for t in tokens]
    relative = next((i for i, w in enumerate(words) if w in {"that", "which", "where", "who"}),
                    len(words))
    lowered = sentence.lower()
    for i, w in enumerate(words):
        before = words[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        plural = before in _PLURAL_SUBJECTS or (before.endswith("s") and not before.endswith("ss"))
        verb = (w in _VERBS
                or (w in _NOUN_OR_VERB and i > 0 and tokens[i - 1][:1].isupper())
                or (w in _PLURAL_VERBS and plural)
                or (len(w) > 4 and w.endswith("ed") and "-" not in w and before not in _DETERMINERS
                    and f", {w}" not in lowered
                    and (after.lower() in _OBJECT_STARTS or after.endswith("ly")
                         or after[:1].isdigit() or after[:1].isupper())))
        if verb:
            return i < relative  # "A workflow that opens ..." is a noun phrase
    return False


def _quote_named(sentence: str) -> bool:
    """Whether a sentence holding a quotation names who said it, as the source does.

    `"...," said the company's VP Operations` quotes nobody a reader can check, and sent
    to a VP Operations it reads as if they said it; such a quotation is not used.
    """
    if not _QUOTES.search(sentence):
        return True
    rest = _QUOTED.sub(" ", sentence)
    if _QUOTES.search(rest):  # a quotation that runs on into another sentence
        return False
    said = _ATTRIBUTION.search(rest)
    if said is None:
        return False
    who = rest[said.end():].strip(" ,.;:") or rest[:said.start()].strip(" ,.;:")
    first = who.split()[0] if who.split() else ""
    return bool(first) and first[0].isupper() and first.lower() not in _UNNAMED


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _usable(sentence: str, *, strict: bool, source_numbers: set[str],
            relaxed: bool = False) -> str | None:
    """The sentence as the draft may say it, or None: a statement that stands alone, with
    no question, exclamation, placeholder, contact detail or unnamed quotation, and no
    figure its passage does not hold. `strict` asks for a verb (list items, FAQ answers);
    `relaxed` takes a fragment too (a list item as written), for `fallback_facts`."""
    sentence = sentence.strip()
    label = _LABEL.match(sentence)
    if label and len(label.group(1).split()) <= 4 and not relaxed:
        rest = label.group(2)
        sentence, strict = rest[0].upper() + rest[1:], True
    if relaxed and sentence[-1:].isalnum():
        sentence += "."
    words = sentence.split()
    fewest = 4 if relaxed else MIN_FACT_WORDS
    if not (fewest <= len(words) <= MAX_FACT_WORDS) or not sentence.endswith("."):
        return None
    opener = _WORDS.match(sentence.lstrip("\"\u201c("))
    if not (sentence.lstrip("\"\u201c(")[:1].isupper() or sentence[:1].isdigit()):
        return None
    if opener and opener.group(0).lower() in _DANGLING and not relaxed:
        return None
    if _clashes(sentence, source_numbers) or (strict and not relaxed and not _has_verb(sentence)):
        return None
    return sentence


def _clashes(text: str, source_numbers: set[str]) -> bool:
    """Whether `text` holds what no draft may say: a question, an exclamation, markdown
    or brackets, an unfilled placeholder, a contact detail, an unnamed quotation, a line
    about the source's anonymity, or a figure its passage does not hold."""
    if any(c in text for c in "?![]*`") or text.count("(") != text.count(")"):
        return True
    if placeholders(text) or not _quote_named(text) or _ABOUT_SOURCE.search(text):
        return True
    found = contacts(text)
    return bool(found.hosts or found.emails or found.phones
                or not _numbers(text) <= source_numbers)


def _content_words(text: str) -> set[str]:
    return {w for w in _CONTENT.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1}


def passage_facts(passage: dict[str, Any], rank: int = 0,
                  interests: Iterable[str] = ()) -> list[Fact]:
    """The sentences of a passage a message may state, best first.

    Best: prose before list items, then the most words shared with the lead's own fields
    (`interests`), then a figure (a concrete proof point), then the earliest.
    """
    text = str(passage.get("text", ""))
    source_numbers = _numbers(text)
    wanted = _content_words(" ".join(interests))
    found: list[tuple[float, int, str]] = []
    position = 0
    for block, item in _blocks(text):
        after_question = False
        for piece in _SENTENCE_END.split(block):
            position += 1
            sentence = _usable(piece, strict=item or after_question,
                               source_numbers=source_numbers)
            after_question = piece.rstrip("\"'\u201d\u2019) ").endswith("?")
            if sentence is None:
                continue
            score = (0.0 if item else 3.0) + len(_content_words(sentence) & wanted)
            score += 0.5 if _NUMBER.search(sentence) else 0.0
            found.append((score, position, sentence))
    found.sort(key=lambda f: (-f[0], f[1]))
    pid = str(passage["passage_id"])
    return [Fact(pid, s, rank, score) for score, _, s in found]


def _topic(passage: dict[str, Any], source_numbers: set[str]) -> str:
    """What the passage is about, from its title (or first line); empty when that cannot
    be written in a sentence (a question, a link, more than a short heading)."""
    text = str(passage.get("title") or "") or next(
        (line for line in str(passage.get("text", "")).splitlines() if line.strip()), "")
    topic = " ".join(_inline_plain(text.strip().lstrip("#").strip()).split()).rstrip(":.;")
    head, colon, rest = topic.partition(": ")
    if colon and rest and "(" not in rest:  # "Starter: $49 per seat" -> "Starter ($49 per seat)"
        topic = f"{head} ({rest})"
    if not topic or len(topic.split()) > 10 or ":" in topic or _clashes(topic, source_numbers):
        return ""
    return topic


def fallback_facts(passage: dict[str, Any], rank: int = 0) -> list[Fact]:
    """What to cite from a passage that has no sentence a message can state (a price list,
    a heading, an FAQ answer that is only a list): its first line as written, introduced
    as a line from the notes, then an offer of the notes on its topic.

    A brief that requires citations fails every draft without one, so a step must cite
    something when anything was retrieved; these say no more than the passage does.
    """
    text = str(passage.get("text", ""))
    source_numbers = _numbers(text)
    pid = str(passage["passage_id"])
    topic = _topic(passage, source_numbers)
    about = f" on {topic}" if topic else ""
    found: list[Fact] = []
    title = _content_words(str(passage.get("title") or ""))
    for block, _ in _blocks(text):
        for piece in _SENTENCE_END.split(block):
            line = _usable(piece, strict=False, source_numbers=source_numbers, relaxed=True)
            if line is not None and not found and _content_words(line) != title:
                found.append(Fact(pid, line, rank, 0.0, intro=f"A line from our notes{about}:\n"))
    if topic:
        found.append(Fact(pid, f"I can send over our notes on {topic} if that would help.",
                          rank, -1.0))
    return found


def _interests(lead: Lead) -> list[str]:
    return [f for f in (lead.title, lead.company, lead.notes, *lead.custom.values()) if f]


def _similar(a: str, b: str) -> bool:
    """Two sentences that say nearly the same (the FAQ often repeats the overview)."""
    wa, wb = _content_words(a), _content_words(b)
    return bool(wa and wb) and len(wa & wb) / min(len(wa), len(wb)) > 0.6


def _candidates(lead: Lead, passages: Sequence[dict[str, Any]]) -> list[list[Fact]]:
    """Each passage's facts, best first, in retrieval order."""
    interests = _interests(lead)
    return [passage_facts(p, rank, interests) for rank, p in enumerate(passages)]


# -- the messages ------------------------------------------------------------------------


def _body(paragraphs: Iterable[str | list[str]]) -> str:
    """Paragraphs separated by blank lines; a list is lines of one paragraph (signature)."""
    return "\n\n".join(p if isinstance(p, str) else "\n".join(p) for p in paragraphs if p)


def offline_draft(lead: Lead, passages: list[dict[str, Any]], brief: str = "", *,
                  sender: str = DEFAULT_SIGNATURE) -> DraftOutput:
    """Step 1: a deterministic, personalised message built from the lead and its passages.

    It states up to two facts, each a plain sentence of a different passage with its
    citation (or one of `fallback_facts` when no passage has such a sentence), asks for
    a call and is signed with `sender` (see `signature_name`). It stays inside the
    brief's word limit by dropping the second fact, then the opening line; it cites
    whenever anything was retrieved, so a brief that requires citations is met.
    """
    who = _Who.of(lead)
    role = f" as {who.title}" if who.title else ""
    intro = (f"I am reaching out because teams like {who.company or 'yours'} often face the "
             f"problems our customers brought to us, and your work{role} sits right where "
             "they show up.")
    limit = BriefRules.from_brief(brief).max_words
    chosen: list[Fact] = []
    for facts in _candidates(lead, passages):
        fact = next((f for f in facts if not any(_similar(f.sentence, c.sentence)
                                                 for c in chosen)), None)
        if fact is not None:
            chosen.append(fact)
        if len(chosen) == 2:
            break
    fallbacks = [f for rank, p in enumerate(passages) for f in fallback_facts(p, rank)]
    chosen = chosen or fallbacks[:1]
    signature = _signature(sender, lead)

    def compose(opening: bool, facts: list[Fact]) -> str:
        return _body([who.greeting, intro if opening else "", *(f.line() for f in facts),
                      OFFLINE_ASK, signature])

    # The fullest message that fits the brief's word limit: the second fact goes first,
    # then the opening line, then the first fact gives way to the passages' shortest.
    variants = [(True, chosen), (True, chosen[:1]), (False, chosen[:1])]
    shortest = sorted([f for facts in _candidates(lead, passages) for f in facts] or fallbacks,
                      key=lambda f: word_count(f.line()))
    if shortest:
        variants.append((False, shortest[:1]))
    opening, used = next((v for v in variants if word_count(compose(*v)) <= limit), variants[0])
    company = who.company if who.company and len(who.company) < SUBJECT_MAX_CHARS - 12 else ""
    return DraftOutput(subject=f"An idea for {company or 'your team'}",
                       body=compose(opening, used), personal_points=who.points,
                       citations=[f.citation() for f in used])


def offline_follow_up(lead: Lead, passages: list[dict[str, Any]], earlier: list[DraftRow],
                      step: int, steps: int, *, subject: str, brief: str = "",
                      sender: str = DEFAULT_SIGNATURE) -> DraftOutput:
    """A follow-up (steps 2, 3...): short, not a repeat of the earlier messages, a reply in
    their thread under `subject`.

    Every step states one fact with its citation when anything was retrieved (see
    `follow_up_fact`). The middle steps add a smaller ask; the last step of a longer
    sequence closes the thread politely.

    The closing note cites too. The guardrails cannot tell a note that makes no claim
    from a draft whose claims are uncited (a sentence like "this cut onboarding to four
    days" has no figure to catch), so a brief that asks for citations is held to a
    citation on every step; loosening that check for a note with no citation would let
    a model's uncited claims through the same gap. A closing note that leaves one fact
    to keep is also a better last message than one that says nothing.
    """
    who = _Who.of(lead)
    last = step == steps and steps > 2
    fact, kind = follow_up_fact(lead, passages, earlier)
    lead_ins = {("new", False): "One thing I did not mention: ",
                ("recap", False): "To recap the point that matters most: ",
                ("new", True): "One last thing worth knowing: ",
                ("recap", True): "One thing worth keeping from my earlier notes: "}
    told = "" if fact is None else lead_ins.get((kind, last), "") + fact.line()
    signature = _signature(sender, lead)
    if last:
        body = _body([who.greeting, OFFLINE_LAST_NOTE, told, signature])
    else:
        about = f" about {who.company}" if who.company else ""
        opener = (f"A short follow-up on my earlier note{about}, in case it got buried under "
                  "everything else this week.")
        body = _body([who.greeting, opener, told, OFFLINE_FOLLOW_UP_ASK, signature])
        if word_count(body) > BriefRules.from_brief(brief).max_words:
            body = _body([who.greeting, told or opener, OFFLINE_FOLLOW_UP_ASK, signature])
    return DraftOutput(subject=subject[:SUBJECT_MAX_CHARS], body=body,
                       personal_points=[p for p in (who.first_name, who.company) if p],
                       citations=[fact.citation()] if fact else [])


def follow_up_fact(lead: Lead, passages: list[dict[str, Any]],
                   earlier: list[DraftRow]) -> tuple[Fact | None, str]:
    """The fact a follow-up states, and how: "new" (a sentence the thread has not said,
    from a passage it has not cited if there is one), "recap" (the passages are spent: a
    fact said before, not the one the last message said), "fallback" (no passage has a
    sentence to state: see `fallback_facts`), or none when nothing was retrieved."""
    used_ids = {pid for d in earlier for pid in d.citations}
    said = " ".join(" ".join(d.body.split()) for d in earlier)
    sentences = _said_sentences(earlier)
    facts = [f for fs in _candidates(lead, passages) for f in fs]
    fresh = [f for f in facts
             if f.sentence not in said and not any(_similar(f.sentence, s) for s in sentences)]
    if fresh:
        return min(fresh, key=lambda f: (f.passage_id in used_ids, f.rank, -f.score)), "new"
    if facts:
        last_body = earlier[-1].body if earlier else ""
        return min(facts, key=lambda f: (f.sentence in last_body, f.sentence not in said,
                                         f.rank, -f.score)), "recap"
    fallbacks = [f for rank, p in enumerate(passages) for f in fallback_facts(p, rank)]
    if fallbacks:
        return min(fallbacks, key=lambda f: f.sentence in said), "fallback"
    return None, ""


def _said_sentences(earlier: list[DraftRow]) -> list[str]:
    """The sentences of the earlier messages, citation markers removed."""
    text = " ".join(INLINE_CITATION.sub(" ", d.body) for d in earlier)
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if len(s.split()) >= 4]

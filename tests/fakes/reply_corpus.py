"""The labelled replies (tests/inbound/replies_corpus/) and how the offline classifier is
scored on them: precision and recall per intent. The test (tests/inbound/
test_reply_classifier.py) holds the floors; `bench/bench_reply_intents.py` prints the table
into docs/replies.md.

Each reply is read two ways: as the message arrived (`ReplyText.of_message`: every
header), and as the store keeps it (`stored`: the kind inbound gave it, its excerpt, the
subject, the Date), which is what the `classify_reply` activity reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from campaign_core.inbound import InboundMessage, classify, excerpt, parse_raw
from campaign_core.intents import DEFAULT_MIN_CONFIDENCE, ReplyClassification, ReplyIntent, thresholded
from campaign_core.reply_rules import ReplyText, classify_reply_text

CORPUS = Path(__file__).resolve().parents[1] / "inbound" / "replies_corpus"


@dataclass(frozen=True)
class Labelled:
    file: str
    intent: ReplyIntent
    lang: str
    date: str | None
    referral: dict[str, Any] | None
    message: InboundMessage


def load_corpus(folder: Path = CORPUS) -> list[Labelled]:
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))["replies"]
    return [Labelled(file=x["file"], intent=ReplyIntent(x["intent"]), lang=x["lang"],
                     date=x.get("date"), referral=x.get("referral"),
                     message=parse_raw((folder / x["file"]).read_bytes())) for x in labels]


def as_received(msg: InboundMessage) -> ReplyText:
    return ReplyText.of_message(msg)


def stored(msg: InboundMessage) -> ReplyText:
    """The reply as `ReplyDesk` records it: no headers, the excerpt, the inbound kind."""
    return ReplyText(subject=msg.subject, text=excerpt(msg.text), sender=msg.from_,
                     kind=classify(msg).kind,
                     sent_at=parsedate_to_datetime(msg.header("date")) if msg.header("date")
                     else None)


def offline(corpus: list[Labelled], read: Callable[[InboundMessage], ReplyText] = as_received,
            min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> list[ReplyClassification]:
    """The offline classifier's reading of each reply, thresholded as the activity does."""
    return [thresholded(classify_reply_text(read(x.message)), min_confidence) for x in corpus]


@dataclass(frozen=True)
class Score:
    intent: ReplyIntent
    support: int  # labelled with it
    predicted: int  # read as it
    correct: int

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.correct / self.support if self.support else None


def score(corpus: list[Labelled], got: list[ReplyClassification]) -> dict[ReplyIntent, Score]:
    return {i: Score(i, sum(x.intent is i for x in corpus), sum(g.intent is i for g in got),
                     sum(x.intent is i and g.intent is i for x, g in zip(corpus, got, strict=True)))
            for i in ReplyIntent}


def table(scores: dict[ReplyIntent, Score]) -> str:
    """The markdown table: intent, labelled, read as, correct, precision, recall."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    rows = ["| intent | labelled | read as | correct | precision | recall |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rows += [f"| `{s.intent.value}` | {s.support} | {s.predicted} | {s.correct} | "
             f"{pct(s.precision)} | {pct(s.recall)} |" for s in scores.values()]
    return "\n".join(rows)

"""Talking to an OpenAI-compatible endpoint the way a Temporal activity must.

The client never retries on its own: each provider failure becomes an `ApplicationError`
that tells Temporal whether (and when) to retry, and long calls heartbeat.
See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio.exceptions import ApplicationError

from activities.base import heartbeating
from campaign_core.settings import Settings

if TYPE_CHECKING:
    # Imported where a call is made: the workflows and the CLI import the agents' modules
    # for their references, and `openai` alone takes a third of a second to import.
    import openai

T = TypeVar("T")

#: Error types raised here; the non-retryable ones are listed in registry.PERMANENT_ERRORS.
AUTH_ERROR = "LLMAuthError"
REJECTED_ERROR = "LLMRequestRejected"
RATE_LIMITED = "LLMRateLimited"
UNAVAILABLE = "LLMUnavailable"
TIMEOUT = "LLMTimeout"

RETRYABLE_STATUS = frozenset({408, 409, 429})
AUTH_STATUS = frozenset({401, 403})
#: A provider asking for more than this is capped: the retry policy's attempts still bound
#: the total, and a lead should not sleep for an hour because of one odd header.
MAX_RETRY_AFTER = timedelta(minutes=5)
#: Heartbeat period when the activity has no heartbeat timeout of its own.

#: USD per million (prompt, completion) tokens, matched by the longest model-name prefix.
#: Prices change: CAMPAIGN_LLM_PRICE_INPUT / _OUTPUT override this table.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
}


def make_client(settings: Settings) -> openai.AsyncOpenAI:
    """An async client for the configured endpoint with the SDK's own retries off."""
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise ValueError(
            "OPENAI_API_KEY is not set: it is needed for CAMPAIGN_LLM_PROVIDER=openai and for "
            "CAMPAIGN_EMBEDDING_MODEL (any non-empty value for a local endpoint that ignores it)"
        )
    import openai

    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url or None,
        max_retries=0,
        timeout=settings.llm_timeout_seconds,
    )


def price_per_mtok(model: str, settings: Settings) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for `model`, or None when unknown."""
    if settings.llm_price_input is not None or settings.llm_price_output is not None:
        return (settings.llm_price_input or 0.0, settings.llm_price_output or 0.0)
    matches = [name for name in PRICES if model.startswith(name)]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(model: str, settings: Settings, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What a call cost, or None when the model's price is unknown (never a guess)."""
    price = price_per_mtok(model, settings)
    if price is None:
        return None
    return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000, 8)


#: Tokens a chat request may spend on each message's framing (role markers), counted
#: generously: the worst case below must never be below what the provider bills.
TOKENS_PER_MESSAGE = 8


def max_cost_nanousd(model: str, settings: Settings, prompt_bytes: int, messages: int,
                     max_completion_tokens: int) -> int | None:
    """The most a call can cost, in nano-USD, or None when the model's price is unknown.

    A byte-level BPE token covers at least one byte, so the prompt's UTF-8 size (plus each
    message's framing) bounds its input tokens; `max_completion_tokens` bounds the output.
    """
    price = price_per_mtok(model, settings)
    if price is None:
        return None
    tokens_in = prompt_bytes + TOKENS_PER_MESSAGE * (messages + 1)
    # USD per million tokens -> nano-USD per token is price * 1000; rounded up.
    return math.ceil(tokens_in * price[0] * 1000 + max_completion_tokens * price[1] * 1000)


def retry_after(headers: Any) -> timedelta | None:
    """The delay a provider asked for: `retry-after-ms`, or `retry-after` in seconds or as a date."""
    if headers is None:
        return None
    delay: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            delay = float(raw_ms) / 1000
        elif raw is not None:
            delay = float(raw)
    except ValueError:
        delay = None
    if delay is None and raw:
        try:
            when = email.utils.parsedate_to_datetime(str(raw))
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            delay = (when - datetime.now(UTC)).total_seconds()
    if delay is None or delay <= 0:
        return None
    return min(timedelta(seconds=delay), MAX_RETRY_AFTER)


def _scrub(text: str, secret: str | None) -> str:
    """Provider messages may echo (part of) the key; never let it reach a log or the store."""
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return exc.message


def classify(exc: BaseException, *, what: str = "LLM", secret: str | None = None) -> ApplicationError:
    """The ApplicationError that tells Temporal whether and when to retry `exc`."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ApplicationError(f"{what} call timed out", type=TIMEOUT)
    if isinstance(exc, openai.APIConnectionError):
        return ApplicationError(f"{what} endpoint unreachable: {_scrub(str(exc), secret)}",
                                type=UNAVAILABLE)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in AUTH_STATUS:
            # The provider's text can quote the key; name the setting instead.
            return ApplicationError(
                f"{what} provider refused the credentials (HTTP {status}): check OPENAI_API_KEY "
                "and OPENAI_BASE_URL",
                type=AUTH_ERROR, non_retryable=True,
            )
        detail = _scrub(_provider_message(exc), secret)
        if status in RETRYABLE_STATUS or status >= 500:
            delay = retry_after(exc.response.headers)
            kind = RATE_LIMITED if status == 429 else UNAVAILABLE
            wait = f", retry after {delay.total_seconds():g}s" if delay else ""
            return ApplicationError(f"{what} HTTP {status}{wait}: {detail}", type=kind,
                                    next_retry_delay=delay)
        return ApplicationError(f"{what} rejected the request (HTTP {status}): {detail}",
                                type=REJECTED_ERROR, non_retryable=True)
    raise TypeError(f"not a provider error: {exc!r}")


async def provider_call(
    aw: Awaitable[T], *, what: str, settings: Settings, details: str = "waiting for the provider"
) -> T:
    """Run one provider call with heartbeats, translating its failures for Temporal."""
    import openai

    secret = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    try:
        return await heartbeating(aw, details=details)
    except (openai.APIConnectionError, openai.APIStatusError) as exc:
        raise classify(exc, what=what, secret=secret) from None

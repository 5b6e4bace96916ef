"""LLM spend caps: the arithmetic shared by the copywriter, the store and the control plane.

The ledger (`llm_spend`, schema 11) counts in integer nano-USD so that sums and the
budget comparison are exact on every backend; people see USD. See "Spend caps" in
docs/architecture.md.
"""

from __future__ import annotations

import math

from campaign_core.store.rows import Reservation, Spend

NANO = 1_000_000_000
#: The ApplicationError type of a call the budget refused (non-retryable; not a failure).
BUDGET_EXHAUSTED = "BudgetExhausted"
#: The word `paused_reason` starts with when the budget paused drafting.
BUDGET_REASON = "budget"


def to_nano(usd: float | None) -> int:
    """A cost in nano-USD (costs carry 8 decimals: exact)."""
    return 0 if usd is None else round(usd * NANO)


def from_nano(nano: int) -> float:
    return round(nano / NANO, 9)


def usd(amount: float | None) -> str:
    """`$0.0021`, `$5`: up to six decimals, trailing zeros dropped."""
    if amount is None:
        return "no cap"
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    return f"${text or '0'}"


def spend_of(budget_usd: float | None, spent: int, held: int) -> Spend:
    return Spend(budget_usd=budget_usd, spent_usd=from_nano(spent), reserved_usd=from_nano(held))


def reservation_of(granted: bool, budget_usd: float | None, spent: int, held: int) -> Reservation:
    return Reservation(granted=granted, budget_usd=budget_usd, spent_usd=from_nano(spent),
                       reserved_usd=from_nano(held))


def fits(budget_usd: float | None, spent: int, held: int, amount: int) -> bool:
    """Whether a call that may cost `amount` nano-USD fits: the one rule every backend applies."""
    return budget_usd is None or spent + held + amount <= round(budget_usd * NANO)


def check_budget(value: float, field: str) -> float:
    """A budget a person gave: finite and more than 0; ValueError naming `field` otherwise."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field}: {value!r} is not a budget; give an amount in USD "
                         "greater than 0, e.g. 5 or 12.50")
    return value


def exhausted_message(grant: Reservation, worst_usd: float) -> str:
    """Why a call was refused, in numbers (it becomes the campaign's `paused_reason`)."""
    held = f"; {usd(grant.reserved_usd)} held by calls in flight" if grant.reserved_usd else ""
    return (f"spent {usd(grant.spent_usd)} of {usd(grant.budget_usd)}{held}; the next call "
            f"may cost up to {usd(worst_usd)}")

"""Which mailbox each lead is sent from (issue 28): spread by capacity, a company over many.

A lead is given one sender when it is drafted and keeps it for its whole sequence (its
follow-ups thread from the same mailbox). The choice is made a page of leads at a time, in
lead order, so it is the same on every retry: each lead goes to the sender whose share of
the campaign's leads is lowest against its weight (its capacity), and a sender that already
has leads of the same company counts as fuller, so that one company's leads are not all
sent from one mailbox (a recipient's mail system sees one mailbox writing to half its
people). Pure: the sequence agent reads the store and writes the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def company_key(email: str, company: str | None) -> str:
    """What makes two leads colleagues: the company name they were given, else the domain
    of their address."""
    if company and company.strip():
        return " ".join(company.lower().split())
    return email.rpartition("@")[2].lower()


def assign(leads: Sequence[tuple[str, str]], weights: Mapping[str, float],
           counts: Mapping[str, int]) -> dict[str, str]:
    """`leads`: (lead id, company key) in order; `weights`: sender -> capacity (> 0);
    `counts`: leads each sender already has in the campaign. Returns lead id -> sender.

    The load of a sender is (its leads + 1/2) / weight (Sainte-Laguë's divisor, which keeps
    the shares closest to the weights), multiplied by 1 + its leads of the lead's company
    (in this call): ties go to the sender named first."""
    if not weights:
        return {}
    names = sorted(weights)
    load = {name: counts.get(name, 0) for name in names}
    by_company: dict[str, dict[str, int]] = {}
    out: dict[str, str] = {}
    for lead_id, company in leads:
        mine = by_company.setdefault(company, {})

        def cost(name: str, mine: dict[str, int] = mine) -> tuple[float, str]:
            return ((load[name] + 0.5) / weights[name] * (1 + mine.get(name, 0)), name)

        chosen = min(names, key=cost)
        out[lead_id] = chosen
        load[chosen] += 1
        mine[chosen] = mine.get(chosen, 0) + 1
    return out

"""Authentication-Results (RFC 8601): whether the receiving server vouches for a sender.

A reply matched by its sender's address alone proves nothing: anyone can write
`From: dana@bigco.example`. What can vouch for the address is the mail server that
received the message for us, which checked SPF, DKIM and DMARC and wrote what it found in
an `Authentication-Results` header under its own name (the authserv-id). Only that server's
header counts (`CAMPAIGN_TRUSTED_AUTHSERV_ID`): a sender can write any such header it likes,
and RFC 8601 section 5 has the receiving server remove headers claiming its name, so a
header bearing it was written by that server.

`sender_verified` says yes when that header says `dmarc=pass`, or `dkim=pass` for a signing
domain aligned with the From domain, or `spf=pass` for an envelope sender aligned with it.
Alignment here is a plain suffix check, not the Public Suffix List: the two domains are
equal or one is a subdomain of the other (`bigco.example` and `mail.bigco.example` align;
two sibling subdomains do not, which is stricter than DMARC's relaxed alignment, never
looser). Pure: no I/O. The parser reads the value once, left to right (no regular
expression that can backtrack), so a hostile 10,000-character header costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Header name, lower-cased as `InboundMessage.headers` keeps them.
HEADER = "authentication-results"
#: Characters that end a word of the header (RFC 2045 tspecials this grammar uses).
_SPECIAL = frozenset(';=/,()"')


@dataclass(frozen=True)
class MethodResult:
    """One `method=result` of the header, with its `ptype.property=value` pairs."""

    method: str
    result: str
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthResults:
    """The header's authserv-id and its results, in order (empty for `none`)."""

    authserv_id: str
    results: tuple[MethodResult, ...]


@dataclass(frozen=True)
class Verdict:
    """Whether the sender's address is vouched for, and why (for the log and the record)."""

    verified: bool
    reason: str


def _tokens(value: str) -> list[tuple[str, str]] | None:
    """(kind, text) tokens: `word`, `quoted` (unescaped), or a special character itself.

    Comments (nested parentheses, RFC 5322 CFWS) and white space separate tokens and are
    dropped. None for an unterminated comment or quoted string: a header that is not well
    formed vouches for nothing.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch.isspace():
            i += 1
        elif ch == "(":
            depth = 0
            while i < n:
                c = value[i]
                if c == "\\":
                    i += 2
                    continue
                depth += (c == "(") - (c == ")")
                i += 1
                if depth == 0:
                    break
            if depth:
                return None
        elif ch == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= n:
                return None
            i += 1
            out.append(("quoted", "".join(chars)))
        elif ch in _SPECIAL:
            out.append((ch, ch))
            i += 1
        else:
            start = i
            while i < n and not value[i].isspace() and value[i] not in _SPECIAL:
                i += 1
            out.append(("word", value[start:i]))
    return out


def parse(value: str) -> AuthResults | None:
    """The first Authentication-Results header in `value`, or None if it has no authserv-id
    or is not well formed (an unterminated comment or quoted string).

    A relay that keeps repeated headers as one comma-joined value (as the inbound webhook
    accepts them) gives several headers in one: a comma cannot appear outside a comment or
    quoted string in this grammar, so the value is cut at the first one and only the first
    (topmost, the one the receiving server added last) is read. A result that does not
    parse is left out: what is not understood never counts as a pass.
    """
    tokens = _tokens(value)
    if tokens is None:
        return None
    for at, (kind, _) in enumerate(tokens):
        if kind == ",":
            tokens = tokens[:at]
            break
    if not tokens or tokens[0][0] not in ("word", "quoted"):
        return None
    authserv_id = tokens[0][1]
    groups: list[list[tuple[str, str]]] = [[]]
    for token in tokens[1:]:
        if token[0] == ";":
            groups.append([])
        else:
            groups[-1].append(token)
    results = [r for r in (_resinfo(g) for g in groups[1:]) if r is not None]
    return AuthResults(authserv_id=authserv_id, results=tuple(results))


def _resinfo(tokens: list[tuple[str, str]]) -> MethodResult | None:
    """`method[/version]=result [reason=...] [ptype.property=value ...]`, or None."""
    if len(tokens) >= 3 and tokens[1][0] == "/":  # a method version: dkim/1=pass
        tokens = tokens[:1] + tokens[3:]
    if len(tokens) < 3 or tokens[0][0] != "word" or tokens[1][0] != "=" or tokens[2][0] != "word":
        return None
    properties: dict[str, str] = {}
    rest = tokens[3:]
    i = 0
    while i + 2 < len(rest):
        name, eq, val = rest[i], rest[i + 1], rest[i + 2]
        if name[0] == "word" and eq[0] == "=" and val[0] in ("word", "quoted"):
            key = name[1].lower()
            if key != "reason":
                properties.setdefault(key, val[1])
            i += 3
        else:
            i += 1
    return MethodResult(method=tokens[0][1].lower(), result=tokens[2][1].lower(),
                        properties=properties)


def domain_of(value: str) -> str:
    """The domain of an address or a bare domain, lower-cased, without a trailing dot."""
    return value.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()


def aligned(domain: str, from_domain: str) -> bool:
    """Equal, or one a subdomain of the other (a suffix check; see the module doc).

    A bare top-level name (no dot) aligns with nothing: `d=example` must not vouch for
    every `*.example`.
    """
    a, b = domain_of(domain), domain_of(from_domain)
    if not a or not b or "." not in a or "." not in b:
        return False
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def sender_verified(header: str | None, trusted_authserv_id: str | None,
                    from_address: str) -> Verdict:
    """Whether the trusted server's Authentication-Results vouches for `from_address`.

    Unset `trusted_authserv_id`: never (nobody is trusted to say so). Otherwise the
    header's authserv-id must equal it (case-insensitively, as domain names compare), and
    one of its results must pass: DMARC (whose `header.from`, when given, aligns with the
    From domain), DKIM with `header.d` (else `header.i`) aligned, or SPF with
    `smtp.mailfrom` aligned.
    """
    if not trusted_authserv_id or not trusted_authserv_id.strip():
        return Verdict(False, "CAMPAIGN_TRUSTED_AUTHSERV_ID is not set")
    if not header:
        return Verdict(False, "no Authentication-Results header")
    found = parse(header)
    if found is None:
        return Verdict(False, "an Authentication-Results header that does not parse")
    if found.authserv_id.lower() != trusted_authserv_id.strip().lower():
        return Verdict(False, "Authentication-Results from a server that is not trusted")
    from_domain = domain_of(from_address)
    for r in found.results:
        if r.result != "pass":
            continue
        p = r.properties
        if r.method == "dmarc" and ("header.from" not in p or aligned(p["header.from"],
                                                                      from_domain)):
            return Verdict(True, "dmarc=pass")
        if r.method == "dkim" and aligned(p.get("header.d") or p.get("header.i") or "",
                                          from_domain):
            return Verdict(True, "dkim=pass, aligned")
        if r.method == "spf" and aligned(p.get("smtp.mailfrom", ""), from_domain):
            return Verdict(True, "spf=pass, aligned")
    return Verdict(False, "no passing, aligned result in Authentication-Results")

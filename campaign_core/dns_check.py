"""The DNS preflight of a sender (`campaign sender check`, issue 28): MX, SPF, DKIM, DMARC.

Gmail, Yahoo and Outlook take bulk mail only from a domain that publishes SPF, signs with
DKIM and has a DMARC policy aligned with the From domain, and a From domain without MX
cannot take the replies and bounces a campaign lives on. This reads those records for a
sender's From domain and says, for each, ok / warn / fail and one line of why, so a person
fixes DNS before a mailbox is burnt rather than after.

It asks the system's resolvers, or the one `CAMPAIGN_DNS_RESOLVER=host:port` names (tests
point it at a DNS server on loopback; nothing here needs the internet). Every lookup has a
short timeout and the four checks run at once: a resolver that does not answer makes each
check fail with "no answer from DNS resolver X" within seconds, not a hang.
`dnspython` is imported where the lookups are made.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable
from dataclasses import dataclass
from email.utils import parseaddr
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, computed_field

from campaign_core.dkim_sign import same_public_key

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

CheckName = Literal["mx", "spf", "dkim", "dmarc"]
CheckStatus = Literal["ok", "warn", "fail"]

#: Seconds one lookup may take, UDP and a TCP retry included: a real resolver answers in
#: well under a second, and a preflight should not hang on one that is down.
DNS_TIMEOUT_SECONDS = 3.0
#: SPF mechanisms that name a domain whose servers may send (RFC 7208 5).
_SPF_DOMAIN_MECHANISMS = ("include", "a", "mx", "exists", "ptr")


class CheckItem(BaseModel):
    """One record's verdict."""

    name: CheckName
    status: CheckStatus
    detail: str = Field(description="One line saying why.")


class SenderCheck(BaseModel):
    """What `campaign sender check --json` and `GET /senders/{name}/check` answer."""

    domain: str = Field(description="The From domain checked (IDNA ASCII form).")
    checks: list[CheckItem]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed): what `start --strict-senders` requires."""
        return all(item.status != "fail" for item in self.checks)


class _Unreachable(Exception):
    """The resolver gave no usable answer: every check that needs DNS fails with this."""


@dataclass(frozen=True)
class _Found:
    """A lookup's records (`values`), or why there are none (`missing`)."""

    values: list[str]
    missing: Literal["nxdomain", "nodata"] | None = None


def sender_domain(from_address: str) -> str:
    """The From address's domain in IDNA ASCII form, lower case; ValueError naming
    `from_address` if there is none."""
    address = parseaddr(from_address)[1]
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    if "@" not in address or not domain or "." not in domain:
        raise ValueError(f"from_address: {from_address!r} has no domain to check")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise ValueError(f"from_address: {domain!r} is not a valid domain name") from err


def parse_resolver(value: str) -> tuple[str, int]:
    """`host:port` (or `host`, port 53; `[v6]:port` for IPv6) of CAMPAIGN_DNS_RESOLVER, the
    host an IP address; ValueError naming the variable otherwise."""
    text = value.strip()
    host, port_text = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError as err:
        raise ValueError(f"CAMPAIGN_DNS_RESOLVER must be host:port with an IP address, "
                         f"e.g. 127.0.0.1:5353 (got {value!r})") from err
    if not 0 < port < 65536:
        raise ValueError(f"CAMPAIGN_DNS_RESOLVER: port {port} is out of range")
    return str(address), port


async def check_sender(
    *, from_address: str, smtp_host: str | None, dkim_selector: str | None,
    dkim_public_key: str | None, resolver: str | None,
    lookup_timeout: float = DNS_TIMEOUT_SECONDS,
) -> SenderCheck:
    """MX, SPF, DKIM and DMARC of the From domain of `from_address`.

    `smtp_host` is the host of the sender's SMTP URL (None for an outbox sender);
    `dkim_selector` and `dkim_public_key` (the `p=` of the configured key,
    `DkimKey.public_key`) are None without DKIM; `resolver` is CAMPAIGN_DNS_RESOLVER
    ("host:port") or None for the system's resolvers; `lookup_timeout` bounds each lookup
    (seconds). ValueError for a From without a
    domain or a malformed resolver.
    """
    domain = sender_domain(from_address)
    try:
        dns = _resolver(resolver, lookup_timeout)
    except _Unreachable as err:
        reason = str(err)
        return SenderCheck(domain=domain, checks=[
            CheckItem(name=name, status="fail", detail=reason)
            for name in ("mx", "spf", "dkim", "dmarc")])
    label = resolver or ", ".join(str(ns) for ns in dns.nameservers) or "(none)"
    lookup = _Lookup(dns, label, lookup_timeout)
    signed = bool(dkim_selector and dkim_public_key)
    items = await asyncio.gather(
        _guard("mx", _check_mx(lookup, domain)),
        _guard("spf", _check_spf(lookup, domain, smtp_host)),
        _guard("dkim", _check_dkim(lookup, domain, dkim_selector, dkim_public_key)),
        _guard("dmarc", _check_dmarc(lookup, domain, signed=signed)),
    )
    return SenderCheck(domain=domain, checks=list(items))


def _resolver(resolver: str | None, timeout: float) -> Resolver:
    import dns.asyncresolver
    import dns.resolver

    if resolver:
        host, port = parse_resolver(resolver)
        dns_resolver = dns.asyncresolver.Resolver(configure=False)
        dns_resolver.nameservers = [host]
        dns_resolver.port = port
    else:
        try:
            dns_resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as err:
            raise _Unreachable("no DNS resolver configured (no nameserver in "
                               "/etc/resolv.conf): set CAMPAIGN_DNS_RESOLVER=host:port") from err
    dns_resolver.timeout = timeout
    dns_resolver.lifetime = timeout
    return dns_resolver


async def _guard(name: CheckName, check: Awaitable[CheckItem]) -> CheckItem:
    try:
        return await check
    except _Unreachable as err:
        return CheckItem(name=name, status="fail", detail=str(err))


@dataclass(frozen=True)
class _Lookup:
    resolver: Resolver
    label: str
    timeout: float

    async def records(self, name: str, rtype: Literal["MX", "TXT"]) -> _Found:
        """MX as "preference exchange", TXT with its character-strings joined (RFC 7208
        3.3, RFC 6376 3.6.2.2: a long record is split in 255-byte strings)."""
        import dns.exception
        import dns.resolver

        try:
            answer = await self.resolver.resolve(name, rtype, lifetime=self.timeout,
                                                 search=False)
        except dns.resolver.NXDOMAIN:
            return _Found([], "nxdomain")
        except dns.resolver.NoAnswer:
            return _Found([], "nodata")
        except dns.resolver.NoNameservers as err:
            raise _Unreachable(f"no answer from DNS resolver {self.label} for {name} "
                               f"({_server_error(err)})") from err
        except dns.exception.Timeout as err:
            raise _Unreachable(f"no answer from DNS resolver {self.label} "
                               f"(timed out after {self.timeout:g} s)") from err
        except dns.exception.DNSException as err:
            raise _Unreachable(f"no answer from DNS resolver {self.label} for {name} "
                               f"({type(err).__name__})") from err
        values: list[str] = []
        for rdata in answer:
            if rtype == "TXT":
                values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            else:
                values.append(f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}")
        return _Found(values)


def _server_error(err: Exception) -> str:
    """The rcode the servers gave ("SERVFAIL"), without dnspython's long wording."""
    text = str(err)
    for code in ("SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"):
        if code in text:
            return code
    return "the server failed"


# -- mx ---------------------------------------------------------------------------------


async def _check_mx(lookup: _Lookup, domain: str) -> CheckItem:
    found = await lookup.records(domain, "MX")
    if found.missing == "nxdomain":
        return CheckItem(name="mx", status="fail",
                         detail=f"{domain} does not exist in DNS (NXDOMAIN)")
    if not found.values:
        return CheckItem(name="mx", status="fail", detail=(
            f"no MX record for {domain}: replies and bounces to it cannot be delivered"))
    pairs = sorted((int(pref), host) for pref, _, host in
                   (value.partition(" ") for value in found.values))
    if all(host in ("", ".") for _, host in pairs):
        return CheckItem(name="mx", status="fail", detail=(
            f"{domain} publishes a null MX (RFC 7505): it takes no mail, so replies and "
            "bounces cannot reach it"))
    listed = ", ".join(f"{pref} {host}" for pref, host in pairs)
    return CheckItem(name="mx", status="ok", detail=f"{domain} takes mail at {listed}")


# -- spf --------------------------------------------------------------------------------


def _is_spf(text: str) -> bool:
    """RFC 7208 4.5: the record starts with exactly `v=spf1`, then a space or its end."""
    lower = text.strip().lower()
    return lower == "v=spf1" or lower.startswith("v=spf1 ")


async def _check_spf(lookup: _Lookup, domain: str, smtp_host: str | None) -> CheckItem:
    found = await lookup.records(domain, "TXT")
    policies = [value.strip() for value in found.values if _is_spf(value)]
    if not policies:
        where = "does not exist (NXDOMAIN)" if found.missing == "nxdomain" else (
            "has no v=spf1 TXT record")
        return CheckItem(name="spf", status="fail", detail=(
            f"no SPF policy: {domain} {where}, so receivers cannot tell which servers may "
            "send for it"))
    if len(policies) > 1:
        return CheckItem(name="spf", status="fail", detail=(
            f"{len(policies)} SPF policies at {domain}: receivers treat that as an error "
            "(RFC 7208 4.5); merge them into one v=spf1 record"))
    policy = policies[0]
    if smtp_host is None:
        return CheckItem(name="spf", status="warn", detail=(
            f"SPF policy at {domain} ({_short(policy)}); no SMTP host to check it against "
            "(an outbox sender)"))
    covering, notes = spf_covering_term(policy, domain, smtp_host)
    if covering == "+all":
        return CheckItem(name="spf", status="warn", detail=(
            f"SPF policy at {domain} ends in +all: any server may send as {domain}; "
            "list the servers and end in ~all or -all"))
    if covering:
        return CheckItem(name="spf", status="ok", detail=(
            f"SPF policy at {domain} covers SMTP host {smtp_host} ({covering})"))
    hint = f" ({notes})" if notes else ""
    return CheckItem(name="spf", status="warn", detail=(
        f"SPF policy at {domain} exists, but cannot tell whether it covers SMTP host "
        f"{smtp_host}{hint}: make sure it includes the servers that host sends from"))


def spf_covering_term(policy: str, domain: str, smtp_host: str) -> tuple[str | None, str]:
    """The term of the SPF `policy` of `domain` that lets `smtp_host` send, if one can be
    told without further lookups, and a note on what could not be told.

    A term covers the host when it names the host, one of its parent domains, or a name
    under the host's own domain (`include:_spf.mailgun.org` for `smtp.mailgun.org`), or
    is a bare `a` / `mx` of the From domain while the host is in that domain, or an
    `ip4:` / `ip6:` range holding a host given as an address. Only pass (`+`) terms count.
    """
    host = smtp_host.strip().rstrip(".").lower()
    try:
        host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = (
            ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        host_ip = None
    labels = host.split(".")
    host_domain = ".".join(labels[1:]) if len(labels) >= 3 else host
    notes: list[str] = []
    for term in policy.split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        body = term[1:] if term[0] in "+-~?" else term
        lower = body.lower()
        if qualifier != "+":
            continue
        if lower == "all":
            return "+all", ""
        if lower.startswith("redirect="):
            target = lower.removeprefix("redirect=")
        elif lower.startswith(("ip4:", "ip6:")):
            if host_ip is not None and _in_range(host_ip, lower[4:]):
                return term, ""
            if host_ip is None:
                notes.append("it lists ip4/ip6 ranges, which may hold the host's addresses")
            continue
        else:
            mechanism, _, target = lower.partition(":")
            mechanism = mechanism.split("/")[0]
            if mechanism not in _SPF_DOMAIN_MECHANISMS:
                continue  # exp=, unknown modifiers
            if not target:  # a bare `a` / `mx`: the From domain's own servers
                if mechanism in ("a", "mx") and host_ip is None and _within(host, domain):
                    return term, ""
                continue
        target = target.split("/")[0].rstrip(".")
        if "%" in target:
            notes.append("it uses macros")
            continue
        if host_ip is None and "." in target and (
                _within(host, target) or _within(target, host_domain)):
            return term, ""
    return None, "; ".join(dict.fromkeys(notes))


def _within(name: str, parent: str) -> bool:
    """`name` is `parent` or a name under it."""
    return name == parent or name.endswith("." + parent)


def _in_range(address: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return address in ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- dkim -------------------------------------------------------------------------------


def _tags(text: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 3.2), keys lower case, values stripped."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


async def _check_dkim(lookup: _Lookup, domain: str, selector: str | None,
                      public_key: str | None) -> CheckItem:
    if not selector or not public_key:
        return CheckItem(name="dkim", status="warn",
                         detail="no DKIM key configured: messages go unsigned")
    name = f"{selector}._domainkey.{domain}"
    found = await lookup.records(name, "TXT")
    if not found.values:
        return CheckItem(name="dkim", status="fail", detail=(
            f"no DKIM key published at {name}: publish the sender's public key there "
            "(the TXT record `campaign sender add` printed)"))
    keys = [_tags(value) for value in found.values]
    keys = [tags for tags in keys if "p" in tags]
    if not keys:
        return CheckItem(name="dkim", status="fail", detail=(
            f"the TXT record at {name} is not a DKIM key (no p= tag)"))
    if any(same_public_key(tags["p"], public_key) for tags in keys):
        algorithm = keys[0].get("k", "rsa")
        return CheckItem(name="dkim", status="ok", detail=(
            f"the key published at {name} (k={algorithm}) matches the configured key"))
    if all(not "".join(tags["p"].split()) for tags in keys):
        return CheckItem(name="dkim", status="fail", detail=(
            f"the key at {name} is revoked (empty p=): publish the configured key"))
    return CheckItem(name="dkim", status="fail", detail=(
        f"the published key does not match the configured key ({name}): publish the "
        "sender's public key, or configure the key that is published"))


# -- dmarc ------------------------------------------------------------------------------


def _is_dmarc(text: str) -> bool:
    first = text.strip().split(";", 1)[0].replace(" ", "")
    return first.lower() == "v=dmarc1"


async def _dmarc_record(lookup: _Lookup, domain: str) -> tuple[str, list[str]]:
    """The DMARC records that apply to `domain`: its own at `_dmarc.<domain>`, else the
    nearest parent's (the DNS tree walk of DMARCbis; RFC 7489 asks the organisational
    domain, which is one of those parents). The name they were found at, and them."""
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        name = "_dmarc." + ".".join(labels[start:])
        found = await lookup.records(name, "TXT")
        records = [value.strip() for value in found.values if _is_dmarc(value)]
        if records:
            return name, records
    return f"_dmarc.{domain}", []


async def _check_dmarc(lookup: _Lookup, domain: str, *, signed: bool) -> CheckItem:
    name, records = await _dmarc_record(lookup, domain)
    if not records:
        return CheckItem(name="dmarc", status="fail", detail=(
            f"no DMARC policy at {name}: Gmail, Yahoo and Outlook require one of bulk "
            "senders (publish at least v=DMARC1; p=none)"))
    if len(records) > 1:
        return CheckItem(name="dmarc", status="fail", detail=(
            f"{len(records)} DMARC records at {name}: receivers then apply none "
            "(RFC 7489 6.6.3); keep one"))
    tags = _tags(records[0])
    inherited = name != f"_dmarc.{domain}"
    policy = (tags.get("sp") or tags.get("p", "")) if inherited else tags.get("p", "")
    policy = policy.lower()
    if policy not in ("none", "quarantine", "reject"):
        return CheckItem(name="dmarc", status="fail", detail=(
            f"the DMARC record at {name} has no valid p= (none, quarantine or reject)"))
    adkim = "strict" if tags.get("adkim", "r").lower() == "s" else "relaxed"
    aspf = "strict" if tags.get("aspf", "r").lower() == "s" else "relaxed"
    alignment = f"adkim {adkim}, aspf {aspf}: mail signed d={domain} is aligned"
    if not signed:
        alignment += " (this sender signs nothing, so only SPF can align)"
    where = f"{name}, for its subdomains" if inherited else name
    if policy == "none":
        return CheckItem(name="dmarc", status="warn", detail=(
            f"DMARC p=none at {where}: monitoring only, failing mail is still delivered; "
            f"{alignment}"))
    return CheckItem(name="dmarc", status="ok",
                     detail=f"DMARC p={policy} at {where}; {alignment}")

"""`campaign sender check` (issue 28): MX, SPF, DKIM and DMARC read from a real DNS server.

An authoritative server on loopback (dnslib, UDP and TCP) serves a few From domains:
one with every record right, one without DMARC, one whose published DKIM key is another
key, one whose DMARC only monitors, and others for the SPF and MX rules. `check_sender`
asks it through dnspython as it would ask CAMPAIGN_DNS_RESOLVER.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from campaign_core.dkim_sign import load_dkim_key
from campaign_core.dns_check import (
    SenderCheck,
    check_sender,
    parse_resolver,
    spf_covering_term,
)
from tests.fakes.dkim_keys import ed25519_pem, rsa_pem, rsa_public_pkcs1
from tests.fakes.dns_server import LoopbackDns, RecordData, dns_server, silent_resolver

Zone = dict[str, dict[str, list[RecordData]]]

KEY = load_dkim_key(rsa_pem(2048))
OTHER_KEY = load_dkim_key(rsa_pem(2048, 1))
ED_KEY = load_dkim_key(ed25519_pem())
BIG_KEY = load_dkim_key(rsa_pem(4096))
SMTP_HOST = "smtp.sendco.test"
SPF = "v=spf1 include:_spf.sendco.test ~all"


def domain(name: str, *, spf: str | None = SPF, dmarc: str | None = "v=DMARC1; p=reject",
           dkim: str | None = None, selector: str = "s1") -> Zone:
    """The records of one From domain: MX, SPF, a DKIM key at `selector`, DMARC."""
    records: Zone = {
        name: {"MX": [(20, f"mx2.{name}"), (10, f"mx1.{name}")],
               "TXT": ["google-site-verification=abc", *([spf] if spf else [])]},
        f"{selector}._domainkey.{name}": {"TXT": [dkim or KEY.public_record()]},
    }
    if dmarc:
        records[f"_dmarc.{name}"] = {"TXT": [dmarc]}
    return records


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    records: Zone = {
        **domain("good.test", dmarc="v=DMARC1; p=reject; adkim=s; rua=mailto:d@good.test"),
        **domain("nodmarc.test", dmarc=None),
        **domain("wrongkey.test", dkim=OTHER_KEY.public_record()),
        **domain("monitor.test", dmarc="v=DMARC1; p=none; rua=mailto:d@monitor.test"),
        **domain("pkcs1.test", dkim="v=DKIM1; k=rsa; p="
                 + base64.b64encode(rsa_public_pkcs1(2048)).decode()),
        **domain("ed.test", dkim=ED_KEY.public_record(), selector="ed1"),
        **domain("big.test", dkim=BIG_KEY.public_record()),
        **domain("revoked.test", dkim="v=DKIM1; k=rsa; p="),
        **domain("own.test", spf="v=spf1 mx a -all"),
        **domain("ips.test", spf="v=spf1 ip4:192.0.2.0/24 -all"),
        **domain("twospf.test", spf="v=spf1 -all"),
        **domain("open.test", spf="v=spf1 +all"),
        **domain("nospf.test", spf=None),
        # A subdomain with no DMARC record of its own takes its parent's (sp= first).
        **domain("news.parent.test", dmarc=None),
        "_dmarc.parent.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; aspf=s"]},
        "nomx.test": {"TXT": [SPF], "A": ["192.0.2.7"]},
        "nullmx.test": {"MX": [(0, ".")], "TXT": ["v=spf1 -all"]},
    }
    records["twospf.test"]["TXT"].append(SPF)
    with dns_server(records) as server:
        yield server


async def check(dns: LoopbackDns, from_domain: str, *, smtp_host: str | None = SMTP_HOST,
                selector: str | None = "s1", key: str | None = KEY.public_key) -> SenderCheck:
    return await check_sender(
        from_address=f"Ana Ruiz <ana@{from_domain}>", smtp_host=smtp_host,
        dkim_selector=selector, dkim_public_key=key, resolver=dns.address)


def statuses(result: SenderCheck) -> dict[str, str]:
    return {item.name: item.status for item in result.checks}


def detail(result: SenderCheck, name: str) -> str:
    return next(item.detail for item in result.checks if item.name == name)


async def test_domain_with_every_record_is_ok(dns: LoopbackDns) -> None:
    result = await check(dns, "good.test")
    assert statuses(result) == {"mx": "ok", "spf": "ok", "dkim": "ok", "dmarc": "ok"}
    assert result.ok and result.domain == "good.test"
    assert detail(result, "mx") == "good.test takes mail at 10 mx1.good.test, 20 mx2.good.test"
    assert "covers SMTP host smtp.sendco.test (include:_spf.sendco.test)" in detail(
        result, "spf")
    assert "matches the configured key" in detail(result, "dkim")
    assert detail(result, "dmarc") == (
        "DMARC p=reject at _dmarc.good.test; adkim strict, aspf relaxed: mail signed "
        "d=good.test is aligned")
    # Its record is two TXT strings (over 255 bytes), joined on reading.
    assert len(KEY.public_record()) > 255
    dumped = result.model_dump(mode="json")
    assert dumped["ok"] is True and set(dumped) == {"domain", "checks", "ok"}
    assert set(dumped["checks"][0]) == {"name", "status", "detail"}


async def test_domain_without_dmarc_fails_dmarc_only(dns: LoopbackDns) -> None:
    result = await check(dns, "nodmarc.test")
    assert statuses(result) == {"mx": "ok", "spf": "ok", "dkim": "ok", "dmarc": "fail"}
    assert not result.ok
    assert detail(result, "dmarc").startswith("no DMARC policy at _dmarc.nodmarc.test")


async def test_published_key_that_is_not_the_configured_one_fails_dkim(
        dns: LoopbackDns) -> None:
    result = await check(dns, "wrongkey.test")
    assert statuses(result) == {"mx": "ok", "spf": "ok", "dkim": "fail", "dmarc": "ok"}
    assert detail(result, "dkim").startswith(
        "the published key does not match the configured key (s1._domainkey.wrongkey.test)")
    # The key published there is the other key: configured, it matches.
    assert statuses(await check(dns, "wrongkey.test", key=OTHER_KEY.public_key))["dkim"] == "ok"


async def test_dmarc_p_none_warns(dns: LoopbackDns) -> None:
    result = await check(dns, "monitor.test")
    assert statuses(result) == {"mx": "ok", "spf": "ok", "dkim": "ok", "dmarc": "warn"}
    assert result.ok  # a warning does not fail the check
    assert detail(result, "dmarc").startswith("DMARC p=none at _dmarc.monitor.test: monitoring "
                                              "only")
    assert "adkim relaxed, aspf relaxed: mail signed d=monitor.test is aligned" in detail(
        result, "dmarc")


async def test_dead_resolver_fails_every_check() -> None:
    with silent_resolver() as address:
        result = await check_sender(
            from_address="ana@good.test", smtp_host=SMTP_HOST, dkim_selector="s1",
            dkim_public_key=KEY.public_key, resolver=address, lookup_timeout=0.5)
    assert statuses(result) == {"mx": "fail", "spf": "fail", "dkim": "fail", "dmarc": "fail"}
    assert {item.detail for item in result.checks} == {
        f"no answer from DNS resolver {address} (timed out after 0.5 s)"}
    assert not result.ok


async def test_dkim_forms(dns: LoopbackDns) -> None:
    # Unconfigured: a warning, not a failure, and no lookup.
    unsigned = await check(dns, "good.test", selector=None, key=None)
    assert statuses(unsigned)["dkim"] == "warn"
    assert detail(unsigned, "dkim") == "no DKIM key configured: messages go unsigned"
    assert detail(unsigned, "dmarc").endswith("(this sender signs nothing, so only SPF can "
                                              "align)")
    # The same RSA key published as a bare RSAPublicKey is the configured key.
    assert statuses(await check(dns, "pkcs1.test"))["dkim"] == "ok"
    ed = await check(dns, "ed.test", selector="ed1", key=ED_KEY.public_key)
    assert statuses(ed)["dkim"] == "ok" and "(k=ed25519)" in detail(ed, "dkim")
    assert statuses(await check(dns, "ed.test", selector="ed1"))["dkim"] == "fail"
    missing = await check(dns, "good.test", selector="s9")
    assert detail(missing, "dkim").startswith("no DKIM key published at s9._domainkey.good.test")
    # A 4096-bit key's record does not fit a 512-byte UDP answer: it comes over TCP.
    assert statuses(await check(dns, "big.test", key=BIG_KEY.public_key))["dkim"] == "ok"
    assert dns.resolver.asked("s1._domainkey.big.test", "TXT") == ["udp", "tcp"]
    revoked = await check(dns, "revoked.test")
    assert detail(revoked, "dkim").startswith("the key at s1._domainkey.revoked.test is revoked")


async def test_spf_rules(dns: LoopbackDns) -> None:
    # An outbox sender has no SMTP host to check the policy against.
    assert statuses(await check(dns, "good.test", smtp_host=None))["spf"] == "warn"
    # A policy that names nothing of the host's domain: cannot tell.
    other = await check(dns, "good.test", smtp_host="smtp.elsewhere.test")
    assert statuses(other)["spf"] == "warn"
    assert "cannot tell whether it covers SMTP host smtp.elsewhere.test" in detail(other, "spf")
    # `mx` / `a` of the From domain cover a host in it.
    assert statuses(await check(dns, "own.test", smtp_host="mail.own.test"))["spf"] == "ok"
    # ip4 ranges: a host given as an address in them is covered; a name cannot be told.
    assert statuses(await check(dns, "ips.test", smtp_host="192.0.2.25"))["spf"] == "ok"
    ips = await check(dns, "ips.test")
    assert statuses(ips)["spf"] == "warn" and "ip4/ip6 ranges" in detail(ips, "spf")
    two = await check(dns, "twospf.test")
    assert statuses(two)["spf"] == "fail" and detail(two, "spf").startswith("2 SPF policies")
    assert "+all" in detail(await check(dns, "open.test"), "spf")
    nospf = await check(dns, "nospf.test")
    assert statuses(nospf)["spf"] == "fail"
    assert detail(nospf, "spf").startswith("no SPF policy: nospf.test has no v=spf1 TXT record")


async def test_mx_rules(dns: LoopbackDns) -> None:
    nomx = await check(dns, "nomx.test")
    assert statuses(nomx)["mx"] == "fail"
    assert detail(nomx, "mx").startswith("no MX record for nomx.test")
    assert "null MX" in detail(await check(dns, "nullmx.test"), "mx")
    absent = await check(dns, "absent.test")
    assert statuses(absent) == {"mx": "fail", "spf": "fail", "dkim": "fail", "dmarc": "fail"}
    assert detail(absent, "mx") == "absent.test does not exist in DNS (NXDOMAIN)"


async def test_subdomain_takes_its_parents_dmarc_policy(dns: LoopbackDns) -> None:
    result = await check(dns, "news.parent.test")
    assert statuses(result)["dmarc"] == "ok"
    assert detail(result, "dmarc") == (
        "DMARC p=quarantine at _dmarc.parent.test, for its subdomains; adkim relaxed, "
        "aspf strict: mail signed d=news.parent.test is aligned")


@pytest.mark.parametrize("policy, host, term", [
    ("v=spf1 include:mailgun.org -all", "smtp.mailgun.org", "include:mailgun.org"),
    ("v=spf1 include:spf.protection.outlook.com -all", "smtp.office365.com", None),
    ("v=spf1 -include:sendco.test ~all", "smtp.sendco.test", None),  # a fail term
    ("v=spf1 a:smtp.sendco.test/24 -all", "smtp.sendco.test", "a:smtp.sendco.test/24"),
    ("v=spf1 redirect=_spf.sendco.test", "smtp.sendco.test", "redirect=_spf.sendco.test"),
    ("v=spf1 mx -all", "smtp.sendco.test", None),  # the host is not in acme.test
    ("v=spf1 include:%{d}.spf.test -all", "smtp.sendco.test", None),
    ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::25", "ip6:2001:db8::/32"),
])
def test_spf_covering_term(policy: str, host: str, term: str | None) -> None:
    assert spf_covering_term(policy, "acme.test", host)[0] == term


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:5353", ("127.0.0.1", 5353)), ("10.0.0.2", ("10.0.0.2", 53)),
    ("[::1]:5353", ("::1", 5353)),
])
def test_parse_resolver(value: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(value) == expected


@pytest.mark.parametrize("value", ["dns.example:53", "127.0.0.1:notaport", "127.0.0.1:0"])
async def test_bad_resolver_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="CAMPAIGN_DNS_RESOLVER"):
        await check_sender(from_address="ana@good.test", smtp_host=None, dkim_selector=None,
                           dkim_public_key=None, resolver=value)


async def test_from_without_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="from_address"):
        await check_sender(from_address="Ana Ruiz", smtp_host=None, dkim_selector=None,
                           dkim_public_key=None, resolver="127.0.0.1:53")

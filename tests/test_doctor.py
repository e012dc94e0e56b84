"""`mailer doctor` against a real DNS server, a real STARTTLS relay and the real web app.

Every test starts from a sender set up right (tests/support/doctorworld.py): dnsmasq on a
loopback port serves its zone (tests/support/dnsserver.py), tests/support/smtpserver.py is
the relay with a test CA, uvicorn serves the web app over TLS at public_url. Each test
breaks one thing and checks the finding: its status, and that the fix names the record
(or setting) to publish. No resolver is mocked: the doctor asks dnsmasq over UDP.
"""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.content.dkim import generate_key, private_pem, txt_record
from mailer.doctor.resolver import parse_nameserver
from tests.support.dnsserver import find_dnsmasq
from tests.support.doctorworld import (
    SENDING_IP,
    World,
    arguments,
    make_rsa_key,
    run_doctor,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    if find_dnsmasq() is None:
        pytest.fail("dnsmasq is not installed: apt-get install dnsmasq-base (make test does "
                    "this when run as root)")
    for name in list(os.environ):
        if name.startswith("MAILER_") or name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def key():  # noqa: ANN201
    return make_rsa_key()


@pytest.fixture
def world(tmp_path, key) -> World:
    return World.make(tmp_path, key)


def doctor(world: World, *more: str) -> tuple[int, dict]:
    with world.running() as env:
        return run_doctor(env, *more)


def found(report: dict, check: str, status: str | None = None) -> list[dict]:
    return [f for f in report["findings"]
            if f["check"] == check and (status is None or f["status"] == status)]


def one(report: dict, check: str, status: str) -> dict:
    matches = found(report, check, status)
    assert len(matches) == 1, (check, status, report["findings"])
    return matches[0]


# -- all right ------------------------------------------------------------------------------

def test_a_sender_set_up_right_passes_every_check(world):
    code, report = doctor(world)
    assert [f for f in report["findings"] if f["status"] != "ok"] == []
    assert code == 0 and report["ok"] is True
    checks = {f["check"] for f in report["findings"]}
    assert checks == {"sending_ip", "spf", "dkim", "dmarc", "mx", "ptr", "ehlo", "relay",
                      "public_url", "one_click", "templates", "headers"}
    assert one(report, "relay", "ok")["what"].startswith("smtp://mailer@localhost:")
    assert "login as mailer accepted" in one(report, "relay", "ok")["what"]
    assert "answers 404" in one(report, "one_click", "ok")["what"]
    assert report["checked"]["envelope_domains"] == ["bounce.example.be"]
    assert report["checked"]["sending_ips"] == [SENDING_IP]
    assert report["checked"]["dns_queries"] > 0


def test_the_plain_output_is_a_table_and_then_what_to_do(world):
    world.zone.dmarc = []
    with world.running() as env:
        args = [a for a in arguments(env) if a != "--json"]
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "example.be has no DMARC record" in result.stdout
    assert "Why: Gmail: 421-4.7.40" in result.stdout
    assert '_dmarc.example.be. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.be"' \
        in result.stdout
    assert "1 problem(s) that block delivery" in result.stdout


# -- SPF ------------------------------------------------------------------------------------

def test_no_spf_record_fails_and_says_what_to_publish(world):
    world.zone.spf = []
    code, report = doctor(world)
    finding = one(report, "spf", "fail")
    assert code == 1
    assert "bounce.example.be" in finding["what"] and "no SPF record" in finding["what"]
    assert "4.7.27" in finding["why"] and "5.7.515" in finding["why"]
    assert finding["fix"] == f'bounce.example.be. IN TXT "v=spf1 ip4:{SENDING_IP} ~all"'


def test_two_spf_records_fail_and_the_fix_merges_them(world):
    world.zone.spf = [("v=spf1 include:_spf.example.be -all",), ("v=spf1 mx ~all",)]
    code, report = doctor(world)
    finding = one(report, "spf", "fail")
    assert code == 1 and "2 SPF records" in finding["what"]
    assert finding["fix"].endswith('bounce.example.be. IN TXT "v=spf1 include:_spf.example.be '
                                   f'mx ip4:{SENDING_IP} -all"')


def test_plus_all_fails(world):
    world.zone.spf = [(f"v=spf1 ip4:{SENDING_IP} +all",)]
    code, report = doctor(world)
    finding = one(report, "spf", "fail")
    assert code == 1 and "+all" in finding["what"]
    assert finding["fix"] == f'bounce.example.be. IN TXT "v=spf1 ip4:{SENDING_IP} ~all"'
    assert one(report, "spf", "ok")["what"].startswith("SPF of bounce.example.be passes")


def test_question_mark_all_is_a_warning(world):
    world.zone.spf = [(f"v=spf1 ip4:{SENDING_IP} ?all",)]
    code, report = doctor(world)
    assert code == 0
    assert "?all" in one(report, "spf", "warn")["what"]


def test_more_than_ten_dns_lookups_fail_and_name_each_term(world):
    includes = [f"_s{n}.example.be" for n in range(11)]
    world.zone.spf = [("v=spf1 " + " ".join(f"include:{i}" for i in includes) + " -all",)]
    for name in includes:
        world.zone.extra.txt(name, f"v=spf1 ip4:{SENDING_IP} -all")
    code, report = doctor(world)
    finding = one(report, "spf", "fail")
    assert code == 1
    assert "needs 11 DNS look-ups (the limit is 10)" in finding["what"]
    assert "include:_s0.example.be (1)" in finding["fix"]
    assert 'bounce.example.be. IN TXT ( "v=spf1 include:_s0.example.be' in finding["fix"]


def test_spf_that_does_not_cover_the_sending_address_fails(world):
    world.zone.spf = [("v=spf1 include:_spf.example.be -all",)]
    world.zone.spf_include = [("v=spf1 ip4:198.51.100.0/24 -all",)]
    code, report = doctor(world)
    finding = one(report, "spf", "fail")
    assert code == 1 and f"does not cover {SENDING_IP}" in finding["what"]
    assert "the result is fail" in finding["what"]
    assert "550-5.7.26" in finding["why"]  # -all: Gmail's hard-fail answer
    assert (f'bounce.example.be. IN TXT "v=spf1 include:_spf.example.be ip4:{SENDING_IP} '
            '-all"') in finding["fix"]


# -- DKIM -----------------------------------------------------------------------------------

def test_a_missing_dkim_record_fails_with_the_record_to_publish(world, key):
    world.zone.dkim = []
    code, report = doctor(world)
    finding = one(report, "dkim", "fail")
    assert code == 1 and "mail2026._domainkey.example.be has no TXT record" in finding["what"]
    assert "4.7.30" in finding["why"]
    assert finding["fix"].startswith("mail2026._domainkey.example.be. IN TXT ( ")
    assert _joined(finding["fix"]) == txt_record(key)


def test_a_published_key_that_is_not_the_configured_one_fails(world):
    other = make_rsa_key()
    world.set_key(other)  # the zone still publishes the first key
    code, report = doctor(world)
    finding = one(report, "dkim", "fail")
    assert code == 1 and "publishes another key than dkim/key.pem" in finding["what"]
    assert _joined(finding["fix"]) == txt_record(other)


def test_a_1024_bit_key_is_a_warning(tmp_path):
    world = World.make(tmp_path, make_rsa_key(1024))
    code, report = doctor(world)
    assert code == 0
    finding = one(report, "dkim", "warn")
    assert "RSA 1024 bits" in finding["what"] and "2048" in finding["what"]
    assert "mailer dkim keygen --domain example.be" in finding["fix"]


def test_a_key_cut_at_255_bytes_fails_and_the_fix_cuts_it_in_strings(world, key):
    # What a DNS panel that takes one string does with a longer value: it keeps 255 bytes
    # (one string cannot be longer on the wire).
    value = txt_record(key)
    world.zone.dkim = [(value[:255],)]
    code, report = doctor(world)
    finding = one(report, "dkim", "fail")
    assert code == 1 and "was cut at 255 bytes" in finding["what"]
    strings = re.findall(r'"([^"]*)"', finding["fix"])
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == value


def test_a_key_split_over_two_records_fails(world, key):
    value = txt_record(key)
    world.zone.dkim = [(value[:255],), (value[255:],)]
    code, report = doctor(world)
    finding = one(report, "dkim", "fail")
    assert code == 1 and "split over 2 TXT records" in finding["what"]
    assert _joined(finding["fix"]) == value


def test_no_dkim_key_configured_fails_with_the_command_that_makes_one(world):
    del world.env["MAILER_SENDING__DKIM_KEY"], world.env["MAILER_SENDING__DKIM_SELECTOR"]
    code, report = doctor(world)
    finding = one(report, "dkim", "fail")
    assert code == 1 and "not DKIM-signed" in finding["what"]
    assert "mailer dkim keygen --domain example.be --selector mail" in finding["fix"]


def test_every_configured_key_is_checked(world):
    ed25519 = generate_key("ed25519")
    path = world.folder / "dkim" / "ed.pem"
    path.write_bytes(private_pem(ed25519))
    path.chmod(0o600)
    world.env["MAILER_SENDING__DKIM_KEYS"] = "mail2026e:dkim/ed.pem"
    world.zone.extra.txt("mail2026e._domainkey.example.be", txt_record(ed25519))
    code, report = doctor(world)
    assert code == 0
    keys = [f["what"] for f in found(report, "dkim", "ok")]
    assert any(w.startswith("mail2026._domainkey.example.be") and "RSA 2048" in w
               for w in keys)
    assert any(w.startswith("mail2026e._domainkey.example.be") and "ed25519" in w
               for w in keys)
    assert "signed (2 DKIM signatures)" in one(report, "headers", "ok")["what"]


def _joined(fix: str) -> str:
    return "".join(re.findall(r'"([^"]*)"', fix))


# -- DMARC ----------------------------------------------------------------------------------

def test_no_dmarc_record_fails(world):
    world.zone.dmarc = []
    code, report = doctor(world)
    finding = one(report, "dmarc", "fail")
    assert code == 1 and "example.be has no DMARC record" in finding["what"]
    assert "4.7.40" in finding["why"] and "5.7.515" in finding["why"]
    assert finding["fix"].startswith(
        '_dmarc.example.be. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.be"')


def test_p_none_is_a_warning(world):
    world.zone.dmarc = [("v=DMARC1; p=none; rua=mailto:dmarc@example.be",)]
    code, report = doctor(world)
    assert code == 0
    finding = one(report, "dmarc", "warn")
    assert "p=none" in finding["what"]
    assert ('_dmarc.example.be. IN TXT "v=DMARC1; p=quarantine; '
            'rua=mailto:dmarc@example.be"') in finding["fix"]


def test_a_dmarc_record_without_reports_is_a_warning(world):
    world.zone.dmarc = [("v=DMARC1; p=reject",)]
    code, report = doctor(world)
    assert code == 0
    finding = one(report, "dmarc", "warn")
    assert "no rua=" in finding["what"]
    assert finding["fix"] == ('_dmarc.example.be. IN TXT "v=DMARC1; p=reject; '
                              'rua=mailto:dmarc@example.be"')


def test_from_aligned_with_neither_dkim_nor_the_envelope_fails(world):
    world.env["MAILER_SENDING__DOMAIN"] = "relay-service.net"
    world.env["MAILER_SENDING__BOUNCE_DOMAIN"] = "bounces.relay-service.net"
    code, report = doctor(world)
    alignment = [f for f in found(report, "dmarc", "fail") if "aligned" in f["what"]]
    assert code == 1 and len(alignment) == 1
    assert "neither is aligned" in alignment[0]["what"]
    assert "4.7.32" in alignment[0]["why"] and "5.7.26" in alignment[0]["why"]
    assert 'domain = "example.be"' in alignment[0]["fix"]
    assert 'bounce_domain = "bounce.example.be"' in alignment[0]["fix"]


def test_an_envelope_domain_out_of_line_is_a_warning(world):
    world.env["MAILER_SENDING__BOUNCE_DOMAIN"] = "bounces.relay-service.net"
    code, report = doctor(world)
    alignment = [f for f in found(report, "dmarc", "warn") if "aligned" in f["what"]]
    assert len(alignment) == 1 and "only DKIM is aligned" in alignment[0]["what"]


# -- MX, PTR, EHLO --------------------------------------------------------------------------

def test_no_mx_for_the_bounce_domain_fails(world):
    world.zone.mx = False
    code, report = doctor(world)
    finding = one(report, "mx", "fail")
    assert code == 1 and "bounce.example.be has no MX record" in finding["what"]
    assert "unsub+" in finding["what"]
    assert "bounce.example.be. IN MX 10 mx.bounce.example.be." in finding["fix"]


def test_no_ptr_fails_and_names_the_reverse_record(world):
    world.zone.ptr = None
    code, report = doctor(world)
    finding = one(report, "ptr", "fail")
    assert code == 1 and f"{SENDING_IP} has no PTR record" in finding["what"]
    assert "5.7.25" in finding["why"] and "TSS09" in finding["why"]
    assert "10.2.0.192.in-addr.arpa. IN PTR mail.example.be." in finding["fix"]
    assert f"mail.example.be. IN A {SENDING_IP}" in finding["fix"]


def test_a_ptr_that_does_not_resolve_back_fails(world):
    world.zone.helo_address = "192.0.2.99"
    code, report = doctor(world)
    finding = one(report, "ptr", "fail")
    assert code == 1 and "does not resolve back" in finding["what"]
    assert finding["fix"] == f"Publish\nmail.example.be. IN A {SENDING_IP}"


def test_an_ehlo_name_that_does_not_resolve_is_a_warning(world):
    world.env["MAILER_SENDING__HELO_NAME"] = "nothere.example.be"
    code, report = doctor(world)
    assert code == 0
    finding = one(report, "ehlo", "warn")
    assert "nothere.example.be does not resolve" in finding["what"]
    assert "nothere.example.be. IN A" in finding["fix"]


# -- the relay ------------------------------------------------------------------------------

def test_a_relay_without_starttls_fails(world):
    world.starttls = False
    code, report = doctor(world)
    finding = one(report, "relay", "fail")
    assert code == 1 and "does not offer STARTTLS" in finding["what"]
    assert "smtps://localhost:465" in finding["fix"]


def test_a_relay_with_tls_from_the_first_byte_passes(world):
    world.implicit_tls = True
    code, report = doctor(world)
    assert code == 0
    finding = one(report, "relay", "ok")
    assert finding["what"].startswith("smtps://mailer@localhost:")
    assert "login as mailer accepted" in finding["what"]


def test_a_relay_certificate_for_another_name_fails(world):
    world.relay_host = "relay.example.be"
    world.zone.extra.address("relay.example.be", "127.0.0.1")
    code, report = doctor(world)
    finding = one(report, "relay", "fail")
    assert code == 1 and "not valid for relay.example.be" in finding["what"]
    assert "Hostname mismatch" in finding["what"]
    assert "certificate for relay.example.be" in finding["fix"]


def test_a_refused_login_fails(world):
    world.env["MAILER_SMTP_PASSWORD"] = "wrong"
    code, report = doctor(world)
    finding = one(report, "relay", "fail")
    assert code == 1 and "refuses the login of mailer: 535" in finding["what"]


# -- public_url -----------------------------------------------------------------------------

def test_an_http_public_url_fails(world):
    world.https = False
    code, report = doctor(world)
    finding = one(report, "public_url", "fail")
    assert code == 1 and "not https" in finding["what"]
    assert "RFC 8058" in finding["what"]
    assert finding["fix"].startswith('In mailer.toml: public_url = "https://nieuws.example.be"')
    assert one(report, "headers", "warn")["what"].count("http URL") == 1


def test_an_unreachable_public_url_is_a_warning(world):
    world.https = False
    with world.running() as env:
        env["MAILER_PUBLIC_URL"] = "https://nieuws.example.be:9"  # nothing listens there
        code, report = run_doctor(env)
    assert code == 0
    assert "did not get through" in one(report, "one_click", "warn")["what"]


# -- templates ------------------------------------------------------------------------------

GREETING = """{% extends "layout.html.j2" %}
{% block content %}
<p>Dag {{ subscriber.first_name }},</p>
{% endblock %}
"""


def test_a_campaign_not_yet_sent_is_checked_against_its_real_audience(world):
    """Not against the sample subscriber (who has a first name): the doctor says what
    `campaign send` would refuse, with the counts, and names no one."""
    (world.folder / "templates" / "greeting.html.j2").write_text(GREETING)

    def mailer(*args: str) -> None:
        result = CliRunner().invoke(cli, ["--config", str(world.folder / "mailer.toml"),
                                          *args], env=world.env, catch_exceptions=False)
        assert result.exit_code == 0, result.output

    def members(rows: str) -> None:
        (world.folder / "members.csv").write_text("email,first_name\n" + rows)
        mailer("subscribers", "import", str(world.folder / "members.csv"), "--list",
               "nieuwsbrief", "--consent", "test", "--confirmed")

    members("anneke@example.org,Anneke\nbart@example.org,Bart\n")
    mailer("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
           "templates/greeting.html.j2", "--subject", "Ons nieuws")
    members("cas@example.org,\ndirk@example.org,\n")  # joined since: no first name
    code, report = doctor(world)
    finding = one(report, "templates", "fail")
    assert code == 1 and finding["what"].startswith(
        "The campaign dec (templates/greeting.html.j2), for its 4 recipients: "
        "subscriber.first_name (greeting.html.j2, line 3) is missing for 2 of 4 "
        "recipients")
    assert finding["fix"] == "mailer templates check --campaign dec"
    assert not re.search(r"anneke|bart|cas@|dirk", str(report))  # counts only
    # the list's own template check is that one now; its headers are still checked
    assert len(found(report, "templates")) == 1
    assert one(report, "headers", "ok")["what"].startswith(
        "templates/greeting.html.j2 for the list nieuwsbrief")


# -- the resolver's address -----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353))])
def test_nameserver_addresses(text, expected):
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example.be", "127.0.0.1:x", "[::1]5353", "1.2.3.4:0"])
def test_bad_nameserver_addresses(text):
    with pytest.raises(ValueError):
        parse_nameserver(text)

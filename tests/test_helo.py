"""The EHLO name: `[sending] helo_name`, else this machine's fully qualified name, else the
sending domain; never localhost (SpamAssassin scores HELO localhost 5 points on direct
delivery). Checked at the test SMTP server, on what each EHLO said."""

from __future__ import annotations

import pytest

from mailer.config import Sending, helo_problem
from mailer.delivery import transports
from tests.support.smtpserver import SmtpServer
from tests.test_delivery import configure, create


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


def machine(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """What socket.getfqdn() says on this machine ("localhost" in many containers)."""
    monkeypatch.setattr(transports, "_machine_name", lambda: name)


def ehlo_after_a_test_send(run, smtp: SmtpServer) -> list[str]:  # noqa: ANN001
    create(run)
    result = run("campaign", "test", "dec", "--to", "me@example.be")
    assert result.exit_code == 0, result.output
    assert smtp.recipients() == ["me@example.be"]
    assert smtp.ehlo_names
    return smtp.ehlo_names


def test_the_configured_helo_name_is_said(run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    machine(monkeypatch, "localhost")
    monkeypatch.setenv("MAILER_SENDING__HELO_NAME", "mailer.voorbeeld.be")
    assert set(ehlo_after_a_test_send(run, smtp)) == {"mailer.voorbeeld.be"}


def test_a_fully_qualified_machine_name_is_the_default(run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    machine(monkeypatch, "mx1.voorbeeld.be")
    monkeypatch.setenv("MAILER_SENDING__DOMAIN", "voorbeeld.be")
    assert set(ehlo_after_a_test_send(run, smtp)) == {"mx1.voorbeeld.be"}


def test_localhost_as_the_machine_name_gives_the_sending_domain(run, project, smtp,
                                                               monkeypatch):
    configure(monkeypatch, smtp)
    machine(monkeypatch, "localhost")
    monkeypatch.setenv("MAILER_SENDING__DOMAIN", "voorbeeld.be")
    assert set(ehlo_after_a_test_send(run, smtp)) == {"voorbeeld.be"}


@pytest.mark.parametrize("name", ["localhost", "localhost.localdomain", "vm", "vm.local",
                                  "ip-10-0-0-7.eu-west-1.compute.internal", "127.0.0.1",
                                  "::1", ""])
def test_a_machine_name_that_is_not_fully_qualified_is_passed_over(monkeypatch, name):
    machine(monkeypatch, name)
    assert transports.default_helo_name("voorbeeld.be") == "voorbeeld.be"
    assert transports.default_helo_name("") is None  # then: the envelope sender's domain
    machine(monkeypatch, "mx1.voorbeeld.be.")
    assert transports.default_helo_name("voorbeeld.be") == "mx1.voorbeeld.be"


def test_without_a_sending_domain_the_envelope_domain_is_said(run, project, smtp,
                                                              monkeypatch):
    configure(monkeypatch, smtp)
    machine(monkeypatch, "localhost")
    monkeypatch.delenv("MAILER_SENDING__DOMAIN", raising=False)
    # the envelope sender is bounces+TOKEN@ the From domain of lists/nieuwsbrief.toml
    assert set(ehlo_after_a_test_send(run, smtp)) == {"example.be"}


@pytest.mark.parametrize("name, problem", [
    ("localhost", "localhost"), ("LOCALHOST.localdomain", "localhost"),
    ("mail.localhost", "localhost"), ("mail", "fully qualified"),
    ("192.0.2.1", "[192.0.2.1]"), ("mail_1.example.be", "not a host name"),
    ("-mail.example.be", "not a host name"), ("[999.1.1.1]", "address literal"),
])
def test_a_configured_helo_name_must_be_fully_qualified_and_not_localhost(name, problem):
    assert problem in (helo_problem(name) or "")
    with pytest.raises(ValueError, match="helo_name"):
        Sending(helo_name=name)


@pytest.mark.parametrize("name", ["mail.example.be", "mail.example.be.", "[192.0.2.1]",
                                  "[IPv6:2001:db8::1]", "xn--bcher-kva.example"])
def test_a_helo_name_can_be_a_domain_or_an_address_literal(name):
    assert helo_problem(name) is None
    assert Sending(helo_name=name).helo_name == name

"""Address normalisation: the fast path agrees with email-validator on every input."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.audience.addresses import InvalidAddress, needs_smtputf8, normalise_address


def reference(raw: str) -> str | None:
    """What the library says, after our own strip and control-character rule."""
    value = raw.strip()
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def ours(raw: str) -> str | None:
    try:
        return normalise_address(raw)
    except InvalidAddress:
        return None


@pytest.mark.parametrize("raw, expected", [
    ("an@example.be", "an@example.be"),
    ("  An.Peeters@Example.BE ", "an.peeters@example.be"),
    ("o'brien+news@example.ie", "o'brien+news@example.ie"),
    ('"quoted local"@example.be', None),
    (".dot@example.be", None),
    ("dot.@example.be", None),
    ("do..t@example.be", None),
    ("jürgen@müller.de", "jürgen@müller.de"),
    ("x@xn--mller-kva.de", "x@müller.de"),
    ("a" * 64 + "@example.be", "a" * 64 + "@example.be"),
    # The library checks the total length, not the 64-octet local part (non-strict mode).
    ("a" * 65 + "@example.be", "a" * 65 + "@example.be"),
    ("a" * 250 + "@example.be", None),
    ("a@b", None),
    ("x@localhost", None),
    ("x@foo.test", None),
    ("an@example.be\r\nBcc: x@example.org", None),
    ("An <an@example.be>", None),
    ("", None),
    ("@example.be", None),
    ("an@", None),
    ("an@exa_mple.be", None),
    ("an@-example.be", None),
])
def test_known_cases(raw, expected):
    assert ours(raw) == expected
    if "\r" not in raw:
        assert reference(raw) == expected


def test_error_messages_are_plain():
    with pytest.raises(InvalidAddress, match="line break"):
        normalise_address("a@example.be\nBcc: b@example.be")
    with pytest.raises(InvalidAddress, match="empty"):
        normalise_address("   ")


def test_cache_does_not_leak_a_verdict_between_addresses():
    assert ours("a@bad_domain.be") is None
    assert ours("b@bad_domain.be") is None
    assert ours("a@good-domain.be") == "a@good-domain.be"
    assert ours("a..b@good-domain.be") is None


LOCAL_CHARS = st.sampled_from(list("abcXYZ019.-_+'!#$%&*/=?^`{|}~\"() ,:;<>[]\\@éß😀"))
DOMAIN_LABEL = st.text(alphabet="abcxyz019-_éü", min_size=0, max_size=12)
DOMAINS = st.one_of(
    st.lists(DOMAIN_LABEL, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["example.be", "EXAMPLE.com", "xn--mller-kva.de", "localhost",
                     "foo.test", "[127.0.0.1]", "a" * 64 + ".be", "müller.de"]),
)
ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}",
                      st.text(alphabet=LOCAL_CHARS, min_size=0, max_size=70), DOMAINS)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(ADDRESSES, st.text(max_size=40)))
def test_fast_path_agrees_with_the_library(raw):
    assert ours(raw) == reference(raw)


@pytest.mark.parametrize("raw, utf8", [
    ("an@example.be", False),
    ("Chloë@example.be", True),
    ("x@xn--mller-kva.de", False),  # kept as müller.de, sent as xn--mller-kva.de
    ("jürgen@müller.de", True),
    ("o'brien+news@example.ie", False),
])
def test_needs_smtputf8(raw, utf8):
    assert needs_smtputf8(normalise_address(raw)) is utf8

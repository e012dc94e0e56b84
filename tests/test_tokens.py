"""Tokens: round trip, tamper-proof, opaque, expiring, rotatable, VERP-safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.tokens import Purpose, Signer, TokenError

SECRET = b"a-secret-of-sufficient-length-0123456789"
signer = Signer(SECRET)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

ids = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=300)
@given(ids, small, small, st.sampled_from(list(Purpose)), st.booleans())
def test_round_trip(subscriber, list_id, campaign, purpose, lowercase):
    token = signer.make(purpose, subscriber, list_id, campaign, now=NOW, lowercase=lowercase)
    data = signer.read(token, purpose)
    assert (data.subscriber_id, data.list_id, data.campaign_id) == (subscriber, list_id,
                                                                  campaign)
    assert data.issued_at == NOW
    assert len(token) == (55 if lowercase else 46)
    if lowercase:
        assert token == token.lower() and token.isalnum()
        assert signer.read(token.upper(), purpose).subscriber_id == subscriber
    else:
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_")


@settings(max_examples=300)
@given(ids, st.data())
def test_any_changed_character_is_rejected(subscriber, data):
    lowercase = data.draw(st.booleans())
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber, 7, now=NOW, lowercase=lowercase)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567" if lowercase else (
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    new = data.draw(st.sampled_from([c for c in alphabet if c != token[at].lower()
                                     and c != token[at]]))
    forged = token[:at] + new + token[at + 1:]
    with pytest.raises(TokenError):
        signer.read(forged, Purpose.UNSUBSCRIBE)


@pytest.mark.parametrize("bad", ["", "x", "A" * 46, "a" * 55, "not a token at all!",
                                 "../../etc/passwd", "%00" * 20])
def test_garbage_is_rejected(bad):
    with pytest.raises(TokenError):
        signer.read(bad, Purpose.UNSUBSCRIBE)


def test_truncated_and_wrong_purpose_are_rejected():
    token = signer.make(Purpose.UNSUBSCRIBE, 42, 1, now=NOW)
    with pytest.raises(TokenError):
        signer.read(token[:-1], Purpose.UNSUBSCRIBE)
    with pytest.raises(TokenError):
        signer.read(token, Purpose.CONFIRM)


def test_ids_are_not_visible_in_the_token():
    a = signer.make(Purpose.UNSUBSCRIBE, 1, 1, now=NOW)
    b = signer.make(Purpose.UNSUBSCRIBE, 2, 1, now=NOW)
    # Consecutive ids give unrelated tokens (beyond the two header bytes).
    shared = sum(x == y for x, y in zip(a[3:], b[3:], strict=True))
    assert shared < 10


def test_expiry():
    token = signer.make(Purpose.CONFIRM, 5, 1, now=NOW)
    assert signer.read(token, Purpose.CONFIRM, max_age=timedelta(days=7),
                       now=NOW + timedelta(days=6)).subscriber_id == 5
    with pytest.raises(TokenError) as caught:
        signer.read(token, Purpose.CONFIRM, max_age=timedelta(days=7),
                    now=NOW + timedelta(days=7, minutes=2))
    assert caught.value.expired


def test_rotation_keeps_old_links_until_the_old_key_is_dropped():
    old = Signer(b"the-old-secret-key-xxxxxxxxxxxxxxx")
    token = old.make(Purpose.UNSUBSCRIBE, 9, 3, now=NOW)
    rotated = Signer(b"the-new-secret-key-yyyyyyyyyyyyyyy",
                     previous=[b"the-old-secret-key-xxxxxxxxxxxxxxx"])
    assert rotated.read(token, Purpose.UNSUBSCRIBE).subscriber_id == 9
    assert rotated.make(Purpose.UNSUBSCRIBE, 9, 3, now=NOW) != token
    with pytest.raises(TokenError):
        Signer(b"the-new-secret-key-yyyyyyyyyyyyyyy").read(token, Purpose.UNSUBSCRIBE)


def test_short_secret_is_refused():
    with pytest.raises(Exception, match="too short"):
        Signer(b"short")

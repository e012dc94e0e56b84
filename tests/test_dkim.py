"""DKIM: our OpenSSL-backed signatures verify with dkimpy, cover the RFC 8058 headers, and
break when a signed header is changed or added."""

from __future__ import annotations

from datetime import UTC, datetime

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content.compose import Composer
from mailer.content.dkim import Signer, generate_key, txt_record

KEYS = {alg: generate_key(alg) for alg in ("ed25519", "rsa")}
COMPOSER = Composer(from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                    reply_to="info@example.be", list_name="Nieuwsbrief",
                    list_id="nieuwsbrief.example.be", feedback_id="dec:nieuwsbrief:mailer",
                    boundary="=_mailer_alt_1")


def message(name: str = "An", subject: str = "Nieuws", text: str = "Dag An\n") -> bytes:
    return COMPOSER.compose(
        to_address="an@example.be", to_name=name, subject=subject, text=text,
        html=f"<p>{text}</p>", unsubscribe_url="https://nieuws.example.be/u/TOKEN",
        unsubscribe_mailto="mailto:u@example.be?subject=TOKEN",
        message_id="x.1@example.be", date=datetime(2026, 12, 1, tzinfo=UTC)).data


def dns_for(algorithm: str):  # noqa: ANN201
    record = txt_record(KEYS[algorithm]).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.example.be."
        return record
    return dnsfunc


def verify(signed: bytes, algorithm: str) -> bool:
    return dkim.verify(signed, dnsfunc=dns_for(algorithm))


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_signature_verifies_with_dkimpy_and_covers_the_list_headers(algorithm):
    signer = Signer(KEYS[algorithm], domain="example.be", selector="mail2026")
    signed = signer.sign(message())
    assert verify(signed, algorithm)
    header = signed.split(b"\r\n\r\n")[0].decode()
    h = header.split("h=")[1].split(";")[0].replace("\r\n", "").replace(" ", "").split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                 "list-unsubscribe-post", "feedback-id", "mime-version", "content-type"):
        assert name in h
    assert f"a={algorithm}-sha256" in header
    assert max(len(line) for line in header.split("\r\n")) <= 78


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
@pytest.mark.parametrize("tamper", [
    lambda m: m.replace(b"Subject: Nieuws", b"Subject: Nieuwz"),
    lambda m: m.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
    lambda m: m[:-60] + bytes([m[-60] ^ 1]) + m[-59:],  # one bit of the body
    lambda m: m.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil.example>\r\n\r\n",
                        1),
    lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: boss@example.be\r\n\r\n", 1),
])
def test_changing_or_adding_a_signed_header_breaks_the_signature(algorithm, tamper):
    signed = Signer(KEYS[algorithm], domain="example.be", selector="mail2026").sign(message())
    assert verify(signed, algorithm)
    assert not verify(tamper(signed), algorithm)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=30), st.text(max_size=80), st.text(max_size=200))
def test_every_generated_message_verifies(name, subject, text):
    signer = Signer(KEYS["ed25519"], domain="example.be", selector="mail2026")
    assert verify(signer.sign(message(name, subject, text)), "ed25519")


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_keygen_writes_a_private_key_and_prints_a_record_that_verifies(tmp_path, monkeypatch,
                                                                       algorithm):
    import json
    import stat

    from click.testing import CliRunner

    from mailer.cli import cli
    from mailer.content.dkim import load_key

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be",
                                      "--selector", "mail2026", "--algorithm", algorithm,
                                      "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    path = tmp_path / info["key_file"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert info["name"] == "mail2026._domainkey.example.be"
    signed = Signer(load_key(path), domain="example.be", selector="mail2026").sign(message())
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: info["value"].encode())
    again = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be",
                                     "--selector", "mail2026", "--algorithm", algorithm])
    assert again.exit_code == 1 and "exists already" in again.stderr

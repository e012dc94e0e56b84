"""Composition: the bytes-built message reads exactly like the stdlib's, and no value can
add a header."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content.compose import Composer

DATE = datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC)
COMPOSER = Composer(from_name="Voorbeeld vzw — nieuws", from_address="nieuws@example.be",
                    reply_to="info@example.be", list_name="Nieuwsbrief",
                    list_id="nieuwsbrief.example.be", feedback_id="dec-2026:nieuwsbrief:mailer",
                    boundary="=_mailer_alt_1")
UNSUB = "https://nieuws.example.be/u/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIS"
MAILTO = "mailto:unsubscribe@example.be?subject=AAECAwQF"

PARSE = BytesParser(policy=policy.default)


def one_line(value: str) -> str:
    """What compose() promises for names and subjects: controls become spaces, and white
    space runs one space."""
    return " ".join("".join(" " if ord(c) < 32 or 127 <= ord(c) <= 159 else c
                            for c in value).split())


def stdlib(to_name: str | None, to_address: str, subject: str, text: str,
           html: str) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["Date"] = DATE
    msg["From"] = Address("Voorbeeld vzw — nieuws", addr_spec="nieuws@example.be")
    msg["Reply-To"] = "info@example.be"
    msg["To"] = Address(one_line(to_name or ""), addr_spec=to_address)
    msg["Subject"] = one_line(subject)
    msg["Message-ID"] = "<abc.123@mail.example.be>"
    msg["List-Id"] = "Nieuwsbrief <nieuwsbrief.example.be>"
    msg["List-Unsubscribe"] = f"<{UNSUB}>, <{MAILTO}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Feedback-ID"] = "dec-2026:nieuwsbrief:mailer"
    msg["Precedence"] = "bulk"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


def ours(to_name: str | None, to_address: str, subject: str, text: str, html: str):  # noqa: ANN201
    return COMPOSER.compose(to_address=to_address, to_name=to_name, subject=subject,
                            text=text, html=html, unsubscribe_url=UNSUB,
                            unsubscribe_mailto=MAILTO, message_id="abc.123@mail.example.be",
                            date=DATE)


HEADERS = ["Date", "From", "Reply-To", "To", "Subject", "Message-ID", "List-Id",
           "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID", "Precedence",
           "Auto-Submitted", "X-Auto-Response-Suppress", "MIME-Version"]

names = st.one_of(st.none(), st.text(max_size=40), st.sampled_from([
    "An Peeters", "Jürgen Müller", "Zoë \"Z\" O'Brien", "Straße", "😀 Emoji Fan",
    "Evil\r\nBcc: victim@example.org", "a, b; c <d>", "=?utf-8?b?Zm9v?=", "  ", "\\back",
    "ééééééééééééééééééééééééé éééééééééé Müller", "000000000000000¡¡¡¡¡¡¡𐀀𐀀𐀀 𐀀"]))
subjects = st.one_of(st.text(max_size=120), st.sampled_from([
    "Ons nieuws van december", "Hallo\r\nBcc: x@example.org", "Ça va, Jürgen? 🎄",
    "x" * 200, "word " * 40]))
bodies = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                        blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e\x85"
                                                             "\u2028\u2029"), max_size=300)


@settings(max_examples=200, deadline=None)
@given(names, subjects, bodies)
def test_bytes_built_message_parses_like_the_stdlib_one(to_name, subject, text):
    html = f"<p>{text}</p>"
    built = ours(to_name, "an@example.be", subject, text, html)
    reference = PARSE.parsebytes(stdlib(to_name, "an@example.be", subject, text, html)
                                 .as_bytes())
    parsed = PARSE.parsebytes(built.data)
    # The display name and the subject read back as given (Python's own output for long
    # non-ASCII values can gain or lose a space between encoded-words when parsed back:
    # subject "0000 0000¡¡¡ࠀ𐀀𐀀𐀀𐀀𐀀𐀀 ¡" comes back without the space before "¡"; ours must not).
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (one_line(to_name or ""), "an@example.be")
    assert str(parsed["Subject"]) == one_line(subject)
    for name in HEADERS:  # folding white space is not part of a value
        if name in ("To", "Subject"):
            continue
        assert " ".join(str(parsed[name]).split()) == " ".join(str(reference[name]).split()), \
            name
    assert len(parsed.get_all("To")) == 1 and parsed.get_all("Bcc") is None
    assert sorted(parsed.keys()) == sorted(reference.keys())
    assert parsed.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        assert parsed.get_body((kind,)).get_content().replace("\r\n", "\n") == \
            reference.get_body((kind,)).get_content().replace("\r\n", "\n")
    for line in built.data.split(b"\r\n"):
        assert len(line) <= 998
    assert b"\n" not in built.data.replace(b"\r\n", b"")


def test_header_injection_cannot_add_a_header():
    built = ours("Evil\r\nBcc: victim@example.org", "an@example.be",
                 "Hi\nBcc: other@example.org\r\nX-Evil: 1", "t", "<p>t</p>")
    parsed = PARSE.parsebytes(built.data)
    assert parsed.get_all("Bcc") is None and parsed.get_all("X-Evil") is None
    assert parsed["Subject"] == "Hi Bcc: other@example.org X-Evil: 1"


def test_non_ascii_address_needs_smtputf8():
    built = ours("Jürgen", "jürgen@müller.de", "Hallo", "t", "<p>t</p>")
    assert built.smtputf8
    # RFC 6532: the header is UTF-8 on the wire (Python's parser reads it as text).
    from email.parser import Parser

    parsed = Parser(policy=policy.default).parsestr(built.data.decode("utf-8"))
    assert parsed["To"].addresses[0].addr_spec == "jürgen@müller.de"
    assert parsed["To"].addresses[0].display_name == "Jürgen"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_base64_bodies_are_the_stdlib_encoding(text):
    from base64 import encodebytes

    from mailer.content.compose import _base64

    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    if not expected.endswith("\n"):
        expected += "\n"
    data = expected.replace("\n", "\r\n").encode("utf-8", "surrogatepass")
    assert _base64(text) == encodebytes(data).replace(b"\n", b"\r\n")


@settings(max_examples=100, deadline=None)
@given(bodies, st.binary(max_size=5000))
def test_attachments_follow_the_bodies_byte_for_byte(text, data):
    from mailer.content.compose import Attachment

    plain = ours("An", "an@example.be", "Je gegevens", text, f"<p>{text}</p>")
    built = COMPOSER.compose(
        to_address="an@example.be", to_name="An", subject="Je gegevens", text=text,
        html=f"<p>{text}</p>", unsubscribe_url=UNSUB, unsubscribe_mailto=MAILTO,
        message_id="abc.123@mail.example.be", date=DATE,
        attachments=[Attachment("gegevens.json", "application/json", data)])
    parsed, alone = PARSE.parsebytes(built.data), PARSE.parsebytes(plain.data)
    assert parsed.get_content_type() == "multipart/mixed" and not parsed.defects
    for name in HEADERS:
        assert parsed[name] == alone[name], name
    for kind in ("plain", "html"):
        assert parsed.get_body((kind,)).get_content() == alone.get_body((kind,)).get_content()
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == "gegevens.json"
    assert attachment.get_content_type() == "application/json"
    assert attachment.get_payload(decode=True) == data
    for line in built.data.split(b"\r\n"):
        assert len(line) <= 998


def test_an_attachment_name_cannot_add_a_header():
    from mailer.content.compose import Attachment

    for name in ("a\r\nBcc: x@example.org", 'a".json', "", "../etc/passwd"):
        with pytest.raises(ValueError):
            Attachment(name, "application/json", b"{}")
    with pytest.raises(ValueError):
        Attachment("a.json", "application/json\r\nX-Evil: 1", b"{}")

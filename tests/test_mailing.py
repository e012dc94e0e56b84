"""The whole message path: template + subject + list -> personalised, signed bytes with
the RFC 8058 headers and a VERP envelope sender whose token leads back to the delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.content.dkim import Signer as DkimSigner
from mailer.content.dkim import generate_key, txt_record
from mailer.content.environment import TemplateProblem
from mailer.content.mailing import CampaignInfo, ListInfo, Mailing, Recipient, load_sources
from mailer.tokens import Purpose, Signer, TokenError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ORG = {"name": "Voorbeeld vzw", "address": "Voorbeeldstraat 1, 9000 Gent",
       "website": "https://www.example.be", "email": "info@example.be", "logo_url": "",
       "primary_colour": "#1f5f8b", "accent_colour": "#f2a900"}
LIST = ListInfo(id=3, slug="nieuwsbrief", name="Nieuwsbrief", language="nl",
                from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                reply_to="info@example.be")
CAMPAIGN = CampaignInfo(id=11, slug="dec-2026", title="Ons nieuws van december")
SUBJECT = "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws van december"
TOKENS = Signer(b"test-secret-key-0123456789abcdef")
KEYS = {alg: generate_key(alg) for alg in ("ed25519", "rsa")}
NOW = datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC)
PARSE = BytesParser(policy=policy.default)
AN = Recipient(subscriber_id=42, email="an@example.be", first_name="An",
               last_name="Peeters", language="nl", attributes={"Gemeente": "Gent"})


def mailing(template: str = "newsletter.html.j2", folder: Path = TEMPLATES,
            dkim_key: str | None = None, subject: str = SUBJECT) -> Mailing:
    signer = DkimSigner(KEYS[dkim_key], domain="example.be", selector="mail2026") \
        if dkim_key else None
    return Mailing(sources=load_sources(folder, template), subject=subject,
                   mailing_list=LIST, campaign=CAMPAIGN, organisation=ORG,
                   public_url="https://nieuws.example.be/", tokens=TOKENS,
                   bounce_domain="bounce.example.be", feedback_sender="voorbeeld",
                   dkim=signer)


def parts(data: bytes) -> tuple:  # noqa: ANN001
    msg = PARSE.parsebytes(data)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content().replace("\r\n", "\n")
    return msg, text, html


def test_a_newsletter_message_has_every_header_and_one_recipient():
    message = mailing().message(AN, now=NOW)
    msg, text, html = parts(message.data)
    assert msg["To"] == "An Peeters <an@example.be>"
    assert msg["From"] == "Voorbeeld vzw <nieuws@example.be>"
    assert msg["Reply-To"] == "info@example.be"
    assert msg["Subject"] == "An, ons nieuws van december"
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"] == f"<{message.message_id}>"
    assert message.message_id.endswith("@example.be")
    # Time first: Message-IDs sort in the order they were made (their index grows at its end).
    later = mailing().message(AN, now=NOW + timedelta(seconds=1))
    assert message.message_id.split(".")[0] == f"{int(NOW.timestamp()):08x}"
    assert message.message_id < later.message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "Nieuwsbrief <nieuwsbrief.example.be>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Feedback-ID"] == "dec-2026:nieuwsbrief:voorbeeld"
    assert msg["Precedence"] == "bulk"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg.get_content_type() == "multipart/alternative"
    for name in ("Cc", "Bcc"):
        assert msg[name] is None
    https, mailto = [v.strip(" <>") for v in str(msg["List-Unsubscribe"]).split(",")]
    assert https.startswith("https://nieuws.example.be/u/")
    assert mailto.startswith("mailto:unsub+") and "@bounce.example.be" in mailto
    assert f'href="{https}"' in html  # the visible unsubscribe link is the same URL
    assert https in text and "Beste An" in text and "Beste An" in html
    assert "Ons nieuws van december" in html and "Met vriendelijke groeten" in html


def test_the_envelope_sender_token_leads_back_to_the_delivery_and_cannot_be_forged():
    message = mailing().message(AN, now=NOW)
    local, _, domain = message.envelope_from.partition("@")
    assert domain == "bounce.example.be" and local.startswith("bounces+")
    assert len(local) <= 64 and local == local.lower()
    token = local.removeprefix("bounces+")
    data = TOKENS.read(token, Purpose.MESSAGE)
    assert (data.subscriber_id, data.list_id, data.campaign_id) == (42, 3, 11)
    msg = PARSE.parsebytes(message.data)
    link = str(msg["List-Unsubscribe"]).split("/u/")[1].split(">")[0]
    assert TOKENS.read(link, Purpose.MESSAGE) == data  # the link carries the same token
    other = Recipient(subscriber_id=43, email="bo@example.be")
    assert mailing().message(other, now=NOW).envelope_from != message.envelope_from
    for forged in (token[:-1] + ("a" if token[-1] != "a" else "b"), token[:-2]):
        with pytest.raises(TokenError):
            TOKENS.read(forged, Purpose.MESSAGE)
    with pytest.raises(TokenError):
        Signer(b"another-secret-key-0123456789ab").read(token, Purpose.MESSAGE)


def test_missing_personal_fields_use_the_default_and_language_picks_the_texts():
    nameless = Recipient(subscriber_id=7, email="x@example.be", language="en")
    msg, text, html = parts(mailing().message(nameless, now=NOW).data)
    assert msg["Subject"] == "Beste lezer, ons nieuws van december"
    assert msg["To"] == "x@example.be"
    assert "Dear reader" in html and "Kind regards" in text and "Unsubscribe" in html
    dutch = Recipient(subscriber_id=8, email="y@example.be", language=None)
    _, _, html = parts(mailing().message(dutch, now=NOW).data)
    assert "Beste lezer" in html and "Uitschrijven" in html  # the list's language


def test_a_template_may_bring_its_own_text_part(tmp_path):
    for path in TEMPLATES.rglob("*.j2"):
        target = tmp_path / path.relative_to(TEMPLATES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (tmp_path / "newsletter.txt.j2").write_text(
        "Hallo {{ subscriber.first_name }}!\nUitschrijven: {{ urls.unsubscribe }}\n")
    _, text, html = parts(mailing(folder=tmp_path).message(AN, now=NOW).data)
    assert text.startswith("Hallo An!\nUitschrijven: https://nieuws.example.be/u/")
    assert "<table" in html


def test_markdown_body_in_the_house_style(tmp_path):
    for path in TEMPLATES.rglob("*.j2"):
        target = tmp_path / path.relative_to(TEMPLATES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (tmp_path / "kort.md.j2").write_text(
        "# {{ campaign.title }}\n\n"
        "Beste {{ subscriber.first_name | default('lezer') }},\n\n"
        "{% if subscriber.attributes.Gemeente is defined %}\n"
        "Ook in **{{ subscriber.attributes.Gemeente }}** is er nieuws.\n"
        "{% endif %}\n\n"
        "* een\n* twee & <drie>\n\n"
        "[Je voorkeuren]({{ urls.preferences }})\n")
    shouty = Recipient(subscriber_id=5, email="z@example.be", first_name="<Zoë & Co>",
                       attributes={"Gemeente": "Gent"})
    msg, text, html = parts(mailing("kort.md.j2", folder=tmp_path).message(shouty, now=NOW)
                            .data)
    assert "<h1" in html and "Ons nieuws van december</h1>" in html
    assert "Beste &lt;Zoë &amp; Co&gt;," in html  # autoescaped like any HTML template
    assert "<strong>Gent</strong>" in html and "<li" in html
    assert 'href="https://nieuws.example.be/p/' in html
    assert "Voorbeeldstraat 1" in html and "Uitschrijven" in html  # inside the layout
    assert 'style="' in html and "<style" not in html  # inlined once
    assert "Beste <Zoë & Co>," in text and "Je voorkeuren (https://nieuws.example.be/p/" in text
    nowhere = Recipient(subscriber_id=6, email="w@example.be")
    _, _, html = parts(mailing("kort.md.j2", folder=tmp_path).message(nowhere).data)
    assert "Ook in" not in html and "Beste lezer" in html


def test_a_template_error_names_the_template_and_stays_one_line(tmp_path):
    (tmp_path / "bad.html.j2").write_text(
        "<p>{{ subscriber.first_name.__class__.__mro__ }}</p>"
        '<a href="{{ urls.unsubscribe }}">x</a>')
    with pytest.raises(TemplateProblem) as caught:
        mailing("bad.html.j2", folder=tmp_path).message(AN)
    assert "not allowed" in str(caught.value) or "unsafe" in str(caught.value)
    assert "\n" not in str(caught.value)
    (tmp_path / "typo.html.j2").write_text("<p>{{ subscriber.frist_name }}</p>")
    with pytest.raises(TemplateProblem, match="frist_name"):
        mailing("typo.html.j2", folder=tmp_path).message(AN)


names = st.one_of(st.none(), st.text(max_size=30), st.sampled_from([
    "Jürgen", "Straße", "😀", "Evil\r\nBcc: victim@example.org", "Zoë \"Z\" O'Brien"]))
attributes = st.dictionaries(st.sampled_from(["Gemeente", "since"]),
                             st.text(max_size=20), max_size=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 2**40), names, names, st.sampled_from(["nl", "en", None]), attributes,
       st.sampled_from(["ed25519", "rsa"]))
def test_every_signed_message_verifies_with_dkimpy(subscriber_id, first, last, language,
                                                   attrs, algorithm):
    recipient = Recipient(subscriber_id=subscriber_id, email="an@example.be",
                          first_name=first, last_name=last, language=language,
                          attributes=attrs)
    message = SIGNED[algorithm].message(recipient)  # dkimpy refuses a t= in the future
    record = txt_record(KEYS[algorithm]).encode()
    assert dkim.verify(message.data, dnsfunc=lambda name, timeout=5: record)
    msg = PARSE.parsebytes(message.data)
    assert [a.addr_spec for a in msg["To"].addresses] == ["an@example.be"]
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert not msg.defects and all(not part.defects for part in msg.walk())


SIGNED = {alg: mailing(dkim_key=alg) for alg in KEYS}


@pytest.mark.parametrize("language, words", [
    ("nl", ["Bevestig je inschrijving", "Ja, schrijf me in", "AVG"]),
    ("en", ["Please confirm your subscription", "Yes, subscribe me", "GDPR"])])
def test_confirmation_mail_in_the_house_style_has_the_link_and_no_unsubscribe(language,
                                                                            words):
    confirm = "https://nieuws.example.be/c/CONFIRMTOKEN"
    mail = mailing("confirm.html.j2", subject="{{ t.confirm_subject | replace('{list}', "
                                              "list.name) }}")
    person = Recipient(subscriber_id=9, email="new@example.be", language=language)
    msg, text, html = parts(mail.message(person, extra_urls={"confirm": confirm}).data)
    for word in words:
        assert word in html
    assert f'href="{confirm}"' in html and confirm in text
    assert "/u/" not in html and "Voorbeeldstraat 1" in html  # signature, no unsubscribe
    assert msg["Subject"].endswith("Nieuwsbrief")


@pytest.mark.parametrize("language, word", [("nl", "Welkom bij Nieuwsbrief"),
                                            ("en", "Welcome to Nieuwsbrief")])
def test_welcome_mail_in_the_house_style(language, word):
    person = Recipient(subscriber_id=9, email="new@example.be", language=language)
    _, text, html = parts(mailing("welcome.html.j2").message(person).data)
    assert word in html and "/u/" in html and "/p/" in html and "Voorbeeld vzw" in text

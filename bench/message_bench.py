"""Benchmark: microseconds per message from template to signed bytes.

Runs the engine's own pipeline (mailer.content.mailing.Mailing) on a ~6 KB newsletter in
the house style with 5 personal fields (first name, last name, e-mail, city, member
since). Prints the once-per-campaign costs (premailer's CSS inlining on its own line),
then per message: render + compose (tokens, three Jinja renders, MIME bytes); + ed25519
signature; + RSA-2048 signature; the same for a newsletter whose every paragraph is
personalised; and, measured in the same run, the stdlib EmailMessage build and dkimpy's
signature of the same message.

    .venv/bin/python bench/message_bench.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402

from mailer.content.dkim import Signer, generate_key, private_pem  # noqa: E402
from mailer.content.mailing import (  # noqa: E402
    CampaignInfo,
    ListInfo,
    Mailing,
    Recipient,
    load_sources,
)
from mailer.content.textpart import html_to_text  # noqa: E402
from mailer.tokens import Signer as TokenSigner  # noqa: E402

STATIC = ("<p>Deze maand organiseren we een open dag in de nieuwe werkplaats. Kom langs met "
          "de familie: er is koffie, taart en een rondleiding. Wie wil, kan meteen "
          "inschrijven voor de workshops van het voorjaar. <a href=\"https://www.example.be/"
          "agenda?ref={{ campaign.slug }}\">Bekijk de agenda</a>.</p>\n")
PERSONAL = ("<p>In {{ subscriber.attributes.city | default('je buurt') }} organiseren we "
            "deze maand een open dag. Kom langs met de familie, {{ subscriber.first_name "
            "| default('beste lezer') }}: er is koffie, taart en een rondleiding door de "
            "nieuwe werkplaats. Lid sinds {{ subscriber.attributes.since }}? Dan krijg je "
            "een attentie. <a href=\"https://www.example.be/agenda?ref={{ campaign.slug }}"
            "\">Bekijk de agenda</a>.</p>\n")
GREETING = ("<p>{{ t.greeting }} {{ subscriber.first_name | default(t.reader) }} "
            "{{ subscriber.last_name | default('') }},</p>\n")
FOOTER = "<p>Deze mail ging naar {{ subscriber.email }}.</p>\n"
ORG = {"name": "Voorbeeld vzw", "address": "Voorbeeldstraat 1, 9000 Gent",
       "website": "https://www.example.be", "email": "info@example.be", "logo_url": "",
       "primary_colour": "#1f5f8b", "accent_colour": "#f2a900"}
LIST = ListInfo(id=1, slug="nieuwsbrief", name="Nieuwsbrief", language="nl",
                from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                reply_to="info@example.be")
CAMPAIGN = CampaignInfo(id=7, slug="dec-2026", title="Ons nieuws van december")
SUBJECT = "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws van december"


def templates(folder: Path) -> None:
    (folder / "partials").mkdir(parents=True, exist_ok=True)
    for path in [ROOT / "templates" / "layout.html.j2",
                 *(ROOT / "templates" / "partials").glob("*.j2")]:
        name = path.relative_to(ROOT / "templates")
        (folder / name).write_text(path.read_text())
    typical = (GREETING + PERSONAL + STATIC * 11 + FOOTER)
    heavy = (GREETING + PERSONAL * 12 + FOOTER)
    for name, body in (("typical.html.j2", typical), ("heavy.html.j2", heavy)):
        (folder / name).write_text('{% extends "layout.html.j2" %}{% block content %}'
                                   "<h1>{{ campaign.title }}</h1>\n" + body + "{% endblock %}")


def recipients(n: int) -> list[Recipient]:
    return [Recipient(subscriber_id=i + 1, email=f"person.{i}@example.be",
                      first_name=f"Naam{i}", last_name="Peeters", language="nl",
                      attributes={"city": "Gent", "since": 2019}) for i in range(n)]


def per_message(label: str, fn, people: list[Recipient]) -> float:  # noqa: ANN001
    fn(people[0])
    start = time.perf_counter()
    for person in people:
        fn(person)
    us = (time.perf_counter() - start) / len(people) * 1e6
    print(f"{label:<58}{us:>9,.0f} us")
    return us


def line(label: str, us: float) -> None:
    print(f"{label:<58}{us:>9,.0f} us")


def main() -> None:
    tokens = TokenSigner(b"bench-secret-key-0123456789abcdef")
    ed = Signer(generate_key("ed25519"), domain="example.be", selector="s")
    rsa_key = generate_key("rsa")
    rsa = Signer(rsa_key, domain="example.be", selector="s")
    people = recipients(4000)
    from mailer.content.flatten import flatten
    from mailer.content.inline import inline_css
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        templates(folder)
        flat = flatten(folder, "typical.html.j2")
        t = time.perf_counter()  # premailer on its own, first call in the process
        inlined = inline_css(flat)
        premailer_us = (time.perf_counter() - t) * 1e6
        t = time.perf_counter()
        html_to_text(inlined)
        text_us = (time.perf_counter() - t) * 1e6
        t = time.perf_counter()
        sources = load_sources(folder, "typical.html.j2")
        load_us = (time.perf_counter() - t) * 1e6
        heavy_sources = load_sources(folder, "heavy.html.j2")

    def mailing(src, signer) -> Mailing:  # noqa: ANN001
        return Mailing(sources=src, subject=SUBJECT, mailing_list=LIST, campaign=CAMPAIGN,
                       organisation=ORG, public_url="https://nieuws.example.be",
                       tokens=tokens, dkim=signer)

    plain = mailing(sources, None)
    t = time.perf_counter()
    plain.message(people[0])
    constants_us = (time.perf_counter() - t) * 1e6
    sample = plain.render(people[0], plain.token(people[0]))
    print(f"newsletter: {len(sample.html.encode()):,} bytes of HTML and "
          f"{len(sample.text.encode()):,} of text per message, 5 personal fields, "
          f"{len(plain.message(people[0]).data):,} bytes per message\n")
    line("once per campaign: premailer (CSS inlining)", premailer_us)
    line("once per campaign: HTML -> text template", text_us)
    line("once per campaign: all of it again, warm (load_sources)", load_us)
    line("once per campaign and language: constants pre-rendered", constants_us)
    print()
    per_message("per message: render + compose", plain.message, people)
    per_message("per message: render + compose + ed25519 signature",
                mailing(sources, ed).message, people)
    per_message("per message: render + compose + RSA-2048 signature",
                mailing(sources, rsa).message, people[:1000])
    heavy = mailing(heavy_sources, None)
    per_message("every paragraph personalised (36 field uses): + compose",
                heavy.message, people)
    per_message("every paragraph personalised: + ed25519 signature",
                mailing(heavy_sources, ed).message, people)
    print("\nreferences, same run:")

    def stdlib(person: Recipient) -> bytes:
        rendered = plain.render(person, plain.token(person))
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = Address("Voorbeeld vzw", addr_spec="nieuws@example.be")
        msg["To"] = Address(person.display_name, addr_spec=person.email)
        msg["Subject"] = rendered.subject
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        return msg.as_bytes()

    per_message("stdlib EmailMessage: render + build + as_bytes", stdlib, people[:1000])
    pem = private_pem(rsa_key)
    message = plain.message(people[1]).data
    per_message("dkimpy rsa-sha256 sign (pure Python RSA)",
                lambda _: dkim.sign(message, b"s", b"example.be", pem,
                                    include_headers=[b"from", b"to", b"subject"]),
                people[:50])


if __name__ == "__main__":
    main()

"""Benchmark: microseconds per message from template to signed bytes.

Prints, for a ~6 KB newsletter with 5 personal fields: premailer's once-per-campaign cost,
the once-per-campaign text conversion, and per message: render + compose; + ed25519
signature; + RSA-2048 signature; beside the stdlib EmailMessage build and dkimpy signing
of the same message, measured in the same run.

    .venv/bin/python bench/message_bench.py
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from mailer.content.compose import Composer  # noqa: E402
from mailer.content.constants import prerender_constants  # noqa: E402
from mailer.content.dkim import Signer, generate_key, private_pem  # noqa: E402
from mailer.content.environment import from_source, make_environment  # noqa: E402
from mailer.content.inline import inline_css  # noqa: E402
from mailer.content.textpart import html_to_text  # noqa: E402
from mailer.content.texts import texts  # noqa: E402

PARAGRAPH = ("<p>In {{ subscriber.attributes.city | default('je buurt') }} organiseren we "
             "deze maand een open dag. Kom langs met de familie, {{ subscriber.first_name "
             "| default('beste lezer') }}: er is koffie, taart en een rondleiding door de "
             "nieuwe werkplaats. Lid sinds {{ subscriber.attributes.since }}? Dan krijg je "
             "een attentie. <a href=\"https://www.example.be/agenda?ref={{ campaign.slug }}"
             "\">Bekijk de agenda</a>.</p>\n")


def newsletter_source(folder: Path) -> str:
    layout = (ROOT / "templates" / "layout.html.j2").read_text()
    (folder / "partials").mkdir(parents=True, exist_ok=True)
    for name in ("signature.html.j2", "disclaimer.html.j2"):
        (folder / "partials" / name).write_text(
            (ROOT / "templates" / "partials" / name).read_text())
    (folder / "layout.html.j2").write_text(layout)
    body = "<h1>{{ campaign.subject }}</h1>\n" + PARAGRAPH * 10
    (folder / "bench.html.j2").write_text(
        '{% extends "layout.html.j2" %}{% block content %}' + body + "{% endblock %}")
    from mailer.content.flatten import flatten
    return flatten(folder, "bench.html.j2")


def per_message(label: str, fn, n: int) -> float:  # noqa: ANN001
    fn(0)
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    us = (time.perf_counter() - start) / n * 1e6
    print(f"{label:<52}{us:>10,.0f} us")
    return us


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = newsletter_source(Path(tmp))
    env = make_environment()
    org = {"name": "Voorbeeld vzw", "address": "Voorbeeldstraat 1, 9000 Gent",
           "website": "https://www.example.be", "email": "info@example.be", "logo_url": "",
           "primary_colour": "#1f5f8b", "accent_colour": "#f2a900"}
    t = time.perf_counter()
    inlined = inline_css(source)
    premailer_us = (time.perf_counter() - t) * 1e6
    t = time.perf_counter()
    text_source = html_to_text(inlined)
    text_us = (time.perf_counter() - t) * 1e6
    constants = {"org": org, "t": texts("nl"), "campaign": {"subject": "Ons nieuws",
                                                           "slug": "dec-2026"},
                 "list": {"name": "Nieuwsbrief", "slug": "nieuwsbrief", "language": "nl"}}
    t = time.perf_counter()
    html_t = from_source(env, prerender_constants(env, inlined, "n.html.j2", constants),
                         "n.html.j2")
    text_t = from_source(env, prerender_constants(env, text_source, "n.txt.j2", constants),
                         "n.txt.j2")
    constants_us = (time.perf_counter() - t) * 1e6
    subject_t = from_source(env, "{{ subscriber.first_name | default('Beste lezer') }}, "
                                 "ons nieuws van december", "subject.txt.j2")
    base = constants

    def data(i: int) -> dict:
        return {**base, "subscriber": {
            "email": f"person.{i}@example.be", "first_name": f"Naam{i}",
            "last_name": "Peeters", "language": "nl",
            "attributes": {"city": "Gent", "since": 2019}},
            "urls": {"unsubscribe": f"https://nieuws.example.be/u/{i:046d}",
                     "preferences": f"https://nieuws.example.be/p/{i:046d}"}}

    size = len(html_t.render(data(1)).encode())
    composer = Composer(from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                        reply_to="info@example.be", list_name="Nieuwsbrief",
                        list_id="nieuwsbrief.example.be", feedback_id="dec:nb:mailer",
                        boundary="=_mailer_alt_1")
    now = datetime.now(UTC)

    def build(i: int) -> bytes:
        d = data(i)
        return composer.compose(
            to_address=d["subscriber"]["email"], to_name=d["subscriber"]["first_name"],
            subject=subject_t.render(d), text=text_t.render(d), html=html_t.render(d),
            unsubscribe_url=d["urls"]["unsubscribe"],
            unsubscribe_mailto=f"mailto:u@example.be?subject={i}",
            message_id=f"{i}.dec@example.be", date=now).data

    ed = Signer(generate_key("ed25519"), domain="example.be", selector="s")
    rsa_key = generate_key("rsa")
    rsa = Signer(rsa_key, domain="example.be", selector="s")
    print(f"newsletter: {len(inlined):,} bytes of template, {size:,} bytes of HTML per "
          "message, 5 personal fields\n")
    print(f"{'once per campaign: premailer (CSS inlining)':<52}{premailer_us:>10,.0f} us")
    print(f"{'once per campaign: HTML -> text template':<52}{text_us:>10,.0f} us")
    print(f"{'once per campaign: campaign constants pre-rendered':<52}{constants_us:>10,.0f} us")
    n = 2000
    per_message("per message: render + compose", build, n)
    per_message("per message: render + compose + ed25519 signature",
                lambda i: ed.sign(build(i)), n)
    per_message("per message: render + compose + RSA-2048 signature",
                lambda i: rsa.sign(build(i)), n // 4)
    print("\nreferences, same run:")

    def stdlib(i: int) -> bytes:
        d = data(i)
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = Address("Voorbeeld vzw", addr_spec="nieuws@example.be")
        msg["To"] = Address(d["subscriber"]["first_name"], addr_spec=d["subscriber"]["email"])
        msg["Subject"] = subject_t.render(d)
        msg.set_content(text_t.render(d))
        msg.add_alternative(html_t.render(d), subtype="html")
        return msg.as_bytes()

    per_message("stdlib EmailMessage: render + build + as_bytes", stdlib, n // 4)
    pem = private_pem(rsa_key)
    message = build(1)
    per_message("dkimpy rsa-sha256 sign (pure Python RSA)",
                lambda i: dkim.sign(message, b"s", b"example.be", pem,
                                    include_headers=[b"from", b"to", b"subject"]), 50)
    assert serialization  # imported for key handling in references


if __name__ == "__main__":
    main()

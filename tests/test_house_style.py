"""The shipped house style: renders in both languages, carries signature, disclaimer and
unsubscribe link, and inlines once to the same document as inlining every message."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.content.environment import TemplateProblem, from_source, make_environment
from mailer.content.flatten import flatten
from mailer.content.inline import inline_css
from mailer.content.texts import texts
from tests.test_inline import premailer, same_document

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ORG = {"name": "Voorbeeld vzw", "address": "Voorbeeldstraat 1, 9000 Gent",
       "website": "https://www.example.be", "email": "info@example.be", "logo_url": "",
       "primary_colour": "#1f5f8b", "accent_colour": "#f2a900"}


def context(language: str, first_name: str | None = "An") -> dict:
    subscriber = {"email": "an@example.be", "language": language,
                  "attributes": {"Gemeente": "Gent & <Omgeving>"}}
    if first_name is not None:
        subscriber["first_name"] = first_name
    return {"subscriber": subscriber, "org": ORG, "t": texts(language),
            "list": {"name": "Nieuwsbrief", "slug": "nieuwsbrief", "language": "nl"},
            "campaign": {"title": "Ons nieuws van december", "slug": "dec-2026"},
            "subject": "An, ons nieuws van december",
            "urls": {"unsubscribe": "https://nieuws.example.be/u/TOKEN",
                     "preferences": "https://nieuws.example.be/p/TOKEN"}}


@pytest.mark.parametrize("language, words", [
    ("nl", ["Beste An", "Met vriendelijke groeten", "Uitschrijven", "AVG"]),
    ("en", ["Dear An", "Kind regards", "Unsubscribe", "GDPR"]),
])
def test_newsletter_renders_with_house_style_in_both_languages(language, words):
    source = inline_css(flatten(TEMPLATES, "newsletter.html.j2"))
    html = from_source(make_environment(), source, "newsletter.html.j2").render(
        context(language))
    for word in words:
        assert word in html
    assert 'href="https://nieuws.example.be/u/TOKEN"' in html  # visible unsubscribe link
    assert "Voorbeeldstraat 1, 9000 Gent" in html  # signature from config
    assert "Gent &amp; &lt;Omgeving&gt;" in html  # escaped attribute
    assert "<style" not in html and 'style="' in html


@pytest.mark.parametrize("language", ["nl", "en"])
@pytest.mark.parametrize("first_name", ["An", None, "Zoë \"Z\" O'Brien & <co>"])
def test_shipped_newsletter_inline_once_equals_inline_each(language, first_name):
    flat = flatten(TEMPLATES, "newsletter.html.j2")
    data = context(language, first_name)
    once = from_source(make_environment(), inline_css(flat), "newsletter.html.j2").render(data)
    each = premailer(make_environment(TEMPLATES).get_template("newsletter.html.j2")
                     .render(data))
    assert same_document(once, each)


def test_flatten_refuses_what_it_cannot_resolve(tmp_path):
    (tmp_path / "a.html.j2").write_text('{% extends name %}')
    with pytest.raises(TemplateProblem, match="quoted file name"):
        flatten(tmp_path, "a.html.j2")
    (tmp_path / "b.html.j2").write_text('{% include "b.html.j2" %}')
    with pytest.raises(TemplateProblem, match="loop"):
        flatten(tmp_path, "b.html.j2")
    (tmp_path / "c.html.j2").write_text('{% include "../../etc/passwd" %}')
    with pytest.raises(TemplateProblem, match="not found"):
        flatten(tmp_path, "c.html.j2")

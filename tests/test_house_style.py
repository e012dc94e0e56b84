"""The shipped house style: renders in both languages, carries signature, disclaimer and
unsubscribe link, and inlines once to the same document as inlining every message."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import lxml.html
import pytest

from mailer.content.environment import TemplateProblem, from_source, make_environment
from mailer.content.flatten import flatten
from mailer.content.inline import inline_css
from mailer.content.mailing import CampaignInfo, ListInfo, Mailing, Recipient, load_sources
from mailer.content.texts import texts
from mailer.tokens import Signer
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


# -- contrast and the text part, in the messages as sent ----------------------------------

LINK_BLUE = (0, 0, 238)  # what a browser colours a link that has no colour of its own
SAMPLES = [  # template, language, extra URLs
    ("newsletter.html.j2", "nl", {}), ("newsletter.html.j2", "en", {}),
    ("confirm.html.j2", "nl", {"confirm": "https://nieuws.example.be/c/TOKEN"}),
    ("welcome.html.j2", "en", {}),
]


def sent(template: str, language: str, extra_urls: dict[str, str] | None = None,
         organisation: dict | None = None) -> tuple[str, str]:
    """The HTML and text parts of one message, as Mailing makes it (inlined once,
    constants rendered in, then the recipient)."""
    mailing = Mailing(
        sources=load_sources(TEMPLATES, template), subject="Ons nieuws",
        mailing_list=ListInfo(id=3, slug="nieuwsbrief", name="Nieuwsbrief", language="nl",
                              from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                              reply_to="info@example.be"),
        campaign=CampaignInfo(id=11, slug="dec-2026", title="Ons nieuws van december"),
        organisation=organisation or ORG, public_url="https://nieuws.example.be/",
        tokens=Signer(b"test-secret-key-0123456789abcdef"))
    person = Recipient(subscriber_id=42, email="an@example.be", first_name="An",
                       last_name="Peeters", language=language, attributes={"Gemeente": "Gent"})
    message = BytesParser(policy=policy.default).parsebytes(
        mailing.message(person, extra_urls=extra_urls).data)
    return (message.get_body(("html",)).get_content(),
            message.get_body(("plain",)).get_content().replace("\r\n", "\n"))


def _colour(value: str) -> tuple[int, int, int] | None:
    """A CSS colour as (r, g, b); None for transparent; anything else fails the test."""
    value = value.strip().lower()
    if value in ("transparent", "none", ""):
        return None
    if value.startswith("#") and len(value) in (4, 7):
        digits = value[1:] if len(value) == 7 else "".join(c * 2 for c in value[1:])
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    if value.startswith("rgb(") and value.endswith(")"):
        r, g, b = (int(part) for part in value[4:-1].split(","))
        return r, g, b
    named = {"white": (255, 255, 255), "black": (0, 0, 0)}
    assert value in named, f"a colour this test cannot read: {value!r}"
    return named[value]


def _style(element) -> dict[str, str]:  # noqa: ANN001
    pairs = (item.split(":", 1) for item in (element.get("style") or "").split(";")
             if ":" in item)
    return {key.strip().lower(): value.strip() for key, value in pairs}


def _text_colour(element) -> tuple[int, int, int]:  # noqa: ANN001
    """The colour text in `element` is drawn in, from the inline styles: the nearest own
    `color`; a link without one is the browser's blue, whatever its parent says."""
    for node in (element, *element.iterancestors()):
        colour = _style(node).get("color")
        if colour:
            found = _colour(colour)
            assert found is not None
            return found
        if node.tag == "a" and node.get("href"):
            return LINK_BLUE
    return 0, 0, 0


def _background(element) -> tuple[int, int, int]:  # noqa: ANN001
    """The nearest background colour behind `element`; white where none is set."""
    for node in (element, *element.iterancestors()):
        style = _style(node)
        for value in (style.get("background-color"), style.get("background"),
                      node.get("bgcolor")):
            for word in (value or "").split():
                if word.startswith(("#", "rgb(")) or word in ("white", "black"):
                    found = _colour(word)
                    if found is not None:
                        return found
    return 255, 255, 255


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: tuple[int, int, int], background: tuple[int, int, int]) -> float:
    """WCAG 2's contrast ratio, 1 to 21."""
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_runs(html: str) -> list[tuple[object, str]]:
    """(element, text) for every piece of visible text, with the element it is drawn in
    (a tail belongs to the parent)."""
    document = lxml.html.document_fromstring(html)
    runs = []
    for element in document.body.iter():
        if not isinstance(element.tag, str):
            continue
        if element.text and element.text.strip():
            runs.append((element, element.text.strip()))
        parent = element.getparent()
        if element.tail and element.tail.strip() and parent is not None:
            runs.append((parent, element.tail.strip()))
    return runs


def links(html: str) -> list:
    """The links that show text."""
    return [a for a in lxml.html.document_fromstring(html).iter("a")
            if "".join(a.itertext()).strip()]


def test_contrast_arithmetic_matches_wcag():
    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast(_colour("#1f5f8b"), _colour("#f2a900")), 1) == 3.4  # the old button
    assert round(contrast(_colour("#999"), _colour("#fafafa")), 1) == 2.7  # old disclaimer


@pytest.mark.parametrize("template, language, extra_urls", SAMPLES)
def test_every_text_in_the_house_style_has_aa_contrast(template, language, extra_urls):
    html, _ = sent(template, language, extra_urls)
    runs = text_runs(html)
    assert len(runs) > 10
    low = []
    for element, text in runs:
        fg, bg = _text_colour(element), _background(element)
        ratio = contrast(fg, bg)
        if ratio < 4.5:  # WCAG 2 AA for body text (1.4.3)
            low.append(f"{ratio:.1f}:1 {fg} on {bg}: <{element.tag}> {text[:40]!r}")
    assert not low, "\n".join(low)
    # The house style colours its links itself: none is left to the browser's blue.
    for link in links(html):
        assert "color" in _style(link), f"link without a colour: {link.get('href')}"


def test_the_button_keeps_its_own_colours():
    html, _ = sent("newsletter.html.j2", "nl")
    (button,) = [a for a in links(html) if "button" in (a.get("class") or "")]
    assert _colour(_style(button)["color"]) == _colour("#222222")
    assert _background(button) == _colour(ORG["accent_colour"])


@pytest.mark.parametrize("address", ["Voorbeeldstraat 1, 9000 Gent", ""])
@pytest.mark.parametrize("website", ["https://www.example.be", ""])
@pytest.mark.parametrize("email", ["info@example.be", ""])
def test_the_text_signature_has_no_stray_spaces_and_a_blank_line_before_the_footer(
        address, website, email):
    org = {**ORG, "address": address, "website": website, "email": email}
    _, text = sent("newsletter.html.j2", "nl", organisation=org)
    lines = text.split("\n")
    for line in lines:
        assert line == line.strip() and "  " not in line, repr(line)
    start = lines.index("Met vriendelijke groeten,")
    footer = next(i for i, line in enumerate(lines) if line.startswith("Je ontvangt"))
    expected = ["Met vriendelijke groeten,", "Voorbeeld vzw"]
    expected += [address] if address else []
    expected += [" · ".join(part for part in (website, email) if part)] \
        if website or email else []
    assert lines[start:footer] == [*expected, ""]
    assert lines[1] == "" and lines[2] == "Ons nieuws van december"  # header, blank, title

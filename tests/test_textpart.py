"""The text part: readable, links kept, made once from the template."""

from __future__ import annotations

from mailer.content.environment import from_source, make_environment
from mailer.content.flatten import flatten
from mailer.content.inline import inline_css
from mailer.content.textpart import html_to_text
from tests.test_house_style import TEMPLATES, context


def text_for(language: str, first_name: str | None = "An") -> str:
    html = inline_css(flatten(TEMPLATES, "newsletter.html.j2"))
    template = from_source(make_environment(), html_to_text(html), "newsletter.txt.j2")
    return template.render(context(language, first_name))


def test_newsletter_text_part_is_readable_and_keeps_links():
    text = text_for("nl")
    assert "<" not in text.replace("<Omgeving>", "")  # no tags; the value is data
    assert "Beste An," in text
    assert "Uitschrijven (https://nieuws.example.be/u/TOKEN)" in text
    assert "Voorkeuren aanpassen (https://nieuws.example.be/p/TOKEN)" in text
    assert "info@example.be" in text
    assert "Met vriendelijke groeten," in text
    assert "\n\n\n" not in text
    assert "Gent & <Omgeving>" in text  # values are not HTML-escaped in text


def test_text_part_follows_the_subscribers_language_and_fallbacks():
    text = text_for("en", None)
    assert "Dear reader," in text and "Unsubscribe (" in text


def test_jinja_control_flow_survives_conversion():
    source = ("<html><body><table>{% for i in items %}<tr><td>{{ i }}</td></tr>{% endfor %}"
              '</table><p><a href="{{ url }}">here</a> &amp; <b>there</b></p></body></html>')
    text = html_to_text(source)
    assert "{% for i in items %}" in text and "{% endfor %}" in text
    rendered = from_source(make_environment(), text, "t.txt.j2").render(
        items=["één", "twee"], url="https://x.example.be/?a=1&b=2")
    assert "één" in rendered and "twee" in rendered
    assert "here (https://x.example.be/?a=1&b=2) & there" in rendered


def test_a_line_break_after_a_block_tag_that_follows_text_is_kept():
    # The environment trims the newline after a block tag (trim_blocks): right for a line
    # of tags only, wrong where the tag follows text, as in the house style's signature.
    text = html_to_text("<p>A{% if b %}<br>B{% endif %}</p><p>C</p>")
    template = from_source(make_environment(), text, "t.txt.j2")
    assert template.render(b=True) == "A\nB\n\nC\n"
    assert template.render(b=False) == "A\n\nC\n"
    loop = html_to_text("<table>{% for i in items %}<tr><td>{{ i }}</td></tr>{% endfor %}"
                        "</table><p>z</p>")
    assert from_source(make_environment(), loop, "l.txt.j2").render(
        items=[1, 2]) == "1\n2\n\nz\n"  # tags on lines of their own: trimmed as before

"""Inlining the template once equals inlining every rendered message."""

from __future__ import annotations

import logging

import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from premailer import Premailer

from mailer.content.environment import from_source, make_environment
from mailer.content.inline import inline_css

TRICKY = """<!DOCTYPE html>
<html><head><style>
  p { color: #333; font-family: Arial, sans-serif }
  .cta a { background: #1f5f8b; color: #fff }
  td.price { text-align: right }
  a { color: #1f5f8b }
</style></head>
<body>
<p>Dag {{ subscriber.first_name | default("lezer") }},</p>
<table>
  {% for item in items %}
  {% if item.show %}
  <tr><td>{{ item.name }}</td><td class="price">{{ item.price }}</td></tr>
  {% endif %}
  {% endfor %}
</table>
{# a comment #}
<p class="cta"><a href="{{ urls.unsubscribe }}?utm={{ campaign.slug }}&amp;x=1">Uitschrijven</a></p>
<img src="https://cdn.example.be/{{ subscriber.attributes.city | default('x') }}.png"
     alt="{{ campaign.slug }}">
{% if subscriber.language == "en" %}<p>Hello</p>{% else %}<p>Hallo</p>{% endif %}
</body></html>
"""


def premailer(html: str) -> str:
    return Premailer(html, allow_network=False, allow_loading_external_files=False,
                     disable_validation=True, cssutils_logging_level=logging.CRITICAL,
                     keep_style_tags=False, strip_important=False,
                     disable_link_rewrites=True).transform()


def same_document(a: str, b: str) -> bool:
    """Equal as parsed HTML: the same elements, attributes and text, where entity spelling
    (&#39; or ') and runs of white space (collapsed by every HTML renderer) do not count."""
    def canon(html: str) -> bytes:
        root = lxml.html.document_fromstring(html)
        for node in root.iter():
            node.text = " ".join(node.text.split()) if node.text else node.text
            node.tail = " ".join(node.tail.split()) if node.tail else node.tail
        return lxml.html.tostring(root, method="html")
    return canon(a) == canon(b)


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@settings(max_examples=150, deadline=None)
@given(first=st.one_of(st.none(), texts), names=st.lists(texts, max_size=4),
       shows=st.lists(st.booleans(), min_size=4, max_size=4), language=st.sampled_from(
           ["nl", "en"]), city=texts)
def test_inline_once_equals_inline_each_message(first, names, shows, language, city):
    template = from_source(make_environment(), TRICKY, "tricky.html.j2")
    once = from_source(make_environment(), inline_css(TRICKY), "tricky.html.j2")
    subscriber = {"language": language, "attributes": {"city": city}}
    if first is not None:
        subscriber["first_name"] = first
    data = {"subscriber": subscriber,
            "items": [{"name": n, "price": f"€ {i},00", "show": s}
                      for i, (n, s) in enumerate(zip(names, shows, strict=False))],
            "urls": {"unsubscribe": "https://nieuws.example.be/u/AbC-123_x"},
            "campaign": {"slug": "dec-2026"}}
    assert same_document(once.render(data), premailer(template.render(data)))


def test_styles_are_inlined_and_jinja_survives():
    out = inline_css(TRICKY)
    assert "<style" not in out
    assert 'href="{{ urls.unsubscribe }}?utm={{ campaign.slug }}&amp;x=1"' in out
    assert "{% for item in items %}" in out and "{% endfor %}" in out
    assert 'class="price" style="text-align:right"' in out
    assert 'style="color:#fff; background:#1f5f8b"' in out  # .cta a beats a


@pytest.mark.parametrize("source", [
    '<a href="{{ url }}">x</a>',
    "<table>{% if a %}<tr><td>1</td></tr>{% endif %}</table>",
    '<img src="{{ src }}" alt="{{ alt }}">',
])
def test_small_templates_keep_their_jinja(source):
    out = inline_css(f"<html><head><style>a{{color:red}}</style></head><body>{source}"
                     "</body></html>")
    for tag in ("{{ url }}", "{% if a %}", "{{ src }}", "{{ alt }}"):
        if tag in source:
            assert tag in out

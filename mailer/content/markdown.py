"""Markdown bodies: a newsletter written as Markdown, shown inside the house-style layout.

A `*.md.j2` template is the `content` block of `layout.html.j2` (or of the layout named
on its first line: `{# layout: other.html.j2 #}`). The Markdown becomes HTML once per
template version, before any recipient: its Jinja constructs are protected by
placeholders while markdown-it (CommonMark) converts it, exactly as for CSS inlining, so
`{{ subscriber.first_name | default("lezer") }}`, links like `[preferences]({{ urls.preferences }})`
and `{% if %}` blocks all survive. The result is an ordinary HTML template: inlined,
converted to text and rendered per recipient like any other, HTML-escaped.

    {# layout: layout.html.j2 #}
    # Ons nieuws van december

    Beste {{ subscriber.first_name | default("lezer") }},

    Dit is **het nieuws** van deze maand. [Lees meer](https://www.example.be/nieuws).
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

from mailer.content.flatten import flatten_source
from mailer.content.inline import protect, restore

__all__ = ["DEFAULT_LAYOUT", "is_markdown", "markdown_template"]

DEFAULT_LAYOUT = "layout.html.j2"
_LAYOUT = re.compile(r"\A\s*\{#\s*layout:\s*([\w./-]+)\s*#\}[ \t]*\n?")
# CommonMark with raw HTML allowed (the author writes the template, as with HTML ones);
# no typographic replacements, so quotes and dashes stay as typed.
_MARKDOWN = MarkdownIt("commonmark", {"html": True})


def is_markdown(name: str) -> bool:
    return name.endswith((".md.j2", ".md"))


def markdown_template(folder: Path, name: str, source: str) -> str:
    """The flattened HTML template for the Markdown template `name` with text `source`."""
    layout = DEFAULT_LAYOUT
    match = _LAYOUT.match(source)
    if match:
        layout, source = match.group(1), source[match.end():]
    protected, found = protect(source)
    html = restore(_MARKDOWN.render(protected), found)
    child = f'{{% extends "{layout}" %}}{{% block content %}}\n{html}{{% endblock %}}'
    # Compiled as the HTML template it becomes, so escaped as one (mailing.load_sources).
    html_name = re.sub(r"\.md(\.j2)?$", ".html.j2", name)
    return flatten_source(folder, child, name, compiled_as=html_name)

"""The text part: a readable plain-text version of the HTML, made once per template.

Converting HTML to text costs ~2 ms a message, so, as with CSS inlining, the *template* is
converted, once, with its Jinja constructs protected by placeholders; every recipient then
gets a cheap render of the resulting text template (not HTML-escaped). Links keep their
address: `Read more (https://…)`; images give their alt text; headings, paragraphs, table
rows and list items become lines. A template may ship its own text version instead.
"""

from __future__ import annotations

import re

import lxml.html
from lxml import etree

from mailer.content.inline import protect, restore

__all__ = ["html_to_text"]

_SKIP = {"head", "style", "script", "title"}
_BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol",
          "blockquote", "section", "article", "header", "footer", "hr", "pre"}
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
              "hr", "pre"}
_SPACE = re.compile(r"[ \t\r\n\f\v]+")


class _Writer:
    def __init__(self, found: list[str]) -> None:
        self.parts: list[str] = []
        self.found = found  # the protected Jinja constructs, to compare links by source

    def text(self, value: str | None) -> None:
        if value:
            self.parts.append(_SPACE.sub(" ", value))

    def raw(self, value: str) -> None:
        self.parts.append(value)

    def newline(self, count: int = 1) -> None:
        self.parts.append("\0" * count)  # collapsed later: never more than a blank line

    def result(self) -> str:
        joined = "".join(self.parts)
        lines = [line.strip() for line in re.sub(r"\0+", lambda m: "\n" * min(
            len(m.group(0)), 2), joined).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _walk(node: etree._Element, out: _Writer) -> None:
    if isinstance(node, etree._Comment):
        if node.text and node.text.startswith("mailer-jinja-"):
            out.raw(f"<!--{node.text}-->")  # a protected {% … %}: restored below
        out.text(node.tail)
        return
    if not isinstance(node.tag, str):
        out.text(node.tail)
        return
    tag = node.tag.lower()
    if tag in _SKIP:
        out.text(node.tail)
        return
    if tag in _BLOCK:
        out.newline(2 if tag in _PARAGRAPH else 1)
    if tag == "br":
        out.newline()
    elif tag == "li":
        out.newline()
        out.raw("- ")
    elif tag == "img":
        alt = node.get("alt")
        if alt:
            out.text(f"[{alt}]")
    if tag != "img":
        out.text(node.text)
        for child in node:
            _walk(child, out)
    if tag == "a":
        href = (node.get("href") or "").strip()
        label = "".join(node.itertext()).strip()
        if href.startswith("mailto:"):
            href = href[len("mailto:"):]
        # Compare as written in the template: "{{ org.website }}" twice is the same link.
        same = restore(href, out.found) == restore(label, out.found)
        if href and not same and not href.startswith("#"):
            out.raw(f" ({href})")
    elif tag in ("td", "th"):
        out.raw(" ")
    if tag in _BLOCK:
        out.newline(2 if tag in _PARAGRAPH else 1)
    out.text(node.tail)


def html_to_text(source: str) -> str:
    """A text template from an HTML template (Jinja constructs carried over)."""
    protected, found = protect(source)
    document = lxml.html.document_fromstring(protected)
    out = _Writer(found)
    _walk(document, out)
    return _keep_line_breaks(restore(out.result(), found))


_BLOCK_TAG = re.compile(r"\{%.*?%\}", re.DOTALL)


def _keep_line_breaks(text: str) -> str:
    """Every line break of the text template is meant, but the environment's trim_blocks
    drops the one right after a block tag: right for a line of tags only, wrong after
    content (`Name{% if org.address %}` + break + `Address`, or a paragraph's last tag
    before the blank line). There the tag ends in `+%}`, which keeps the break."""
    parts, done = [], 0
    for match in _BLOCK_TAG.finditer(text):
        tag = match.group(0)
        if not text.startswith("\n", match.end()) or tag.endswith(("-%}", "+%}")):
            continue
        line = text[text.rfind("\n", 0, match.start()) + 1:match.start()]
        if _BLOCK_TAG.sub("", line).strip():
            parts += [text[done:match.end() - 2], "+%}"]
            done = match.end()
    return "".join(parts) + text[done:]

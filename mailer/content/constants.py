"""Render what is the same for every recipient once, at campaign preparation.

After CSS inlining, `{{ org.primary_colour }}` sits in the style attribute of dozens of
elements, and the texts, the organisation and the list are the same for the whole
campaign. Each `{{ … }}` whose names are all campaign constants (`org`, `t`, `list`,
`campaign`) is rendered now, escaped as the template would, and written into the
template as text; only the per-recipient expressions (subscriber fields, links) are
left for Jinja. tests/test_constants.py shows both templates render the same messages.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import meta
from jinja2.exceptions import TemplateSyntaxError

from mailer.content.environment import MailEnvironment, from_source

__all__ = ["CONSTANT_NAMES", "prerender_constants"]

CONSTANT_NAMES = frozenset({"org", "t", "list", "campaign"})
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_BLOCK = re.compile(r"\{%.*?%\}", re.DOTALL)


def prerender_constants(env: MailEnvironment, source: str, name: str,
                        constants: dict[str, Any]) -> str:
    """`source` with every constant-only `{{ … }}` replaced by its rendered text."""
    # Names bound by the template itself ({% set %}, loop variables) shadow the
    # constants; expressions under such a binding are left alone.
    bound = set()
    for block in _BLOCK.findall(source):
        bound.update(re.findall(r"\{%[-+]?\s*(?:set|for)\s+([\w\s,]+?)\s*(?:=|in)\b", block))
    shadowed = {n.strip() for group in bound for n in group.split(",")}
    cache: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        expression = match.group(0)
        if expression in cache:
            return cache[expression]
        try:
            names = meta.find_undeclared_variables(env.parse(expression))
        except TemplateSyntaxError:
            return expression
        if not names or not names <= CONSTANT_NAMES or names & shadowed:
            return expression
        text = from_source(env, expression, name).render(constants)
        # Only plain text goes into the template: Jinja would treat braces as syntax,
        # normalise line breaks, and trim white space next to block tags.
        if not text or text.strip() != text or any(c in text for c in "{}\r\n"):
            return expression
        cache[expression] = text
        return text

    return _EXPRESSION.sub(replace, source)

"""The template environment: Jinja2, sandboxed, strict, escaping HTML.

Templates are untrusted input (a marketer edits them, a shared folder may be writable by
more people than the mail server): they run in Jinja's `ImmutableSandboxedEnvironment`,
which refuses attribute access to Python internals (`__class__`, `mro`, …) and any
mutation of the data they are given. `StrictUndefined` makes a misspelt or missing field an
error at preview time instead of an empty greeting in a subscriber's inbox; the `default`
filter is the deliberate way to say what a missing field becomes:

    {{ subscriber.first_name | default("Beste lezer") }}

One filter of our own: `date`, a date written with a strftime format,
`{{ campaign.date | date("%V") }}` (the ISO week number), `date("%d-%m-%Y")`.

HTML templates (`*.html.j2`, `*.html`) are autoescaped, text templates are not. Templates
receive plain data (dicts, strings, numbers), never ORM objects.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from mailer.errors import MailerError

__all__ = ["TemplateProblem", "from_source", "load", "make_environment", "render"]


class TemplateProblem(MailerError):
    """A template cannot be loaded or rendered; the message names the template and line."""


_DICT_ATTRIBUTES = frozenset(dir(dict))


class MailEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with a fast path for what templates read most: keys of plain dicts.

    `subscriber.first_name` on a dict makes the sandbox try the attribute first (an
    AttributeError, ~1.5 us), then the key; a newsletter does that a hundred times per
    message. A key of a plain dict that is not also a dict method is data, never a Python
    internal, so it is returned directly. Everything else takes the sandbox's path.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith((".html.j2", ".html", ".htm"))


def _date(value: Any, format: str = "%Y-%m-%d") -> str:
    """The `date` filter: a date (or date and time) in a strftime format."""
    if not isinstance(value, date):
        raise TemplateRuntimeError(f"date: {value!r} is not a date")
    return value.strftime(format)


def make_environment(folder: Path | None = None) -> MailEnvironment:
    """A sandboxed, strict environment loading templates from `folder`."""
    env = MailEnvironment(
        loader=FileSystemLoader(str(folder)) if folder is not None else None,
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["date"] = _date
    return env


def _where(template: Template | None, exc: Exception) -> str:
    name = getattr(exc, "name", None) or (template.name if template else None) or "template"
    line = getattr(exc, "lineno", None)
    return f"{name}, line {line}" if line else name


def load(env: ImmutableSandboxedEnvironment, name: str) -> Template:
    """Load and compile a template; TemplateProblem for a missing file or bad syntax."""
    try:
        return env.get_template(name)
    except TemplateNotFound as exc:
        raise TemplateProblem(f"Template not found: {exc.name}") from None
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{_where(None, exc)}: {exc.message}") from None


def from_source(env: ImmutableSandboxedEnvironment, source: str, name: str) -> Template:
    """Compile a template from text (an inlined, flattened template) under `name`, so it
    is escaped exactly as the file `name` would be; TemplateProblem on bad syntax."""
    try:
        code = env.compile(source, name=name)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{_where(None, exc)}: {exc.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def render(template: Template, data: dict[str, Any]) -> str:
    """Render with plain data; every failure becomes one clear TemplateProblem line."""
    try:
        return template.render(data)
    except UndefinedError as exc:
        raise TemplateProblem(
            f"{_where(template, exc)}: {exc.message}",
            hint='Check the spelling, or give a fallback: {{ x | default("…") }}') from None
    except SecurityError as exc:
        raise TemplateProblem(f"{_where(template, exc)}: not allowed in a template "
                              f"({exc})") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{_where(template, exc)}: {exc.message}") from None

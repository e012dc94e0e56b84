"""The rules a template must pass before anyone gets it: one set, applied by `mailer
templates check`, `campaign create`, `campaign test` and `campaign send` (issue 12, 2).

Errors (exit 1, and no send): the template does not load or render; a variable is
undefined for the recipients; no visible unsubscribe link; an image without alt text; a
remote stylesheet, an @import or a script (mail clients block them, spam filters count
them); an HTML part over 102 KB (Gmail clips the message there and hides the unsubscribe
link). Warning: an HTML part over 80 KB, close to the clipping limit.

Personal fields are judged against the real audience when there is one: for each field
used without a `default`, how many recipients lack it (an error: they would not get the
mail; the fix is `| default("…")` in the template, or leaving them out with `--where`).
Without an audience (a list nobody is on yet, or `--subscriber`) the template is rendered
for one sample subscriber, and a field used without a default is a warning.

The audience is not rendered person by person: recipients with the same fields present
(and the same language) render the same undefined names, so one recording render per
such group decides for all of them; a million members make a handful of groups.

Every undefined variable is reported, not just the first: the template is rendered with
an Undefined that records the dotted name it was asked for and renders as nothing; where
the name is used is found in the user's own files with Jinja's parser (locate.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined

from mailer.content.environment import TemplateProblem, from_source, make_environment
from mailer.content.locate import SUBJECT_NAME, locate
from mailer.content.mailing import Mailing, Recipient, TemplateSources
from mailer.content.texts import LANGUAGES
from mailer.delivery.segments import FIELDS
from mailer.tokens import MessageToken

__all__ = ["CLIP_BYTES", "Audience", "Finding", "check", "group_audience", "refuse_errors",
           "shape"]

CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past this much HTML
NEAR_CLIP_BYTES = 80 * 1024


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str
    field: str | None = None  # a variable the template reads that some recipients lack
    lacking: int = 0  # how many recipients lack it


@dataclass
class Audience:
    """The recipients, grouped by the fields they have (and their language): each group
    renders the same undefined names. `groups`: shape -> (how many, one of them)."""

    total: int = 0
    groups: dict[tuple[Any, ...], tuple[int, Recipient]] = field(default_factory=dict)


def shape(person: Recipient) -> tuple[Any, ...]:
    """What decides the undefined names a recipient renders: the language (of those with
    texts), the fields they have and their attributes' names."""
    data = person.template_data()
    return (person.language if person.language in LANGUAGES else None,
            tuple(sorted(data)), tuple(sorted(data["attributes"])))


def group_audience(recipients: Iterable[Recipient | tuple[int, Recipient]]) -> Audience:
    """The recipients by shape, the first of each kept to render; a (count, recipient)
    pair stands for that many of the same shape (grouped already: doctor/templates.py)."""
    audience = Audience()
    groups = audience.groups
    for item in recipients:
        count, person = item if isinstance(item, tuple) else (1, item)
        key = shape(person)
        seen = groups.get(key)
        groups[key] = (seen[0] + count, seen[1]) if seen else (count, person)
        audience.total += count
    return audience


class _Path(dict):
    """A dict that knows its dotted name, so an undefined key can be reported in full."""

    def __init__(self, data: dict[str, Any], path: str) -> None:
        super().__init__({k: _named(v, f"{path}.{k}") for k, v in data.items()})
        self.path = path


def _named(value: Any, path: str) -> Any:
    return _Path(value, path) if isinstance(value, dict) else value


class _Recording(ChainableUndefined):
    """Renders as nothing; when used (printed, tested, looped over) it writes down the
    dotted name that was missing. `| default(…)` and `is defined` never use it, so a
    field with a fallback is not reported."""

    seen: list[str]

    def _record(self) -> None:
        name, obj = self._undefined_name, self._undefined_obj
        if name is not None:
            where = getattr(obj, "path", None)
            self.seen.append(f"{where}.{name}" if where else str(name))

    def __str__(self) -> str:
        self._record()
        return ""

    def __html__(self) -> str:
        return str(self)

    def __bool__(self) -> bool:
        self._record()
        return False

    def __iter__(self):  # noqa: ANN204
        self._record()
        return iter(())

    def __len__(self) -> int:
        self._record()
        return 0


def _render_recording(sources: TemplateSources, subject: str,
                      data: dict[str, Any]) -> tuple[list[str], str]:
    """The undefined names used by subject, HTML and text, and the HTML as rendered
    with those names empty."""
    seen: list[str] = []
    recording = type("Recording", (_Recording,), {"seen": seen})
    env = make_environment()
    env.undefined = recording
    named = {k: _named(v, k) for k, v in data.items()}
    html = ""
    for source, name in ((subject, SUBJECT_NAME), (sources.html, sources.name),
                         (sources.text, sources.text_name)):
        out = from_source(env, source, name).render(named)
        html = out if name == sources.name else html
    return list(dict.fromkeys(seen)), html


def _at(sources: TemplateSources, subject: str, dotted: str) -> str:
    places = locate(sources.folder, sources.name, subject, dotted)
    return f" ({'; '.join(places)})" if places else ""


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images_without_alt: list[str] = []
        self.remote: list[str] = []
        self.scripts = 0
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "a" and values.get("href"):
            self.links.append(values["href"].strip())
        elif tag == "img" and "alt" not in values:
            self.images_without_alt.append(values.get("src", "?"))
        elif tag == "link" and "stylesheet" in values.get("rel", "").lower():
            self.remote.append(f"stylesheet {values.get('href', '?')}")
        elif tag == "script":
            self.scripts += 1
        elif tag == "style":
            self._in_style = True
        if "@import" in values.get("style", ""):
            self.remote.append("@import in a style attribute")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and "@import" in data:
            self.remote.extend(f"@import {m}" for m in re.findall(r"@import\s+([^;]+)", data))


# The template's derived fields (Recipient.template_data) and the fields `--where` knows,
# any one of which gives them: "name" is there with a first or a last name, "family_name"
# with a last name. A condition on the derived name itself would be read as an attribute.
DERIVED = {"name": ("first_name", "last_name"), "family_name": ("last_name",)}


def _where(variable: str, audience: Audience) -> tuple[str, int]:
    """A `--where` condition that leaves out everyone lacking `variable`, and how many
    who have it it leaves out too (a derived field: `--where` conditions must all hold,
    so one of the fields that give it is named, the one most recipients have)."""
    name = variable.removeprefix("subscriber.")
    if name.startswith("attributes."):
        bare = name.removeprefix("attributes.")
        return f"{name if bare in FIELDS or bare in DERIVED else bare} is set", 0
    if name not in DERIVED:
        return f"{name} is set", 0

    def having(*fields: str) -> int:
        return sum(count for shape, (count, _) in audience.groups.items()
                   if any(f in shape[1] for f in fields))

    best = max(DERIVED[name], key=having)  # the first, of equals
    return f"{best} is set", having(*DERIVED[name]) - having(best)


def _lacking(variable: str, sources: TemplateSources, subject: str, lacking: int,
             audience: Audience) -> Finding:
    at, total = _at(sources, subject, variable), audience.total
    if not variable.startswith("subscriber."):
        return Finding("error", f"{variable}{at} is undefined (a typo?).", variable, total)
    where, also = _where(variable, audience)
    also_out = f" (it also leaves out {also:,} who have it)" if also else ""
    typo = " (nobody has it: a typo?)" if lacking == total else ""
    return Finding("error", f"{variable}{at} is missing for {lacking:,} of {total:,} "
                            f"recipients{typo}: they would not get this mail. Give it a "
                            f'fallback, {{{{ {variable} | default("…") }}}}, or leave them '
                            f'out: --where "{where}"{also_out}.', variable, lacking)


def _fields(mailing: Mailing, sample: Recipient, audience: Audience | None,
            token: MessageToken) -> tuple[list[Finding], str, Recipient | None]:
    """Findings about undefined variables, the HTML to scan, and a recipient for whom
    nothing was undefined (to render strictly, as the send will). Every render uses
    `token`, so the links are the same in each."""
    sources, subject = mailing.sources, mailing.subject_source
    findings: list[Finding] = []

    def recording(person: Recipient) -> tuple[list[str], str]:
        data = mailing.template_data(person, token, subject="")
        return _render_recording(sources, subject, data)

    if audience is not None and audience.total:
        lacking: dict[str, int] = {}
        html, complete, biggest = "", None, 0
        for count, person in audience.groups.values():
            missing, out = recording(person)
            for variable in missing:
                lacking[variable] = lacking.get(variable, 0) + count
            if not missing and complete is None:
                complete = person
            if count > biggest:
                html, biggest = out, count
        findings += [_lacking(v, sources, subject, n, audience)
                     for v, n in lacking.items()]
        return findings, html, complete
    missing, html = recording(sample)
    bare = Recipient(subscriber_id=sample.subscriber_id, email=sample.email,
                     language=sample.language)
    optional, _ = recording(bare)
    for variable in missing:
        findings.append(Finding(
            "error", f"{variable}{_at(sources, subject, variable)} is undefined for the "
                     f"sample subscriber {sample.email} (a fallback: | default(\"…\"); a "
                     "condition: is defined).", variable, 1))
    for variable in optional:
        if variable not in missing:
            findings.append(Finding(
                "warning", f"{variable}{_at(sources, subject, variable)} has no "
                           '| default("…"): a subscriber without it would not get this '
                           "mail.", variable))
    return findings, html, None if missing else sample


def check(mailing: Mailing, sample: Recipient, *,
          audience: Audience | None = None) -> list[Finding]:
    """Findings for the template of `mailing`: for `audience` when it has anyone,
    else for `sample`. (A template that does not even load fails earlier, when the
    Mailing is made, with TemplateProblem.)"""
    sources = mailing.sources
    token = mailing.token(sample)
    try:
        findings, html, complete = _fields(mailing, sample, audience, token)
    except TemplateProblem as exc:
        return [Finding("error", str(exc))]
    except Exception as exc:  # noqa: BLE001 - any Jinja failure is the template's
        return [Finding("error", f"{sources.name}: {exc}")]
    if complete is not None:  # the real renderer agrees (it is strict)
        try:
            html = mailing.render(complete, token).html
        except TemplateProblem as exc:
            findings.append(Finding("error", str(exc)))
    scan = _Scan()
    scan.feed(html)
    unsubscribe = mailing.urls(token)["unsubscribe"]
    if unsubscribe not in scan.links:
        findings.append(Finding("error", "No visible unsubscribe link: add "
                                         '<a href="{{ urls.unsubscribe }}">…</a> (the house '
                                         "style's disclaimer partial has one)."))
    for src in scan.images_without_alt:
        findings.append(Finding("error", f'Image without alt text: {src} (use alt="" for '
                                         "a decorative image)."))
    for what in scan.remote:
        findings.append(Finding("error", f"Remote {what}: mail clients block it; put the "
                                         "styles in the template's <style>."))
    if scan.scripts:
        findings.append(Finding("error", f"{scan.scripts} <script> element(s): no mail "
                                         "client runs them and spam filters count them."))
    size = len(html.encode("utf-8"))
    if size > CLIP_BYTES:
        findings.append(Finding("error", f"The HTML part is {size / 1024:.0f} KB: Gmail "
                                         "clips messages over 102 KB, hiding the rest and "
                                         "the unsubscribe link."))
    elif size > NEAR_CLIP_BYTES:
        findings.append(Finding("warning", f"The HTML part is {size / 1024:.0f} KB, close "
                                           "to Gmail's 102 KB clipping limit."))
    return findings


def refuse_errors(findings: list[Finding], *, hint: str) -> None:
    """What `campaign create`, `test` and `send` do with the findings `templates check`
    prints: the first error, and how many more, as one TemplateProblem."""
    errors = [f for f in findings if f.level == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise TemplateProblem(errors[0].message + more, hint=hint)

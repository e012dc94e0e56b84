"""`mailer templates check`: what would go wrong with a template before anyone gets it.

Errors (exit 1): the template does not load or render; a variable is undefined for the
sample subscriber; no visible unsubscribe link; an image without alt text; a remote
stylesheet, an @import or a script (mail clients block them, spam filters count them);
an HTML part over 102 KB (Gmail clips the message there and hides the unsubscribe link).
Warnings: a personal field used without a `default`, so a subscriber who lacks it would
make the render fail; an HTML part over 80 KB, close to the clipping limit.

Every undefined variable is reported, not just the first: the template is rendered with
an Undefined that records the dotted name it was asked for and renders as nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined

from mailer.content.environment import TemplateProblem, from_source, make_environment
from mailer.content.mailing import Mailing, Recipient, TemplateSources

__all__ = ["CLIP_BYTES", "Finding", "check"]

CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past this much HTML
NEAR_CLIP_BYTES = 80 * 1024


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str


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
    for source, name in ((subject, "subject.txt.j2"), (sources.html, sources.name),
                         (sources.text, "text.txt.j2")):
        out = from_source(env, source, name).render(named)
        html = out if name == sources.name else html
    return list(dict.fromkeys(seen)), html


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


def check(mailing: Mailing, sample: Recipient) -> list[Finding]:
    """Findings for the template of `mailing`, rendered for `sample`. (A template that
    does not even load fails earlier, when the Mailing is made, with TemplateProblem.)"""
    findings: list[Finding] = []
    sources = mailing.sources
    token = mailing.token(sample)
    bare = Recipient(subscriber_id=sample.subscriber_id, email=sample.email,
                     language=sample.language)
    try:
        missing, html = _render_recording(sources, mailing.subject_source,
                                          mailing.template_data(sample, token, subject=""))
        optional, _ = _render_recording(sources, mailing.subject_source,
                                        mailing.template_data(bare, token, subject=""))
    except TemplateProblem as exc:
        return [Finding("error", str(exc))]
    except Exception as exc:  # noqa: BLE001 - any Jinja failure is the template's
        return [Finding("error", f"{sources.name}: {exc}")]
    for variable in missing:
        findings.append(Finding("error", f"{variable} is undefined for the sample subscriber "
                                         f"{sample.email} (a fallback: | default(\"…\"); "
                                         "a condition: is defined)."))
    for variable in optional:
        if variable not in missing:
            findings.append(Finding("warning", f"{variable} has no | default(\"…\"): a "
                                               "subscriber without it would not get this "
                                               "mail."))
    if not missing:  # the real renderer agrees (it is strict)
        try:
            html = mailing.render(sample, token).html
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

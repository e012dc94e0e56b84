"""Clicks counted per campaign and link, never per person (`[tracking] clicks`, issue 16).

With `clicks = "aggregate"`, when a campaign starts (once, on its inlined HTML template,
before it is frozen), every link whose address is written in the template itself
(`href="https://…"`, not made by a Jinja expression) is replaced by
`PUBLIC_URL/l/TOKEN`, served by `mailer serve` (mailer/web/clicks.py). TOKEN is a signed
token (tokens.py, Purpose.CLICK) that names the campaign and the link's number and no
person (subscriber 0): every recipient gets the same address, so a click says which link
of which campaign was followed, never by whom. The address itself is kept in the
database (`link_click`, with the count), and the redirect goes there and nowhere else: a
token names a row, never a URL, so there is no open redirect, and a forged or altered
token is refused like every forged link.

Never rewritten: links made by template expressions (`{{ unsubscribe_url }}`,
`{{ preferences_url }}`, anything per person), links to the project's own `public_url`
(its pages), `mailto:` and `tel:` links, anchors, and any address with a control
character or a space in it. The text part keeps the real addresses. There is no open
tracking pixel: opening a mail is not counted, at all.

`clicks = "off"` (the default) changes nothing: the template is frozen as it is.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mailer.content.mailing import TemplateSources
from mailer.models import LinkClick
from mailer.tokens import Purpose, Signer

if TYPE_CHECKING:
    from sqlmodel import Session

    from mailer.models import Campaign
    from mailer.project import Project

__all__ = ["click_path", "find_links", "rewrite_links", "track_links", "tracked_sources"]

LINKS = LinkClick.__table__  # type: ignore[attr-defined]
# The href of an <a> or <area>, quoted either way (premailer writes double quotes).
_HREF = re.compile(r"""(<(?:a|area)\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.I | re.S)
_FIXED = re.compile(r"https?://[^\s\x00-\x1f\x7f<>\"'{}\\^`|]+\Z", re.I)
_JINJA = ("{{", "{%", "{#")
PATH = "/l/"


def click_path(token: str) -> str:
    """The path of a counted link on the subscriber web server."""
    return f"{PATH}{token}"


def _countable(raw: str, own: str) -> str | None:
    """The address of an href that may be counted, or None: fixed in the template (no
    Jinja), http(s), clean, not one of our own pages."""
    if any(mark in raw for mark in _JINJA):
        return None
    url = html.unescape(raw).strip()
    if not _FIXED.match(url):
        return None
    if own and (url.lower() == own.lower() or url.lower().startswith(own.lower() + "/")):
        return None
    return url


def find_links(source: str, *, public_url: str = "") -> list[str]:
    """The distinct countable addresses of a template's links, in the order they appear."""
    own = public_url.rstrip("/")
    found: dict[str, None] = {}
    for match in _HREF.finditer(source):
        url = _countable(match.group(3), own)
        if url is not None:
            found.setdefault(url)
    return list(found)


def rewrite_links(source: str, targets: dict[str, str], *, public_url: str = "") -> str:
    """The template with each countable link whose address is in `targets` pointing at
    its replacement; every other byte as it was (inline styles, other attributes)."""
    own = public_url.rstrip("/")

    def swap(match: re.Match[str]) -> str:
        url = _countable(match.group(3), own)
        if url is None or url not in targets:
            return match.group(0)
        quote = match.group(2)
        return f"{match.group(1)}{quote}{html.escape(targets[url])}{quote}"

    return _HREF.sub(swap, source)


def track_links(session: Session, sources: TemplateSources, *, campaign_id: int,
                public_url: str, signer: Signer) -> TemplateSources:
    """The campaign's sources with its links counted: a `link_click` row per distinct
    address (in the caller's transaction) and the HTML pointing at `/l/TOKEN`. Starting
    the same campaign again reuses its rows."""
    conn = session.connection()
    known = dict(conn.execute(sa.select(LINKS.c.url, LINKS.c.link_index)
                              .where(LINKS.c.campaign_id == campaign_id)).all())
    base = public_url.rstrip("/")
    targets: dict[str, str] = {}
    for url in find_links(sources.html, public_url=public_url):
        index = known.get(url)
        if index is None:
            index = known[url] = max(known.values(), default=0) + 1
            conn.execute(LINKS.insert().values(campaign_id=campaign_id, link_index=index,
                                               url=url, clicks=0))
        token = signer.make(Purpose.CLICK, 0, index, campaign_id)
        targets[url] = base + click_path(token)
    if not targets:
        return sources
    return replace(sources, html=rewrite_links(sources.html, targets, public_url=public_url))


def tracked_sources(project: Project, session: Session, campaign: Campaign,
                    sources: TemplateSources) -> TemplateSources:
    """The sources a campaign is frozen with: its links counted when `[tracking] clicks`
    is "aggregate", else as they are."""
    if project.settings.tracking.clicks != "aggregate":
        return sources
    return track_links(session, sources, campaign_id=campaign.id or 0,
                       public_url=project.settings.public_url, signer=project.signer)

"""A mailing: a template, a subject and a list prepared once; a signed message per recipient.

Everything that is the same for every recipient happens in the constructor, once per
template version: extends and includes resolved, Markdown converted, CSS inlined
(premailer), the text part derived, the campaign's constants (organisation, texts, list,
campaign) rendered into the templates (per language, on first use), the constant headers
encoded, the DKIM tags folded (per key: a message can carry an RSA and an ed25519
signature). Per recipient, `message()` only renders three small Jinja templates
(subject, text, HTML), makes the message's token, joins bytes and signs them.
Section 10 of docs/architecture.md has the cost of each step.

Every message carries one token (tokens.Purpose.MESSAGE), bound to subscriber, list and
campaign: in its unsubscribe and preferences links (`/u/TOKEN`, `/p/TOKEN`), in
List-Unsubscribe (`https` and `mailto:unsub+TOKEN@…`) and in the envelope sender
(`bounces+TOKEN@bounce-domain`, VERP), so a bounce or a complaint leads back to its
delivery and nobody can forge one for another address.

Template data (plain values only):
    subscriber  email, first_name, infix, last_name, name, family_name, language,
                attributes: fields that are empty are left out, so `| default("…")`
                applies; name is "Jan van der Berg", family_name "Van der Berg" (the
                Dutch rules for an infix: mailer/audience/names.py)
    subject     this recipient's subject, as rendered
    urls        unsubscribe, preferences
    org         the organisation from mailer.toml
    t           the built-in texts in the recipient's language
    list        name, slug, language
    campaign    slug, title, date (a recurring occurrence's date; else the day it goes out)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Template

from mailer.audience.names import family_name, full_name
from mailer.content.compose import Attachment, Composer
from mailer.content.constants import prerender_constants
from mailer.content.dkim import Signer as DkimSigner
from mailer.content.dkim import sign as dkim_sign
from mailer.content.environment import (
    MailEnvironment,
    TemplateProblem,
    from_source,
    make_environment,
    render,
)
from mailer.content.locate import SUBJECT_NAME, locate_name
from mailer.content.texts import LANGUAGES, texts
from mailer.tokens import MessageToken
from mailer.tokens import Signer as TokenSigner

__all__ = ["CampaignInfo", "ListInfo", "Mailing", "Message", "Recipient",
           "Rendered", "TemplateSources", "load_sources"]


@dataclass(frozen=True)
class ListInfo:
    id: int
    slug: str
    name: str
    language: str
    from_name: str
    from_address: str
    reply_to: str | None = None


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    slug: str
    title: str
    date: date | None = None  # `campaign.date`: an occurrence's date; None: today


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    infix: str | None = None  # the Dutch tussenvoegsel: "van der"

    @property
    def display_name(self) -> str:
        return full_name(self.first_name, self.infix, self.last_name)

    def template_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"email": self.email, "attributes": dict(self.attributes)}
        for key in ("first_name", "infix", "last_name", "language"):
            value = getattr(self, key)
            if value:
                data[key] = value
        if self.display_name:
            data["name"] = self.display_name
        if surname := family_name(self.infix, self.last_name):
            data["family_name"] = surname
        return data


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Message:
    """A message ready for the transport: DKIM-signed bytes and its envelope."""

    data: bytes
    envelope_from: str
    recipient: str
    message_id: str
    smtputf8: bool
    # passed delivery.wire.check where it was rendered: the SMTP session need not again
    checked: bool = False
    # ... and its data goes out after DATA as it is: no line begins with a dot (nothing
    # to dot-stuff), it ends with CRLF (wire.checked finds out, in the render helper)
    plain: bool = False


@dataclass(frozen=True)
class TemplateSources:
    """A template prepared for Jinja: flattened, inlined HTML and its text version;
    `folder` is where its files are (None for a campaign's frozen snapshot), so that a
    problem can be traced to the user's own file and line (locate.py)."""

    name: str
    html: str
    text: str
    folder: Path | None = None

    @property
    def text_name(self) -> str:
        """The name errors in the text part carry: the user's template, never an
        internal name."""
        return f"{self.name} (text part)"


def load_sources(folder: Path, name: str) -> TemplateSources:
    """Flatten (or convert from Markdown), inline CSS once, and derive the text part,
    unless a `<name>.txt.j2` beside the template gives its own.

    (Imported here, not at the top: premailer, lxml and Markdown weigh ~30 MB, and the
    processes that only render prepared sources never need them.)"""
    from mailer.content.flatten import flatten
    from mailer.content.inline import inline_css
    from mailer.content.markdown import is_markdown, markdown_template
    from mailer.content.textpart import html_to_text

    path = (folder / name)
    if is_markdown(name):
        try:
            source = path.read_text(encoding="utf-8")
        except OSError:
            raise TemplateProblem(f"Template not found: {name}") from None
        flat = markdown_template(folder, name, source)
    else:
        flat = flatten(folder, name)
    html = inline_css(flat)
    stem = re.sub(r"(\.html)?\.j2$|\.md(\.j2)?$|\.html?$", "", name)
    own_text = folder / f"{stem}.txt.j2"
    text = flatten(folder, f"{stem}.txt.j2") if own_text.is_file() else html_to_text(html)
    html_name = name if name.endswith((".html.j2", ".html", ".htm")) else f"{stem}.html.j2"
    return TemplateSources(html_name, html, text, folder)


def _fast(template: Template) -> Callable[[dict[str, Any]], str]:
    """Render with data that already holds the environment's globals (shared context:
    no copy of the data per render, ~4 us less). A failure renders again the normal
    way, which turns it into a clear TemplateProblem."""
    root, new_context = template.root_render_func, template.new_context

    def run(data: dict[str, Any]) -> str:
        try:
            return "".join(root(new_context(data, shared=True)))
        except Exception:  # noqa: BLE001 - re-raised as a TemplateProblem just below
            render(template, data)
            raise
    return run


@dataclass
class _Variant:
    """The templates of one language, with the campaign's constants rendered in."""

    base: dict[str, Any]
    subject: Callable[[dict[str, Any]], str]
    text: Callable[[dict[str, Any]], str]
    html: Callable[[dict[str, Any]], str]


class Mailing:
    """One template + subject + list + campaign, ready to make messages."""

    def __init__(self, *, sources: TemplateSources, subject: str, mailing_list: ListInfo,
                 campaign: CampaignInfo, organisation: dict[str, Any], public_url: str,
                 tokens: TokenSigner, domain: str = "", bounce_domain: str = "",
                 feedback_sender: str = "mailer",
                 dkim: DkimSigner | Sequence[DkimSigner] | None = None,
                 env: MailEnvironment | None = None) -> None:
        """`dkim`: a signer, or several (e.g. RSA and ed25519): each adds its signature."""
        self.sources = sources
        self.list = mailing_list
        self.campaign = campaign
        self._env = env or make_environment()
        self.subject_source = subject
        self._subject_check = from_source(self._env, subject, SUBJECT_NAME)
        self._organisation = dict(organisation)
        self._public_url = public_url.rstrip("/")
        self._tokens = tokens
        self.domain = (domain or mailing_list.from_address.rpartition("@")[2]).lower()
        self.bounce_domain = (bounce_domain or self.domain).lower()
        self._dkim: tuple[DkimSigner, ...] = (dkim,) if isinstance(dkim, DkimSigner) \
            else tuple(dkim or ())
        self._variants: dict[str, _Variant] = {}
        feedback = ":".join(re.sub(r"[^A-Za-z0-9._-]", "-", part) for part in (
            campaign.slug, mailing_list.slug, feedback_sender))
        self._composer = Composer(
            from_name=mailing_list.from_name, from_address=mailing_list.from_address,
            reply_to=mailing_list.reply_to, list_name=mailing_list.name,
            list_id=f"{mailing_list.slug}.{self.domain}", feedback_id=feedback,
            boundary=f"=_mailer_{secrets.token_hex(12)}")

    @property
    def signed(self) -> bool:
        return bool(self._dkim)

    def _variant(self, language: str | None) -> _Variant:
        language = language if language in LANGUAGES else self.list.language
        variant = self._variants.get(language)
        if variant is None:
            constants = {
                "org": self._organisation, "t": texts(language, self.list.language),
                "list": {"name": self.list.name, "slug": self.list.slug,
                         "language": self.list.language},
                "campaign": {"slug": self.campaign.slug, "title": self.campaign.title,
                             "date": self.campaign.date or date.today()}}
            env, name = self._env, self.sources.name
            html = prerender_constants(env, self.sources.html, name, constants)
            text_name = self.sources.text_name
            text = prerender_constants(env, self.sources.text, text_name, constants)
            variant = _Variant(
                base={**env.globals, **constants},
                subject=_fast(self._subject_check),
                text=_fast(from_source(env, text, text_name)),
                html=_fast(from_source(env, html, name)))
            self._variants[language] = variant
        return variant

    def urls(self, token: MessageToken) -> dict[str, str]:
        return {"unsubscribe": f"{self._public_url}/u/{token.link}",
                "preferences": f"{self._public_url}/p/{token.link}"}

    def template_data(self, recipient: Recipient, token: MessageToken, *, subject: str,
                      extra_urls: dict[str, str] | None = None,
                      values: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the templates of one message see (see the module's docstring), and
        `values` (e.g. `export` for the mail that carries a person's data)."""
        data = dict(self._variant(recipient.language).base)
        if values:
            data.update(values)
        data["subscriber"] = recipient.template_data()
        urls = self.urls(token)
        if extra_urls:
            urls.update(extra_urls)
        data["urls"] = urls
        data["subject"] = subject
        return data

    def render(self, recipient: Recipient, token: MessageToken, *,
               extra_urls: dict[str, str] | None = None,
               values: dict[str, Any] | None = None) -> Rendered:
        """Subject, text and HTML for one recipient; `extra_urls` (e.g. `confirm` for the
        double opt-in mail) join `urls`."""
        variant = self._variant(recipient.language)
        data = self.template_data(recipient, token, subject="", extra_urls=extra_urls,
                                  values=values)
        subject = variant.subject(data)
        data["subject"] = subject
        try:
            return Rendered(subject, variant.text(data), variant.html(data))
        except TemplateProblem as exc:
            raise self._in_user_files(exc) from None

    def _in_user_files(self, exc: TemplateProblem) -> TemplateProblem:
        """A render error of the prepared template (flattened and inlined: its line
        numbers are not the user's), said with the user's own file and line where the
        name it is about is read."""
        for prepared in (self.sources.name, self.sources.text_name):
            found = re.match(rf"{re.escape(prepared)}(?:, line \d+)?: (.*)", str(exc),
                             re.S)
            if found:
                break
        else:
            return exc
        reason = found[1]
        name = re.search(r"has no attribute '([^']+)'|'([^']+)' is undefined", reason)
        places = locate_name(self.sources.folder, self.sources.name,
                             name[1] or name[2]) if name else []
        return TemplateProblem(f"{'; '.join(places) or self.sources.name}: {reason}",
                               hint=exc.hint)

    def token(self, recipient: Recipient, *, now: datetime | None = None) -> MessageToken:
        return self._tokens.message_token(recipient.subscriber_id, self.list.id,
                                          self.campaign.id, now=now)

    def message(self, recipient: Recipient, *, now: datetime | None = None,
                extra_urls: dict[str, str] | None = None,
                values: dict[str, Any] | None = None,
                attachments: Sequence[Attachment] = ()) -> Message:
        """The signed message for one recipient, and its envelope; `values` join the
        template data, `attachments` follow the bodies."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        token = self.token(recipient, now=now)
        rendered = self.render(recipient, token, extra_urls=extra_urls, values=values)
        # Time first (8 hex digits of the epoch second), then the token: the Message-ID
        # index then grows at its end, and retention clearing old ones touches few of its
        # pages (bench/privacy_bench.py: a 1,000,000-row purge 249 s -> 49 s).
        message_id = f"{int(now.timestamp()):08x}.{token.address[:32]}@{self.domain}"
        composed = self._composer.compose(
            to_address=recipient.email, to_name=recipient.display_name,
            subject=rendered.subject, text=rendered.text, html=rendered.html,
            unsubscribe_url=f"{self._public_url}/u/{token.link}",
            unsubscribe_mailto=f"mailto:unsub+{token.address}@{self.bounce_domain}"
                               "?subject=unsubscribe",
            message_id=message_id, date=now, attachments=attachments)
        data = composed.data
        if self._dkim:
            data = dkim_sign(data, self._dkim, now=int(now.timestamp()))
        return Message(data, f"bounces+{token.address}@{self.bounce_domain}",
                       recipient.email, message_id, composed.smtputf8)

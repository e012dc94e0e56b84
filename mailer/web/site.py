"""What every handler of the web app shares: the project, its pages, lists and tokens,
the database writer, the count of forged links, and the background sender of
confirmation, welcome and export mails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailer.audience.lists import ListDefinition, load_definitions
from mailer.audience.selfservice import Member, find_member
from mailer.models import MailingList
from mailer.project import Project
from mailer.tokens import Purpose, TokenData, TokenError
from mailer.web.forgery import ForgedLinks, record_run
from mailer.web.pages import Pages
from mailer.web.security import client_ip, client_key
from mailer.web.texts import page_texts, pick_language
from mailer.web.throttle import Throttle
from mailer.web.writes import Writer

if TYPE_CHECKING:
    from mailer.delivery.sender import Sender

__all__ = ["Site"]

log = logging.getLogger("mailer.web")
LINK_TOKEN_LENGTH = 46  # base64url of a token (tokens.py)
NOTICE_POLL = 30.0  # seconds between looks for notices queued elsewhere (or deferred)
STOP_WAIT = 10.0  # seconds a stopping server gives the mails in flight


class Site:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.settings = project.settings
        self.engine = project.engine
        self.signer = project.signer
        self.pages = Pages(project.settings)
        self.writer = Writer(self.engine)
        self.definitions: dict[str, ListDefinition] = {
            d.slug: d for d in load_definitions(self.settings.lists_path)}
        web = self.settings.web
        self.per_ip = Throttle(web.signups_per_ip, 3600)
        self.per_address = Throttle(web.signups_per_address, 86400)
        self.forged_links = ForgedLinks(web.forged_tokens_alert, web.forged_tokens_minutes)
        self.confirm_max_age = timedelta(days=web.confirm_days)
        self._list_names: dict[int, tuple[str, str]] = {}
        self._notices_due = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._sending: Sender | None = None  # the round of the background sender, if any

    # -- tokens and people ----------------------------------------------------------------

    def read_token(self, token: str, *purposes: Purpose) -> TokenData | None:
        """The data of a link's token. Only the link spelling, exactly: the base32
        spelling of the same token is the bounce address, which mail servers see, and
        must not open anyone's pages."""
        if len(token) != LINK_TOKEN_LENGTH:
            return None
        for purpose in purposes:
            try:
                return self.signer.read(token, purpose)
            except TokenError:
                continue
        return None

    def member(self, data: TokenData) -> Member | None:
        with Session(self.engine) as session:
            return find_member(session, data.subscriber_id, data.list_id)

    def list_names(self, list_id: int) -> tuple[str, str] | None:
        """(name, language) of a list, cached: the one-click path must not query for it."""
        names = self._list_names.get(list_id)
        if names is None:
            with Session(self.engine) as session:
                ml = session.get(MailingList, list_id)
            if ml is None:
                return None
            names = self._list_names[list_id] = (ml.name, ml.language)
        return names

    def consent_of(self, slug: str, name: str, language: str) -> tuple[str, str]:
        """(text, version) a person agrees to for a list, in the page's language: its
        file's text in that language (`consent_text`, or the `[en]`/`[nl]` table's for
        the other one), else the built-in text of that language. Never the text of
        another language than the page's."""
        definition = self.definitions.get(slug)
        text = definition.texts(language).consent_text if definition else ""
        version = definition.consent_version if definition else "1"
        return text or page_texts(language)["default_consent"].format(list=name), version

    def intro_of(self, slug: str, language: str) -> str:
        """A list's description in the page's language, or nothing."""
        definition = self.definitions.get(slug)
        return definition.texts(language).description if definition else ""

    def public_list(self, slug: str) -> MailingList | None:
        """A list offered on the sign-up form (`public = true`), or None."""
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.exec(select(MailingList).where(MailingList.slug == slug)).first()
        return row if row is not None and row.public else None

    def list_by_id(self, list_id: int) -> MailingList | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(MailingList, list_id)

    # -- pages ------------------------------------------------------------------------------

    def language(self, request: Request, *preferred: str | None) -> str:
        return pick_language(*preferred,
                             accept_language=request.headers.get("accept-language", ""))

    def page(self, request: Request, *, title_key: str, text_key: str | None = None,
             member: Member | None = None, list_name: str = "", status: int = 200,
             links: list[tuple[str, str]] = (),  # type: ignore[assignment]
             form: dict[str, object] | None = None, language: str | None = None,
             **values: object) -> HTMLResponse:
        """A page of one title, one paragraph, an optional button and links; texts by key
        in the visitor's language, `{list}` and other `values` filled in."""
        if language is None:
            language = self.language(request, member.language if member else None,
                                     member.list_language if member else None)
        t = page_texts(language)
        fill = {"list": member.list_name if member else list_name, **values}
        if form is not None:
            form = {**form, "button": t[str(form.pop("button_key"))]}
        html = self.pages.render(
            language, title=t[title_key].format(**fill),
            lines=[t[text_key].format(**fill)] if text_key else [], form=form,
            links=[(href, t[key]) for href, key in links])
        return HTMLResponse(html, status_code=status)

    def not_found(self, request: Request) -> HTMLResponse:
        return self.page(request, status=404, title_key="invalid_title",
                         text_key="invalid_text")

    async def forged(self, request: Request) -> HTMLResponse:
        """The 404 page for a link whose token is not ours, counted: a run of them is
        recorded in the breach register (forgery.py)."""
        run = self.forged_links.count(client_key(client_ip(request)))
        if run is not None:
            try:
                number = await asyncio.to_thread(record_run, self.engine, run)
            except Exception:  # noqa: BLE001 - the page is answered all the same
                log.exception("recording a run of forged links failed")
            else:
                if number is not None:
                    log.warning("%d requests with a forged link within %d minutes from %d "
                                "client addresses: incident %d in the breach register",
                                run.requests, run.minutes, run.clients, number)
        return self.not_found(request)

    # -- confirmation and welcome mails -------------------------------------------------------

    def notices_queued(self) -> None:
        self._notices_due.set()

    async def start(self) -> None:
        self._sender = asyncio.create_task(self._send_notices())

    async def stop(self) -> None:
        if self._sender is not None:
            if self._sending is not None:  # the mails in flight finish and are recorded
                self._sending.stop("the server is stopping")
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(self._sender), STOP_WAIT)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self.writer.close()

    async def _send_notices(self) -> None:
        """Send queued notices soon after a sign-up, and look every NOTICE_POLL seconds
        for ones queued by other workers or deferred: through the outbox, by the same
        sender as `mailer run` (runner.notice_sender), with the project's transport and
        rate limits. It holds no run lock, so it leaves what another sender left
        "sending" to `mailer run`, and SIGINT/SIGTERM to the server."""
        from mailer.delivery.runner import limiter_for, notice_sender, transport_for

        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notices_due.wait(), NOTICE_POLL)
            self._notices_due.clear()
            try:
                # the limits afresh each round: quotas count what others sent since
                limiter = await asyncio.to_thread(limiter_for, self.project)
                self._sending = notice_sender(self.project, limiter=limiter, recover=False,
                                              transport=transport_for(self.project))
                await self._sending.run(signals=False)
            except Exception:  # noqa: BLE001 - keep serving; the next round retries
                log.exception("sending confirmation mails failed")
            finally:
                stopping = self._sending is not None and self._sending.report.stopped \
                    == "the server is stopping"
                self._sending = None
            if stopping:
                return

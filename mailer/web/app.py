"""The subscribers' side of mailer, as a Starlette app (`mailer serve` runs it).

    GET  /u/TOKEN     a page asking to confirm the unsubscribe (changes nothing: mail
                      scanners open links), with a button and a link to the preferences
    POST /u/TOKEN     RFC 8058 one-click: body List-Unsubscribe=One-Click (urlencoded or
                      multipart), no cookie, no auth: unsubscribed from that list at once,
                      200 without a redirect, idempotent; the page's button posts the same
    GET  /healthz     200 "ok", for the proxy and the load balancer
    GET  /static/site.css

A token is checked before anything else; a forged, truncated or altered one gets a 404
page, never a trace. Database writes go through one writer thread (`writes.Writer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from sqlmodel import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailer.audience.selfservice import Member, find_member, unsubscribe_member
from mailer.project import Project
from mailer.tokens import Purpose, TokenData, TokenError
from mailer.web.pages import Pages
from mailer.web.security import SecurityHeaders, client_ip
from mailer.web.texts import page_texts, pick_language
from mailer.web.writes import Writer

__all__ = ["create_app"]

ONE_CLICK = "One-Click"


class _Site:
    """What the handlers share: the project, its pages, the writer."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.settings = project.settings
        self.engine = project.engine
        self.signer = project.signer
        self.pages = Pages(project.settings)
        self.writer = Writer(self.engine)

    def read_token(self, token: str) -> TokenData | None:
        for purpose in (Purpose.MESSAGE, Purpose.UNSUBSCRIBE):
            try:
                return self.signer.read(token, purpose)
            except TokenError:
                continue
        return None

    def member(self, data: TokenData) -> Member | None:
        with Session(self.engine) as session:
            return find_member(session, data.subscriber_id, data.list_id)

    def page(self, request: Request, *, status: int = 200, member: Member | None = None,
             title_key: str, text_key: str | None = None, **kwargs: object) -> HTMLResponse:
        language = pick_language(member.language if member else None,
                                 member.list_language if member else None,
                                 accept_language=request.headers.get("accept-language", ""))
        t = page_texts(language)
        list_name = member.list_name if member else ""
        lines = [t[text_key].format(list=list_name)] if text_key else []
        html = self.pages.render(language, title=t[title_key].format(list=list_name),
                                 lines=lines, **kwargs)  # type: ignore[arg-type]
        return HTMLResponse(html, status_code=status)

    def not_found(self, request: Request) -> HTMLResponse:
        return self.page(request, status=404, title_key="invalid_title",
                         text_key="invalid_text")


def create_app(project: Project) -> Starlette:
    site = _Site(project)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def stylesheet(request: Request) -> Response:
        return Response(site.pages.css, media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})

    async def unsubscribe_page(request: Request) -> Response:
        data = site.read_token(request.path_params["token"])
        if data is None:
            return site.not_found(request)
        member = await run_in_threadpool(site.member, data)
        if member is None:
            return site.page(request, status=404, title_key="gone_title",
                             text_key="gone_text")
        token = request.path_params["token"]
        t_links = [(f"/p/{token}", "preferences_link")]
        if member.status == "unsubscribed":
            return _with_links(site, request, member, "unsubscribed_title",
                               "unsubscribed_text", t_links)
        return _with_links(site, request, member, "unsubscribe_title", "unsubscribe_ask",
                           t_links, form={"action": f"/u/{token}",
                                          "fields": [("List-Unsubscribe", ONE_CLICK)],
                                          "button_key": "unsubscribe_button"})

    async def unsubscribe_post(request: Request) -> Response:
        data = site.read_token(request.path_params["token"])
        if data is None:
            return site.not_found(request)
        if await _one_click_value(request) != ONE_CLICK:
            return PlainTextResponse("The body must be List-Unsubscribe=One-Click (RFC 8058).",
                                     status_code=400)
        ip, agent = client_ip(request), request.headers.get("user-agent")
        subscriber_id, list_id = data.subscriber_id, data.list_id

        def change(session: Session) -> Member | None:
            unsubscribe_member(session, subscriber_id, list_id, source="one-click link",
                               ip=ip, user_agent=agent)
            return find_member(session, subscriber_id, list_id)

        member = await site.writer(change)
        if member is None:  # erased meanwhile: nothing left to unsubscribe
            return site.page(request, title_key="unsubscribed_title")
        token = request.path_params["token"]
        return _with_links(site, request, member, "unsubscribed_title", "unsubscribed_text",
                           [(f"/p/{token}", "preferences_link")])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            site.writer.close()

    async def missing(request: Request, exc: Exception) -> Response:
        return site.not_found(request)

    app = Starlette(exception_handlers={404: missing, 405: missing}, routes=[
        Route("/healthz", healthz),
        Route("/static/site.css", stylesheet),
        Route("/u/{token}", unsubscribe_page, methods=["GET", "HEAD"]),
        Route("/u/{token}", unsubscribe_post, methods=["POST"]),
    ], lifespan=lifespan)
    app.add_middleware(SecurityHeaders, max_body=site.settings.web.max_body,
                       public_url=site.settings.public_url,
                       logo_url=site.settings.organisation.logo_url)
    app.state.site = site
    return app


def from_environment() -> Starlette:
    """The app of the project named by $MAILER_CONFIG (for `mailer serve --workers`)."""
    return create_app(Project.load(None))


def _with_links(site: _Site, request: Request, member: Member, title_key: str,
                text_key: str, links: list[tuple[str, str]],
                form: dict[str, object] | None = None) -> HTMLResponse:
    language = pick_language(member.language, member.list_language,
                             accept_language=request.headers.get("accept-language", ""))
    t = page_texts(language)
    if form is not None:
        form = {**form, "button": t[str(form.pop("button_key"))]}
    return HTMLResponse(site.pages.render(
        language, title=t[title_key].format(list=member.list_name),
        lines=[t[text_key].format(list=member.list_name)], form=form,
        links=[(href, t[key]) for href, key in links]))


async def _one_click_value(request: Request) -> str | None:
    """The List-Unsubscribe field of an urlencoded or multipart body (RFC 8058 allows
    both); anything else has none."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        values = parse_qs(body.decode("latin-1"), max_num_fields=20).get("List-Unsubscribe")
        return values[0] if values else None
    if kind == "multipart/form-data":
        async with request.form(max_files=0, max_fields=20) as form:
            value = form.get("List-Unsubscribe")
            return value if isinstance(value, str) else None
    return None

"""The subscribers' side of mailer, as a Starlette app (`mailer serve` runs it).

    /u/TOKEN              one-click unsubscribe (RFC 8058) and its page   unsubscribe.py
    /subscribe/SLUG       the sign-up form of a public list               signup.py
    /api/subscribe/SLUG   the same, as JSON
    /c/TOKEN              confirm a sign-up (double opt-in)
    /p/TOKEN              preferences: name, language, lists, leave all,  preferences.py
                          a copy of one's data by mail, erasure
    /l/TOKEN              a counted link of a campaign: +1, then 302 to    clicks.py
                          its address ([tracking] clicks = "aggregate")
    /webhooks/ses         Amazon SES bounces and complaints (SNS)         webhooks.py
    /webhooks/postmark    Postmark's bounce and spam complaint webhooks
    /healthz              200 "ok", for the proxy and the load balancer
    /static/site.css      the house style

A token is checked before anything else; a forged, truncated or altered one gets a 404
page, never a trace, and is counted: a run of them goes in the breach register
(forgery.py). Database writes go through one writer thread (`writes.Writer`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mailer.project import Project
from mailer.web import clicks, preferences, signup, unsubscribe, webhooks
from mailer.web.security import SecurityHeaders
from mailer.web.site import Site

__all__ = ["create_app", "from_environment"]


def create_app(project: Project) -> ASGIApp:
    site = Site(project)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def stylesheet(request: Request) -> Response:
        return Response(site.pages.css, media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})

    async def favicon(request: Request) -> Response:  # browsers ask; there is none
        return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})

    async def missing(request: Request, exc: Exception) -> Response:
        return site.not_found(request)

    async def broken(request: Request, exc: Exception) -> Response:
        """A bug or a database that went away: a page, never a trace (uvicorn logs it)."""
        return site.page(request, status=500, title_key="error_title",
                         text_key="error_text")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await site.start()
        # Everything loaded so far lives as long as the process: keep it out of the
        # garbage collector's full passes, which otherwise stall every request in flight.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await site.stop()

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/static/site.css", stylesheet),
                Route("/favicon.ico", favicon),
                *unsubscribe.routes(site), *signup.routes(site),
                *preferences.routes(site), *webhooks.routes(site), *clicks.routes(site)],
        exception_handlers={404: missing, 405: missing, Exception: broken},
        lifespan=lifespan)
    # Outside everything, Starlette's error handling included: a 500 gets the headers too.
    return SecurityHeaders(app, max_body=site.settings.web.max_body,
                           public_url=site.settings.public_url,
                           logo_url=site.settings.organisation.logo_url)


def from_environment() -> ASGIApp:
    """The app of the project named by $MAILER_CONFIG (for `mailer serve --workers`)."""
    return create_app(Project.load(None))

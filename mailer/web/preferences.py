"""The preferences page, from the link in every mail.

    GET  /p/TOKEN   name, language, the lists (ticked: on it), unsubscribe from
                    everything, and how to get a copy of one's data or have it erased
    POST /p/TOKEN   saves, then 303 to the same page (never elsewhere: no open redirect)

The token in the address is what proves who this is. A POST must come from this site's
own page: a request that says it comes from another origin is refused (CSRF).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.audience.selfservice import Preferences, preferences, update_preferences
from mailer.audience.subscribers import clean_name
from mailer.errors import InvalidInput
from mailer.tokens import Purpose
from mailer.web.security import client_ip
from mailer.web.site import Site
from mailer.web.texts import LANGUAGES, page_texts

__all__ = ["routes"]

PURPOSES = (Purpose.MESSAGE, Purpose.PREFERENCES)


def routes(site: Site) -> list[Route]:
    public = urlsplit(site.settings.public_url)

    def same_origin(request: Request) -> bool:
        """A POST of another site is refused. Browsers say where it comes from in Origin,
        except that our `Referrer-Policy: no-referrer` makes them send "null" there; then
        Sec-Fetch-Site says it (every current browser sends it). A client that sends
        neither is not a browser a CSRF could ride on."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return request.headers.get("sec-fetch-site", "same-origin") in (
                "same-origin", "none")
        parts = urlsplit(origin)
        return parts.netloc in (public.netloc, request.headers.get("host", ""))

    def load(subscriber_id: int) -> Preferences | None:
        with Session(site.engine) as session:
            return preferences(session, subscriber_id)

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        data = site.read_token(token, *PURPOSES)
        if data is None:
            return site.not_found(request)
        prefs = await run_in_threadpool(load, data.subscriber_id)
        if prefs is None:
            return site.page(request, status=404, title_key="gone_title",
                             text_key="gone_text")
        language = site.language(request, prefs.language)
        t = page_texts(language)
        contact = site.settings.organisation.email or site.settings.organisation.website
        consents = {c.list_id: site.consent_of(c.slug, c.name, language)[0]
                    for c in prefs.lists if not c.subscribed}
        html = site.pages.render(
            language, template="preferences.html.j2", title=t["prefs_title"], prefs=prefs,
            consents=consents,
            action=f"/p/{token}", saved=request.query_params.get("saved") == "1",
            data_text=t["prefs_data_text"].format(email=contact))
        return HTMLResponse(html)

    async def save(request: Request) -> Response:
        token = request.path_params["token"]
        data = site.read_token(token, *PURPOSES)
        if data is None:
            return site.not_found(request)
        if not same_origin(request):
            return PlainTextResponse("This form can only be sent from its own page.",
                                     status_code=403)
        async with request.form(max_files=0, max_fields=200, max_part_size=4096) as form:
            action = str(form.get("action") or "save")
            wanted = {int(v) for v in form.getlist("list") if isinstance(v, str)
                      and v.isascii() and v.isdigit() and len(v) < 10}
            names = {k: (str(form.get(k) or "").strip()[:100] or None)
                     for k in ("first_name", "last_name")}
            language = str(form.get("language") or "") or None
            shown = str(form.get("consent_language") or "")
        if action not in ("save", "unsubscribe-all"):
            return PlainTextResponse("Unknown action.", status_code=400)
        try:
            for key, value in names.items():
                clean_name(value, key.replace("_", " "))
        except InvalidInput as exc:
            return PlainTextResponse(str(exc), status_code=400)
        ip, agent = client_ip(request), request.headers.get("user-agent")
        subscriber_id = data.subscriber_id

        def change(session: Session) -> bool:
            current = preferences(session, subscriber_id)
            if current is None:
                return False
            page_language = shown if shown in LANGUAGES else (current.language or "nl")
            consents = {c.list_id: "{1}: {0}".format(
                *site.consent_of(c.slug, c.name, page_language)) for c in current.lists}
            if action != "save":  # unsubscribe from everything: keep names and language
                return update_preferences(
                    session, subscriber_id, first_name=current.first_name,
                    last_name=current.last_name, language=current.language, wanted=set(),
                    ip=ip, user_agent=agent)
            return update_preferences(session, subscriber_id, language=language,
                                      wanted=wanted, consents=consents, ip=ip,
                                      user_agent=agent, **names)

        if not await site.writer(change):
            return site.page(request, status=404, title_key="gone_title",
                             text_key="gone_text")
        return RedirectResponse(f"/p/{token}?saved=1", status_code=303)

    return [Route("/p/{token}", page, methods=["GET", "HEAD"]),
            Route("/p/{token}", save, methods=["POST"])]

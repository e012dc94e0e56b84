"""The preferences page, from the link in every mail.

    GET  /p/TOKEN   name, language, the lists (ticked: on it), unsubscribe from
                    everything, a copy of one's data, erasing it
    POST /p/TOKEN   action=save | unsubscribe-all: saves, then 303 to the same page
                    (never elsewhere: no open redirect)
                    action=export: queues the export mail (at most one a day), then 303
                    to the same page, which says it is on its way (or was, today)
                    action=erase: a page that asks "are you sure?", whose button posts
                    action=erase&confirm=yes: erases the person (privacy/erase.py), then
                    a page that says so; their links are not valid from then on

The token in the address is what proves who this is. A POST must come from this site's
own page: a request that says it comes from another origin is refused (CSRF).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.audience.selfservice import Preferences, preferences, update_preferences
from mailer.audience.subscribers import clean_name
from mailer.delivery.notices import queue as queue_notice
from mailer.delivery.notices import queued_since
from mailer.errors import InvalidInput
from mailer.models import (
    AuditLog,
    MailingList,
    NoticeKind,
    Subscriber,
    Subscription,
    utcnow,
)
from mailer.privacy.erase import erase_person
from mailer.tokens import Purpose, TokenData
from mailer.web.security import client_ip
from mailer.web.site import Site
from mailer.web.texts import LANGUAGES, page_texts

__all__ = ["routes"]

PURPOSES = (Purpose.MESSAGE, Purpose.PREFERENCES)
EXPORT_EVERY = timedelta(days=1)  # at most one export mail per person in this time
ACTOR = "web"  # who acts, in the audit trail: the person, on their preferences page


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
            return await site.forged(request)
        prefs = await run_in_threadpool(load, data.subscriber_id)
        if prefs is None:  # erased: a link of nobody, as a forged one looks
            return site.not_found(request)
        language = site.language(request, prefs.language)
        t = page_texts(language)
        notice = {"sent": t["prefs_export_sent"], "today": t["prefs_export_today"]}.get(
            request.query_params.get("export", ""))
        contact = site.settings.organisation.email or site.settings.organisation.website
        consents = {c.list_id: site.consent_of(c.slug, c.name, language)[0]
                    for c in prefs.lists if not c.subscribed}
        html = site.pages.render(
            language, template="preferences.html.j2", title=t["prefs_title"], prefs=prefs,
            consents=consents,
            action=f"/p/{token}", saved=request.query_params.get("saved") == "1",
            notice=notice,
            data_text=t["prefs_data_text"].format(email=contact))
        return HTMLResponse(html)

    async def save(request: Request) -> Response:
        token = request.path_params["token"]
        data = site.read_token(token, *PURPOSES)
        if data is None:
            return await site.forged(request)
        if not same_origin(request):
            return site.page(request, status=403, title_key="error_title",
                             text_key="foreign_form")
        async with request.form(max_files=0, max_fields=200, max_part_size=4096) as form:
            action = str(form.get("action") or "save")
            wanted = {int(v) for v in form.getlist("list") if isinstance(v, str)
                      and v.isascii() and v.isdigit() and len(v) < 10}
            names = {k: (str(form.get(k) or "").strip()[:100] or None)
                     for k in ("first_name", "last_name")}
            if "infix" in form:  # "" removes it; a page without the field keeps it
                names["infix"] = str(form.get("infix") or "").strip()[:100]
            language = str(form.get("language") or "") or None
            shown = str(form.get("consent_language") or "")
            confirmed = form.get("confirm") == "yes"
        if action == "export":
            return await export(request, token, data)
        if action == "erase":
            return await erase(request, token, data, confirmed=confirmed)
        shown_language = shown if shown in LANGUAGES else None
        if action not in ("save", "unsubscribe-all"):
            return site.page(request, status=400, title_key="error_title",
                             text_key="unknown_action", language=shown_language)
        try:
            for key, value in names.items():
                clean_name(value, key.replace("_", " "))
        except InvalidInput:
            return site.page(request, status=400, title_key="error_title",
                             text_key="bad_name", language=shown_language)
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
            return site.not_found(request)
        return RedirectResponse(f"/p/{token}?saved=1", status_code=303)

    async def export(request: Request, token: str, data: TokenData) -> Response:
        """Queue the export mail (made when it is sent), unless one was asked for in the
        last day; 303 to the page, which says which."""
        subscriber_id = data.subscriber_id

        def queue(session: Session) -> str | None:
            person = session.exec(select(Subscriber.id).where(
                Subscriber.id == subscriber_id).with_for_update()).first()
            if person is None:
                return None
            if queued_since(session.connection(), NoticeKind.EXPORT, subscriber_id,
                            utcnow() - EXPORT_EVERY):
                return "today"
            # sent as from the list of the link; any of theirs if that list is gone
            list_id = data.list_id if session.get(MailingList, data.list_id) else \
                session.exec(select(Subscription.list_id).where(
                    Subscription.subscriber_id == subscriber_id)).first()
            if list_id is None:
                return None
            queue_notice(session.connection(), NoticeKind.EXPORT, list_id, [subscriber_id],
                         again=True)
            session.add(AuditLog(actor=ACTOR, action="gdpr.export", detail={
                "subscriber": subscriber_id, "source": "web"}))
            return "sent"

        outcome = await site.writer(queue)
        if outcome is None:
            return site.not_found(request)
        if outcome == "sent":
            site.notices_queued()
        return RedirectResponse(f"/p/{token}?export={outcome}", status_code=303)

    async def erase(request: Request, token: str, data: TokenData, *,
                    confirmed: bool) -> Response:
        """Without `confirmed`: the page that asks. With it: erase, then say so."""
        prefs = await run_in_threadpool(load, data.subscriber_id)
        if prefs is None:
            return site.not_found(request)
        language = site.language(request, prefs.language)
        if not confirmed:
            return site.page(request, title_key="erase_title", text_key="erase_ask",
                             language=language, links=[(f"/p/{token}", "erase_cancel")],
                             form={"action": f"/p/{token}",
                                   "fields": [("action", "erase"), ("confirm", "yes")],
                                   "button_key": "erase_button"})

        def forget() -> bool:
            """In a thread of the pool (erase_person commits on its own connection, so
            not in the writer's transaction)."""
            with Session(site.engine) as session:
                person = session.get(Subscriber, data.subscriber_id)
                email = person.email if person is not None else None
            if email is None:
                return False
            erase_person(site.engine, site.project.hash_key, email, actor=ACTOR,
                         source="web")
            return True

        if not await run_in_threadpool(forget):
            return site.not_found(request)
        return site.page(request, title_key="erased_title", text_key="erased_text",
                         language=language)

    return [Route("/p/{token}", page, methods=["GET", "HEAD"]),
            Route("/p/{token}", save, methods=["POST"])]

"""Signing up (form and JSON) and confirming (double opt-in).

    GET  /subscribe/SLUG        the form of a public list: address, optional first name,
                                language, the list's consent text (stored with its
                                version), a honeypot
    POST /subscribe/SLUG        the form (also from a copy embedded in another site)
    POST /api/subscribe/SLUG    {"email": …, "first_name": …, "language": …, "consent": true}
                                answered in one language, like the pages: {"status" or
                                "error": the text, "code": for a script, "language"}
    GET  /c/TOKEN               a page with a button (a GET changes nothing)
    POST /c/TOKEN               confirms, records the consent event; idempotent

Whatever an address's state, a sign-up answers the same: a stranger cannot learn who is
subscribed. A bot that fills the honeypot, an address signed up too often today and a
suppressed address get that same answer, and nothing happens. Too many sign-ups from one
client address get 429.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mailer.audience.addresses import InvalidAddress, normalise_address
from mailer.audience.selfservice import SignUp, confirm_member, sign_up
from mailer.audience.subscribers import clean_name
from mailer.errors import InvalidInput
from mailer.models import MailingList
from mailer.tokens import Purpose, TokenData, TokenError
from mailer.web.security import client_ip, client_key
from mailer.web.site import Site
from mailer.web.texts import LANGUAGES, address_problem, page_texts

__all__ = ["routes"]

MAX_FIELD = 320


def routes(site: Site) -> list[Route]:
    def form_page(request: Request, ml: MailingList, *, status: int = 200,
                  error: str | None = None, values: dict[str, str] | None = None,
                  language: str | None = None) -> HTMLResponse:
        language = language or site.language(request, None, ml.language)
        t = page_texts(language)
        text, version = site.consent_of(ml.slug, ml.name, language)
        html = site.pages.render(
            language, template="subscribe.html.j2",
            title=t["subscribe_title"].format(list=ml.name),
            intro=site.intro_of(ml.slug, language),
            error=error, action=f"/subscribe/{ml.slug}", consent_text=text,
            consent_version=version, consent_language=language,
            values={"email": "", "first_name": "", **(values or {})})
        return HTMLResponse(html, status_code=status)

    async def attempt(request: Request, ml: MailingList, fields: dict[str, Any],
                      language: str) -> tuple[str, str | None]:
        """("ok" | "invalid" | "consent" | "busy", message) for a sign-up attempt. Every
        check that can fail is made before the address is looked up: the answer must
        not depend on whether it is known."""
        t = page_texts(language)
        if not site.per_ip.allow(client_key(client_ip(request))):
            return "busy", None
        if fields.get("website"):  # the honeypot: a bot
            return "ok", None
        consent = fields.get("consent")
        if not (consent is True or consent in ("yes", "on", "true")):
            return "consent", t["need_consent"]
        email, first_name = fields.get("email"), fields.get("first_name") or None
        wanted = fields.get("language") or language
        if not isinstance(email, str) or not isinstance(first_name, str | None) \
                or not isinstance(wanted, str):
            return "invalid", address_problem("", language)
        shown = fields.get("consent_language")
        text, version = site.consent_of(ml.slug, ml.name, shown if shown in LANGUAGES else language)
        if fields.get("consent_version", version) != version:
            return "consent", t["consent_changed"]  # the text changed since it was shown
        try:
            address = normalise_address(email.strip()[:MAX_FIELD])
            name = clean_name(first_name and first_name.strip()[:100], "first name")
        except InvalidAddress as exc:
            return "invalid", address_problem(str(exc), language)
        except InvalidInput:
            return "invalid", t["bad_name"]
        if not site.per_address.allow(address):
            return "ok", None
        ip, agent = client_ip(request), request.headers.get("user-agent")

        def change(session: Session) -> SignUp:
            return sign_up(session, site.project.hash_key, email=address, mailing_list=ml,
                           consent=f"{version}: {text}", first_name=name,
                           language=wanted, ip=ip, user_agent=agent)

        try:
            done = await site.writer(change)
        except IntegrityError:  # the same person signed up in another process just now
            done = await site.writer(change)
        if done.notice is not None:
            site.notices_queued()
        return "ok", None

    async def form_get(request: Request) -> Response:
        ml = await run_in_threadpool(site.public_list, request.path_params["slug"])
        if ml is None:
            return site.not_found(request)
        return form_page(request, ml)

    async def form_post(request: Request) -> Response:
        ml = await run_in_threadpool(site.public_list, request.path_params["slug"])
        if ml is None:
            return site.not_found(request)
        async with request.form(max_files=0, max_fields=20, max_part_size=4096) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        language = fields.get("language") if fields.get("language") in LANGUAGES \
            else site.language(request, None, ml.language)
        outcome, message = await attempt(request, ml, fields, language)
        if outcome == "busy":
            return site.page(request, status=429, title_key="too_many_title",
                             text_key="too_many_text", language=language)
        if outcome != "ok":
            return form_page(request, ml, status=400, error=message, language=language,
                             values={"email": fields.get("email", "")[:MAX_FIELD],
                                     "first_name": fields.get("first_name", "")[:100]})
        return site.page(request, title_key="check_mail_title", text_key="check_mail_text",
                         language=language)

    async def api_post(request: Request) -> Response:
        """The form's sign-up as JSON. Every answer is in one language, like the pages:
        the `language` asked for, else the caller's Accept-Language, else the list's;
        `status` or `error` is the text to show, `code` what happened, for a script."""
        ml = await run_in_threadpool(site.public_list, request.path_params["slug"])
        try:
            fields = json.loads(await request.body())
            if not isinstance(fields, dict):
                raise ValueError
        except (ValueError, RecursionError):
            fields = None
        asked = fields.get("language") if fields is not None else None
        language = asked if asked in LANGUAGES else \
            site.language(request, None, ml.language if ml is not None else None)
        t = page_texts(language)

        def answer(status: int, code: str, text: str) -> JSONResponse:
            key = "status" if status < 400 else "error"
            return JSONResponse({key: text, "code": code, "language": language},
                                status_code=status, headers=CORS)

        if ml is None:
            return answer(404, "no_list", t["api_no_list"])
        if fields is None:
            return answer(400, "not_json", t["api_not_json"])
        outcome, message = await attempt(request, ml, fields, language)
        if outcome == "busy":
            return answer(429, "busy", t["too_many_text"])
        if outcome != "ok":
            return answer(400, outcome, message or "")
        return answer(202, "check_mail", t["check_mail_text"])

    async def api_options(request: Request) -> Response:
        return Response(status_code=204, headers={
            **CORS, "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"})

    async def read_confirm(request: Request) -> TokenData | Response:
        """The confirmation token's data, or the page for a bad or expired one."""
        token = request.path_params["token"]
        if site.read_token(token, Purpose.CONFIRM) is None:
            return await site.forged(request)
        try:
            return site.signer.read(token, Purpose.CONFIRM, max_age=site.confirm_max_age)
        except TokenError as exc:
            if not exc.expired:
                return site.not_found(request)
        data = site.signer.read(token, Purpose.CONFIRM)
        ml = await run_in_threadpool(site.list_by_id, data.list_id)
        links = [(f"/subscribe/{ml.slug}", "signup_again")] if ml and ml.public else []
        return site.page(request, status=410, title_key="expired_title",
                         text_key="expired_text", days=site.settings.web.confirm_days,
                         list_name=ml.name if ml else "", links=links)

    async def confirm_get(request: Request) -> Response:
        data = await read_confirm(request)
        if isinstance(data, Response):
            return data
        member = await run_in_threadpool(site.member, data)
        if member is None:
            return site.page(request, status=404, title_key="gone_title",
                             text_key="gone_text")
        if member.status == "confirmed":
            return site.page(request, member=member, title_key="confirmed_title",
                             text_key="confirmed_text")
        token = request.path_params["token"]
        return site.page(request, member=member, title_key="confirm_title",
                         text_key="confirm_text",
                         form={"action": f"/c/{token}", "fields": [],
                               "button_key": "confirm_button"})

    async def confirm_post(request: Request) -> Response:
        data = await read_confirm(request)
        if isinstance(data, Response):
            return data
        ip, agent = client_ip(request), request.headers.get("user-agent")
        subscriber_id, list_id = data.subscriber_id, data.list_id

        def change(session: Session) -> str | None:
            return confirm_member(session, subscriber_id, list_id, issued_at=data.issued_at,
                                  ip=ip, user_agent=agent)

        status = await site.writer(change)
        member = await run_in_threadpool(site.member, data)
        if status is None or member is None:
            return site.page(request, status=404, title_key="gone_title",
                             text_key="gone_text")
        if status == "unsubscribed":
            return site.page(request, member=member, title_key="unsubscribed_title",
                             text_key="confirm_left_text")
        return site.page(request, member=member, title_key="confirmed_title",
                         text_key="confirmed_text")

    return [Route("/subscribe/{slug}", form_get, methods=["GET", "HEAD"]),
            Route("/subscribe/{slug}", form_post, methods=["POST"]),
            Route("/api/subscribe/{slug}", api_post, methods=["POST"]),
            Route("/api/subscribe/{slug}", api_options, methods=["OPTIONS"]),
            Route("/c/{token}", confirm_get, methods=["GET", "HEAD"]),
            Route("/c/{token}", confirm_post, methods=["POST"])]


# The JSON endpoint is for other sites' pages: any origin may call it, without cookies.
CORS = {"Access-Control-Allow-Origin": "*"}

"""RFC 8058 one-click unsubscribe and its page.

    GET  /u/TOKEN   a page asking to confirm (changes nothing: mail scanners open links),
                    with a button and a link to the preferences
    POST /u/TOKEN   body List-Unsubscribe=One-Click (urlencoded or multipart), no cookie,
                    no auth: unsubscribed from that list at once, 200 without a redirect,
                    idempotent. The page's button posts the same.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailer.audience.selfservice import Member, unsubscribe_member
from mailer.dbtypes import placeholder
from mailer.tokens import Purpose
from mailer.web.security import client_ip
from mailer.web.site import Site

__all__ = ["routes"]

ONE_CLICK = "One-Click"
PURPOSES = (Purpose.MESSAGE, Purpose.UNSUBSCRIBE)


def routes(site: Site) -> list[Route]:
    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        data = site.read_token(token, *PURPOSES)
        if data is None:
            return await site.forged(request)
        member = await run_in_threadpool(site.member, data)
        if member is None:  # erased: a link of nobody, as a forged one looks
            return site.not_found(request)
        links = [(f"/p/{token}", "preferences_link")]
        if member.status == "unsubscribed":
            return site.page(request, member=member, title_key="unsubscribed_title",
                             text_key="unsubscribed_text", links=links)
        return site.page(request, member=member, title_key="unsubscribe_title",
                         text_key="unsubscribe_ask", links=links,
                         form={"action": f"/u/{token}",
                               "fields": [("List-Unsubscribe", ONE_CLICK)],
                               "button_key": "unsubscribe_button"})

    async def one_click(request: Request) -> Response:
        token = request.path_params["token"]
        data = site.read_token(token, *PURPOSES)
        if data is None:
            return await site.forged(request)
        if await _one_click_value(request) != ONE_CLICK:
            return PlainTextResponse("The body must be List-Unsubscribe=One-Click (RFC 8058).",
                                     status_code=400)
        ip, agent = client_ip(request), request.headers.get("user-agent")
        subscriber_id, list_id = data.subscriber_id, data.list_id
        q = placeholder(site.engine.dialect)

        def change(session: Session) -> tuple[bool, str | None] | None:
            """(found, the person's language); None when the person is gone."""
            unsubscribe_member(session, subscriber_id, list_id, source="one-click link",
                               ip=ip, user_agent=agent)
            row = session.connection().exec_driver_sql(
                f"SELECT language FROM subscriber WHERE id = {q}", (subscriber_id,)).first()
            return None if row is None else (True, row[0])

        person = await site.writer(change)
        names = site.list_names(list_id)
        if person is None or names is None:  # erased meanwhile: nothing left to unsubscribe
            return site.page(request, title_key="unsubscribed_title")
        member = Member(subscriber_id, list_id, person[1], names[0], names[1],
                        "unsubscribed")
        return site.page(request, member=member, title_key="unsubscribed_title",
                         text_key="unsubscribed_text",
                         links=[(f"/p/{token}", "preferences_link")])

    return [Route("/u/{token}", page, methods=["GET", "HEAD"]),
            Route("/u/{token}", one_click, methods=["POST"])]


async def _one_click_value(request: Request) -> str | None:
    """The List-Unsubscribe field of an urlencoded or multipart body (RFC 8058 allows
    both); anything else has none."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            values = parse_qs(body.decode("latin-1"), max_num_fields=20)
        except ValueError:  # more fields than any one-click body has
            return None
        found = values.get("List-Unsubscribe")
        return found[0] if found else None
    if kind == "multipart/form-data":
        async with request.form(max_files=0, max_fields=20) as form:
            value = form.get("List-Unsubscribe")
            return value if isinstance(value, str) else None
    return None

"""A counted link of a campaign (`[tracking] clicks = "aggregate"`, content/tracking.py).

    GET  /l/TOKEN   +1 for that link of that campaign, then 302 to the link's address
    HEAD /l/TOKEN   the same redirect, not counted (link checkers and scanners ask HEAD)

TOKEN names a campaign and a link number, never a person (every recipient has the same
link). The address redirected to is the one stored for that link when the campaign
started: it comes from the database, never from the request, so the server redirects only
to where the campaign's own template pointed (no open redirect). A forged or altered token,
or a link of a campaign that was deleted, gets the 404 page; forged ones are counted
like every forged link (forgery.py). `Cache-Control: no-store`: a browser that follows the
link again asks again, and is counted again.
"""

from __future__ import annotations

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.content.tracking import PATH
from mailer.dbtypes import placeholder
from mailer.tokens import Purpose
from mailer.web.site import Site

__all__ = ["routes"]


def routes(site: Site) -> list[Route]:
    q = placeholder(site.engine.dialect)

    async def follow(request: Request) -> Response:
        data = site.read_token(request.path_params["token"], Purpose.CLICK)
        if data is None:
            return await site.forged(request)
        key = (data.campaign_id, data.list_id)  # the link's number rides in the list field
        count = request.method == "GET"

        def click(session: Session) -> str | None:
            conn = session.connection()
            if count:
                conn.exec_driver_sql(f"UPDATE link_click SET clicks = clicks + 1 "
                                     f"WHERE campaign_id = {q} AND link_index = {q}", key)
            row = conn.exec_driver_sql(f"SELECT url FROM link_click WHERE campaign_id = {q} "
                                       f"AND link_index = {q}", key).first()
            return None if row is None else str(row[0])

        url = await site.writer(click)
        if url is None:  # the campaign was deleted: its links are gone
            return site.not_found(request)
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    return [Route(PATH + "{token}", follow, methods=["GET", "HEAD"])]

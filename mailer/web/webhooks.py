"""The providers' webhooks in `mailer serve`: what Amazon SES and Postmark report as bounced
or complained about, recorded like a returned message (docs/feedback.md, "Webhooks").

    POST /webhooks/ses        Amazon SES notifications through an SNS HTTPS subscription
    POST /webhooks/postmark   Postmark's bounce and spam complaint webhooks (basic auth)

    403   the request failed verification (signature, topic, certificate address, basic
          auth): nothing was read further and nothing changed
    404   that webhook is not configured (no `ses_topics`; no Postmark user or password),
          the same page as any unknown address
    503   AWS could not be reached for the certificate or the subscription: SNS retries
    200   taken; a notification sent again (same provider id) is 200 and counts once

A thin adapter on purpose: checking and mapping live in mailer/feedback/webhooks.py (no
Starlette there), recording in the feedback processor. Neither runs on the event loop:
verification may fetch a certificate over the network, and `Processor.record` opens its
own session and transaction (the idempotency check, the events and the policy's actions
in one), so it cannot join the site writer's shared transaction; both go to the thread
pool, as unsubscribe.py does with its reads. The body's size is capped by the security
middleware before any of this runs.
"""

from __future__ import annotations

import functools
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailer.feedback.processing import Processor
from mailer.feedback.webhooks import (
    Accepted,
    Fetch,
    Malformed,
    PostmarkWebhook,
    Refused,
    SesWebhook,
    Unavailable,
)
from mailer.web.security import client_ip
from mailer.web.site import Site

__all__ = ["routes"]

log = logging.getLogger("mailer.web")


def routes(site: Site, *, fetch: Fetch | None = None) -> list[Route]:
    """The two webhook routes; `fetch` GETs from AWS (default: urllib, TLS verified)."""
    settings = site.settings.feedback
    ses = SesWebhook(settings.ses_topics, fetch=fetch) if settings.ses_topics else None
    secret = site.settings.secrets.postmark_webhook_password
    password = secret.get_secret_value() if secret else ""
    postmark = PostmarkWebhook(settings.postmark_webhook_user, password) \
        if settings.postmark_webhook_user and password else None
    if settings.postmark_webhook_user and not password:
        log.warning("[feedback] postmark_webhook_user is set but the secret "
                    "postmark_webhook_password is not: the Postmark webhook is off")

    @functools.cache
    def processor() -> Processor:
        from mailer.feedback.runner import processor as make

        return make(site.project)

    async def record(accepted: Accepted) -> Response:
        if accepted.report is None or accepted.key is None:
            return PlainTextResponse(accepted.note)
        outcome = await run_in_threadpool(processor().record, accepted.report, accepted.key,
                                          source=f"webhook:{accepted.provider}")
        if outcome.duplicate:
            return PlainTextResponse("duplicate")
        log.info("%s webhook %s: %s %s", accepted.provider, accepted.key,
                 accepted.report.kind, ", ".join(outcome.actions) or "nothing")
        return PlainTextResponse("recorded")

    def refused(request: Request, provider: str, exc: Exception) -> Response:
        log.warning("%s webhook: refused a request from %s: %s", provider,
                    client_ip(request), exc)
        return PlainTextResponse("Forbidden.", status_code=403)

    async def from_ses(request: Request) -> Response:
        if ses is None:
            return site.not_found(request)
        body = await request.body()
        try:
            accepted = await run_in_threadpool(ses.receive, body,
                                               request.headers.get("x-amz-sns-message-type"))
        except Refused as exc:
            return refused(request, "ses", exc)
        except Unavailable as exc:
            log.warning("ses webhook: %s", exc)
            return PlainTextResponse("AWS could not be reached; try again.",
                                     status_code=503, headers={"Retry-After": "60"})
        return await record(accepted)

    async def from_postmark(request: Request) -> Response:
        if postmark is None:
            return site.not_found(request)
        if not postmark.authorised(request.headers.get("authorization")):
            return refused(request, "postmark", Refused("wrong user or password"))
        body = await request.body()
        try:
            accepted = postmark.receive(body)
        except Malformed as exc:
            return PlainTextResponse(f"{exc}.", status_code=400)
        return await record(accepted)

    return [Route("/webhooks/ses", from_ses, methods=["POST"]),
            Route("/webhooks/postmark", from_postmark, methods=["POST"])]

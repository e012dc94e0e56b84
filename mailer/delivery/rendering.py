"""Making the messages of a send: in the sending process, or in helper processes.

Rendering and signing a message costs ~160 us of CPU, sending it over SMTP and writing its
state about as much again; in one Python process the two share one core. For a large
campaign the sender therefore renders in `processes` helper processes (spawned, each
loading the project and the campaign's frozen snapshot itself), in chunks, a few chunks
ahead, while the sending process only talks SMTP and writes states: both cores work.
Small campaigns (and the tests of the sending logic) render inline: starting a helper
costs about a second.

Either way a renderer turns a chunk of due deliveries into (due, message or error),
where the error is a template problem of that recipient, recorded as a failed delivery.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

from mailer.content.environment import TemplateProblem
from mailer.content.mailing import Mailing, Message
from mailer.delivery.outbox import Due

__all__ = ["InlineRenderer", "ProcessRenderer", "Rendered", "Renderer"]

Rendered = tuple[Due, Message | None, str | None]


class Renderer(Protocol):
    async def render(self, chunk: list[Due]) -> list[Rendered]: ...
    def close(self) -> None: ...


def _render(mailing_for: Callable[[int], Mailing], chunk: list[Due]) -> list[Rendered]:
    out: list[Rendered] = []
    for due in chunk:
        assert due.recipient is not None
        try:
            out.append((due, mailing_for(due.list_id).message(due.recipient), None))
        except TemplateProblem as exc:
            out.append((due, None, f"template: {exc}"))
    return out


class InlineRenderer:
    def __init__(self, mailing_for: Callable[[int], Mailing]) -> None:
        self.mailing_for = mailing_for

    async def render(self, chunk: list[Due]) -> list[Rendered]:
        return _render(self.mailing_for, chunk)

    def close(self) -> None:
        return None


# -- helper processes ------------------------------------------------------------------------

_MAILING_FOR: Callable[[int], Mailing] | None = None


def _start(config: str | None, campaign_id: int) -> None:
    """In a helper process: load the project and the campaign's mailings once."""
    global _MAILING_FOR
    from mailer.db import session_scope
    from mailer.delivery.runner import mailings_for
    from mailer.models import Campaign
    from mailer.project import Project

    project = Project.load(config)
    with session_scope(project.engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        session.expunge(campaign)
    _MAILING_FOR = mailings_for(project, campaign)


def _render_in_helper(chunk: list[Due]) -> list[Rendered]:
    assert _MAILING_FOR is not None
    return _render(_MAILING_FOR, chunk)


class ProcessRenderer:
    def __init__(self, *, config: str | None, campaign_id: int, processes: int) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(config, campaign_id))

    async def render(self, chunk: list[Due]) -> list[Rendered]:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, _render_in_helper, chunk)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

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

A helper gets a `MailingRecipe`: the campaign's frozen sources and everything else a
Mailing needs, with no project, settings or database. It imports only the renderer
(Jinja, the composer, the signer: ~30 MB, against ~95 MB for all of mailer), so two
helpers fit beside the sender where signing is the slow part (RSA).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mailer.content.dkim import Signer as DkimSigner
from mailer.content.dkim import load_key
from mailer.content.environment import TemplateProblem
from mailer.content.mailing import (
    CampaignInfo,
    ListInfo,
    Mailing,
    Message,
    Recipient,
    TemplateSources,
)
from mailer.delivery.orphans import exit_with_parent
from mailer.tokens import Signer as TokenSigner

__all__ = ["Due", "InlineRenderer", "MailingRecipe", "ProcessRenderer", "Rendered",
           "Renderer"]


@dataclass(frozen=True)
class Due:
    """A delivery whose turn it is, with its recipient as of now (None: skip it)."""

    id: int
    list_id: int
    attempts: int
    recipient: Recipient | None  # None: skip, for `skip_reason`
    skip_reason: str | None = None


Rendered = tuple[Due, Message | None, str | None]


@dataclass(frozen=True)
class MailingRecipe:
    """Everything to build a campaign's Mailings (one per list), picklable: what a helper
    process gets instead of the project. Holds the token keys: it only ever travels down
    the pipe to our own helper processes."""

    sources: TemplateSources
    subject: str
    campaign: CampaignInfo
    lists: dict[int, ListInfo]
    organisation: dict[str, Any]
    public_url: str
    token_keys: tuple[bytes, tuple[bytes, ...]]
    sending_domain: str = ""
    bounce_domain: str = ""
    feedback_sender: str = "mailer"
    dkim: tuple[tuple[str, str], ...] = ()  # (key file, selector) per signing key
    dkim_rsa: bool = False  # signing is the slow part: more helpers pay

    def mailing_for(self) -> Callable[[int], Mailing]:
        """list id -> its Mailing, each made once, when first needed."""
        tokens = TokenSigner(self.token_keys[0], self.token_keys[1])
        keys = [(load_key(Path(path)), selector) for path, selector in self.dkim]
        cache: dict[int, Mailing] = {}

        def mailing_for(list_id: int) -> Mailing:
            if list_id not in cache:
                ml = self.lists[list_id]
                domain = (self.sending_domain or ml.from_address.rpartition("@")[2]).lower()
                cache[list_id] = Mailing(
                    sources=self.sources, subject=self.subject, mailing_list=ml,
                    campaign=self.campaign, organisation=self.organisation,
                    public_url=self.public_url, tokens=tokens, domain=domain,
                    bounce_domain=self.bounce_domain, feedback_sender=self.feedback_sender,
                    dkim=[DkimSigner(key, domain=domain, selector=selector)
                          for key, selector in keys])
            return cache[list_id]
        return mailing_for


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


def _start(recipe: MailingRecipe, parent: int) -> None:
    """In a helper process: the campaign's mailings, made once; the helper ends when
    the sender does, however it ends (mailer/delivery/orphans.py)."""
    global _MAILING_FOR
    exit_with_parent(parent)
    _MAILING_FOR = recipe.mailing_for()


def _render_in_helper(chunk: list[Due]) -> list[Rendered]:
    assert _MAILING_FOR is not None
    return _render(_MAILING_FOR, chunk)


class ProcessRenderer:
    def __init__(self, recipe: MailingRecipe, *, processes: int) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(recipe, os.getpid()))

    async def render(self, chunk: list[Due]) -> list[Rendered]:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, _render_in_helper, chunk)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

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

Every Mailing of a project is made here, from a recipe (`recipe_from` turns the
settings into one): a campaign's send, its start check and test mail, the
confirmation and welcome mails, `templates check` and `preview`. So the sending domain
is worked out in one place (`sending_domain`), and a process loads each DKIM key file
once (`load_keys`), however many mailings it makes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

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
from mailer.delivery.wire import Unsendable, checked
from mailer.tokens import Signer as TokenSigner

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.content.dkim import PrivateKey

__all__ = ["Due", "InlineRenderer", "MailingRecipe", "ProcessRenderer", "Rendered",
           "Renderer", "key_files", "load_keys", "recipe_from", "sending_domain"]


@dataclass(frozen=True)
class Due:
    """A delivery whose turn it is, with its recipient as of now (None: skip it)."""

    id: int
    list_id: int
    attempts: int
    recipient: Recipient | None  # None: skip, for `skip_reason`
    skip_reason: str | None = None
    campaign_id: int = 0  # set for the engine's own mails (notices, steps): see sender.py


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
        keys = load_keys(self.dkim)
        cache: dict[int, Mailing] = {}

        def mailing_for(list_id: int) -> Mailing:
            if list_id not in cache:
                ml = self.lists[list_id]
                domain = sending_domain(self.sending_domain, ml.from_address)
                cache[list_id] = Mailing(
                    sources=self.sources, subject=self.subject, mailing_list=ml,
                    campaign=self.campaign, organisation=self.organisation,
                    public_url=self.public_url, tokens=tokens, domain=domain,
                    bounce_domain=self.bounce_domain, feedback_sender=self.feedback_sender,
                    dkim=[DkimSigner(key, domain=domain, selector=selector)
                          for key, selector in keys])
            return cache[list_id]
        return mailing_for


def sending_domain(configured: str, from_address: str) -> str:
    """The domain a list's messages are sent and signed as: `[sending] domain`, else
    the domain of the list's From address."""
    return (configured or from_address.rpartition("@")[2]).lower()


# (path, and the file's identity: a replaced, changed or chmod-ed file is loaded anew,
# and checked again) -> the loaded key
_KEYS: dict[tuple[str, int, int, int, int, int], PrivateKey] = {}


def load_keys(pairs: tuple[tuple[str, str], ...]) -> list[tuple[PrivateKey, str]]:
    """(key, selector) for each (key file, selector): each file loaded and checked
    (readable by its owner only) once per process, while it stays as it was."""
    keys = []
    for path, selector in pairs:
        try:
            st = os.stat(path)
            ident = (path, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid)
        except OSError:  # load_key says what is wrong with it
            ident = None
        if ident is None or ident not in _KEYS:
            key = load_key(Path(path))
            if ident is not None:
                _KEYS[ident] = key
        else:
            key = _KEYS[ident]
        keys.append((key, selector))
    return keys


def recipe_from(settings: Settings, *, sources: TemplateSources, subject: str,
                campaign: CampaignInfo, lists: list[ListInfo]) -> MailingRecipe:
    """The recipe for `sources` sent to `lists`, with the project's settings: the one
    way from a project to its Mailings. The keys are loaded here (once per process), so
    a missing or unsafe key file is said before any helper process starts."""
    sending = settings.sending
    current, previous = settings.secrets.signer_keys()
    files = key_files(settings)
    return MailingRecipe(
        sources=sources, subject=subject, campaign=campaign,
        lists={ml.id: ml for ml in lists}, organisation=settings.organisation.model_dump(),
        public_url=settings.public_url, token_keys=(current, tuple(previous)),
        sending_domain=sending.domain, bounce_domain=sending.bounce_domain,
        feedback_sender=sending.feedback_id or settings.project,
        dkim=files,
        dkim_rsa=any(isinstance(key, RSAPrivateKey) for key, _ in load_keys(files)))


def key_files(settings: Settings) -> tuple[tuple[str, str], ...]:
    """(key file, selector) of every configured DKIM key ([sending] dkim_keys and the
    older dkim_key/dkim_selector), the files resolved against the project."""
    return tuple((str(settings.path(k.key)), k.selector)
                 for k in settings.sending.signing_keys())


class Renderer(Protocol):
    async def render(self, chunk: list[Due]) -> list[Rendered]: ...
    def close(self) -> None: ...


def _render(mailing_for: Callable[[int], Mailing], chunk: list[Due]) -> list[Rendered]:
    """Each delivery's message, checked for the wire here (in a helper process, off the
    sender's event loop), or why it cannot go: the template's error, or what makes the
    message unsendable, as the SMTP session would have said it."""
    out: list[Rendered] = []
    for due in chunk:
        assert due.recipient is not None
        try:
            out.append((due, checked(mailing_for(due.list_id).message(due.recipient)),
                        None))
        except TemplateProblem as exc:
            out.append((due, None, f"template: {exc}"))
        except Unsendable as exc:
            out.append((due, None, f"not sent: {exc}"))
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

"""From a project (settings, database rows, key files) to a ready Mailing.

mailer/content knows nothing of the database or of mailer.toml; this module is the glue
the CLI (preview, templates check) and the delivery engine share.
"""

from __future__ import annotations

from pathlib import Path

from mailer.config import Settings
from mailer.content.dkim import Signer as DkimSigner
from mailer.content.dkim import load_key
from mailer.content.mailing import CampaignInfo, ListInfo, Mailing, Recipient, load_sources
from mailer.errors import InvalidInput
from mailer.models import MailingList, Subscriber
from mailer.project import Project

__all__ = ["dkim_keys", "dkim_signers", "list_info", "make_mailing", "recipient",
           "resolve_template", "sample_recipient"]


def list_info(row: MailingList) -> ListInfo:
    assert row.id is not None
    return ListInfo(id=row.id, slug=row.slug, name=row.name, language=row.language,
                    from_name=row.from_name, from_address=row.from_address,
                    reply_to=row.reply_to)


def recipient(row: Subscriber) -> Recipient:
    assert row.id is not None
    return Recipient(subscriber_id=row.id, email=row.email, first_name=row.first_name,
                     last_name=row.last_name, language=row.language,
                     attributes=dict(row.attributes or {}), infix=row.infix)


def sample_recipient(language: str | None = None) -> Recipient:
    """The subscriber `templates check` renders for when none is given."""
    return Recipient(subscriber_id=1, email="an.peeters@example.be", first_name="An",
                     last_name="Peeters", language=language)


def resolve_template(settings: Settings, path: str) -> tuple[Path, str]:
    """(folder, name) for a template given on the command line: a path under the
    project's templates folder keeps its partials and layout; any other file is loaded
    from its own folder."""
    templates = settings.templates_path.resolve()
    candidate = Path(path)
    for option in (candidate, settings.root / candidate, templates / candidate):
        full = option.resolve()
        if full.is_file():
            if templates in full.parents:
                return templates, full.relative_to(templates).as_posix()
            return full.parent, full.name
    raise InvalidInput(f"Template not found: {path}",
                       hint=f"Templates live in {settings.templates_path}.")


def dkim_keys(settings: Settings) -> tuple[tuple[str, str], ...]:
    """(key file, selector) of every configured DKIM key ([sending] dkim_keys and the
    older dkim_key/dkim_selector), the files resolved against the project."""
    return tuple((str(settings.path(k.key)), k.selector)
                 for k in settings.sending.signing_keys())


def dkim_signers(settings: Settings, domain: str) -> tuple[DkimSigner, ...]:
    """A signer per configured key (none: messages go unsigned); each key file is loaded
    and checked (readable by its owner only) here."""
    return tuple(DkimSigner(load_key(Path(path)), domain=domain, selector=selector)
                 for path, selector in dkim_keys(settings))


def make_mailing(project: Project, *, template: str, subject: str,
                 mailing_list: MailingList, campaign: CampaignInfo) -> Mailing:
    """A Mailing for `template` (a path as typed) sent to `mailing_list`."""
    settings = project.settings
    folder, name = resolve_template(settings, template)
    info = list_info(mailing_list)
    domain = (settings.sending.domain or info.from_address.rpartition("@")[2]).lower()
    return Mailing(
        sources=load_sources(folder, name), subject=subject, mailing_list=info,
        campaign=campaign, organisation=settings.organisation.model_dump(),
        public_url=settings.public_url, tokens=project.signer, domain=domain,
        bounce_domain=settings.sending.bounce_domain,
        feedback_sender=settings.sending.feedback_id or settings.project,
        dkim=dkim_signers(settings, domain))

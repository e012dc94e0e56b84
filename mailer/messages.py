"""From a project (settings, database rows, key files) to a ready Mailing.

mailer/content knows nothing of the database or of mailer.toml; this module is the glue
the CLI (preview, templates check) and the delivery engine share.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from sqlmodel import Session

from mailer.config import Sending, Settings
from mailer.content.dkim import Signer as DkimSigner
from mailer.content.lint import Audience, Finding, check, group_audience, refuse_errors
from mailer.content.mailing import CampaignInfo, ListInfo, Mailing, Recipient, load_sources
from mailer.delivery.rendering import key_files, load_keys, recipe_from
from mailer.errors import InvalidInput
from mailer.models import Campaign, MailingList, Subscriber
from mailer.project import Project

__all__ = ["audience", "check_campaign", "check_identity", "checked_mailing", "dkim_signers",
           "list_info", "make_mailing", "recipient", "resolve_template", "sample_recipient",
           "stand_in"]


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


def stand_in(address: str, language: str | None = None) -> Recipient:
    """Who a test address that is no subscriber is rendered as: the sample subscriber's
    fields with that address (never a person without fields, whom no real audience
    resembles)."""
    return replace(sample_recipient(language), subscriber_id=0, email=address)


def audience(session: Session, campaign: Campaign) -> Iterator[Recipient]:
    """The people `campaign` would reach now, as the templates see them."""
    from mailer.delivery.campaigns import audience_members

    for subscriber_id, _, data in audience_members(session, campaign):
        yield Recipient(subscriber_id=subscriber_id, email=data["email"],
                        first_name=data["first_name"], infix=data["infix"],
                        last_name=data["last_name"],
                        language=data["language"], attributes=dict(data["attributes"]))


def _grouped_audience(session: Session, campaign: Campaign) -> Audience:
    """The audience as lint.group_audience groups it: counted in groups by the database
    (campaigns.audience_groups) when it can, else member by member (a segment)."""
    from mailer.delivery.campaigns import audience_groups

    groups = audience_groups(session, campaign)
    if groups is None:
        return group_audience(audience(session, campaign))
    return group_audience((count, recipient(session.get(Subscriber, first)))
                          for count, first in groups)


def check_campaign(project: Project, session: Session, campaign: Campaign, *,
                   subject: str | None = None) -> tuple[Mailing, list[Finding], int]:
    """`templates check` for a campaign (or a list and segment in a campaign not saved):
    its template and subject against its real audience. Returns the mailing (for the
    first list), the findings and the audience's size."""
    from mailer.automation.recurring import campaign_date

    first = session.get(MailingList, campaign.list_ids[0])
    assert first is not None
    mailing = make_mailing(project, template=campaign.template,
                           subject=campaign.subject if subject is None else subject,
                           mailing_list=first,
                           campaign=CampaignInfo(campaign.id or 0, campaign.slug,
                                                 campaign.title,
                                                 campaign_date(session, campaign)))
    people = _grouped_audience(session, campaign)
    return mailing, check(mailing, sample_recipient(first.language), audience=people), \
        people.total


def check_identity(settings: Settings, rows: list[MailingList]) -> None:
    """The sending identity is one thing (issue 12, 4): what would send refuses, in one
    line with the fix, a list whose From address is not in the DKIM signing domain
    (receivers' DMARC check fails: Gmail and Yahoo reject bulk mail for it), unsigned
    mail whose envelope domain is not the From's, and a list that still names the
    example's organisation while [organisation] names another."""
    from mailer.audience.lists import load_definitions
    from mailer.doctor.dmarc import aligned
    from mailer.scaffold import EXAMPLE_ORGANISATION

    sending = settings.sending
    signed = bool(sending.signing_keys())
    organisation = settings.organisation.name
    texts = {}
    if organisation != EXAMPLE_ORGANISATION and settings.lists_path.is_dir():
        texts = {d.slug: " ".join([d.consent_text] + [t.consent_text for t in (d.nl, d.en)
                                                      if t is not None])
                 for d in load_definitions(settings.lists_path)}
    for row in rows:
        from_domain = row.from_address.rpartition("@")[2].lower()
        where = f"lists/{row.slug}.toml"
        _check_key_domains(sending, sending.domain or from_domain, row.slug)
        if signed and sending.domain and not aligned(from_domain, sending.domain):
            raise InvalidInput(
                f"The list {row.slug} sends from {row.from_address}, but messages are "
                f"DKIM-signed for {sending.domain} ([sending] domain): receivers' DMARC "
                "check would fail.",
                hint=f'Set from_address = "…@{sending.domain}" in {where} and run '
                     f"`mailer lists sync`; or sign for {from_domain}: [sending] domain "
                     f'= "{from_domain}" and `mailer dkim keygen --domain {from_domain} '
                     "--configure`.")
        if not signed and sending.bounce_domain \
                and not aligned(from_domain, sending.bounce_domain):
            raise InvalidInput(
                f"The list {row.slug} sends from {row.from_address}, unsigned, with "
                f"bounces to {sending.bounce_domain}: neither DKIM nor SPF is aligned "
                "with the From, so receivers' DMARC check would fail.",
                hint=f'Set [sending] bounce_domain = "bounce.{from_domain}", or configure '
                     f"a DKIM key: mailer dkim keygen --domain {from_domain} --configure")
        stale = [name for name, value in (("from_name", row.from_name),
                                          ("consent_text", texts.get(row.slug, "")))
                 if EXAMPLE_ORGANISATION in value and organisation != EXAMPLE_ORGANISATION]
        if stale:
            raise InvalidInput(
                f"The list {row.slug} still names the example's {EXAMPLE_ORGANISATION} "
                f"({', '.join(stale)}) while [organisation] name is {organisation}.",
                hint=f"Put {organisation} in {where} (a new consent_version with a new "
                     "consent_text) and run `mailer lists sync`.")


def _check_key_domains(sending: Sending, signing_domain: str, slug: str) -> None:
    """A key whose file `dkim keygen` named for another domain (SELECTOR.DOMAIN.ALG.pem)
    than the one messages are signed for: its DNS record is under that other domain, so
    no receiver would find it."""
    for key in sending.signing_keys():
        made = re.fullmatch(rf"{re.escape(key.selector)}\.(.+)\.(?:rsa|ed25519)\.pem",
                            Path(key.key).name)
        if made and made[1].lower() != signing_domain.lower():
            raise InvalidInput(
                f"The DKIM key {key.key} was made for {made[1]}, but the messages of the "
                f"list {slug} are signed d={signing_domain}: receivers look its record up "
                f"under {signing_domain} and find none.",
                hint=f'Set [sending] domain = "{made[1]}" (and a From address @{made[1]} '
                     f"in lists/{slug}.toml), or make a key for {signing_domain}: mailer "
                     f"dkim keygen --domain {signing_domain} --configure")


def checked_mailing(project: Project, session: Session, campaign: Campaign, *,
                    subject: str | None = None, new: bool = False) -> Mailing:
    """The campaign's mailing once it passes the check; else the check's first error,
    as `campaign create` (`new`: the campaign is not saved then), `test` and `send`
    refuse it. What sends (`test`, `send`) also checks the sending identity."""
    if not new:
        check_identity(project.settings, [row for row in (
            session.get(MailingList, i) for i in campaign.list_ids) if row is not None])
    mailing, findings, _ = check_campaign(project, session, campaign, subject=subject)
    if new:
        lists = " ".join(f"--list {session.get(MailingList, i).slug}"  # type: ignore[union-attr]
                         for i in campaign.list_ids)
        where = "".join(f" --where {shlex.quote(c)}" for c in campaign.segment)
        command = (f"mailer templates check {shlex.quote(campaign.template)} {lists}{where}"
                   f" --subject {shlex.quote(campaign.subject)}")
    else:
        command = f"mailer templates check --campaign {campaign.slug}"
    refuse_errors(findings, hint=f"See every problem: {command}")
    return mailing


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


def dkim_signers(settings: Settings, domain: str) -> tuple[DkimSigner, ...]:
    """A signer per configured key (none: messages go unsigned); each key file is loaded
    and checked (readable by its owner only) here."""
    return tuple(DkimSigner(key, domain=domain, selector=selector)
                 for key, selector in load_keys(key_files(settings)))


def make_mailing(project: Project, *, template: str, subject: str,
                 mailing_list: MailingList, campaign: CampaignInfo) -> Mailing:
    """A Mailing for `template` (a path as typed) sent to `mailing_list`, made the way
    a send makes its own (mailer/delivery/rendering.py)."""
    info = list_info(mailing_list)
    recipe = recipe_from(project.settings, subject=subject, campaign=campaign,
                         sources=load_sources(*resolve_template(project.settings, template)),
                         lists=[info])
    return recipe.mailing_for()(info.id)

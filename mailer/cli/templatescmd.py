"""`mailer templates check` and `mailer preview`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from sqlmodel import Session, select

from mailer.audience.lists import get_list
from mailer.audience.subscribers import get_subscriber
from mailer.cli import State, pass_state
from mailer.cli.output import err, print_json
from mailer.content.lint import check
from mailer.content.mailing import CampaignInfo
from mailer.db import session_scope
from mailer.delivery.campaigns import get_campaign
from mailer.delivery.segments import parse_segment
from mailer.errors import InvalidInput, NotFound
from mailer.messages import check_campaign, make_mailing, recipient, sample_recipient
from mailer.models import Campaign, MailingList
from mailer.privacy.private import private_dir, write_private

DEFAULT_SUBJECT = "{{ campaign.title }}"
SAMPLE = sample_recipient().email

_list_option = click.option(
    "--list", "slug", metavar="SLUG",
    help="The list whose sender, name and language to use (default: the only list, or "
         "the subscriber's first).")
_subject_option = click.option(
    "--subject", default=DEFAULT_SUBJECT, show_default=True,
    help="The subject, a template too: \"{{ subscriber.first_name | default('Hallo') }}, "
         "ons nieuws\".")
_title_option = click.option("--title", help="The campaign title (default: the list name).")


def _pick_list(session: Session, slug: str | None, subscriber_id: int | None) -> MailingList:
    if slug:
        return get_list(session, slug)
    rows = session.exec(select(MailingList).order_by(MailingList.id)).all()
    if not rows:
        raise NotFound("There are no lists yet.", hint="Run `mailer lists sync` first.")
    if len(rows) > 1 and subscriber_id is not None:
        from mailer.models import Subscription
        member = session.exec(select(Subscription.list_id).where(
            Subscription.subscriber_id == subscriber_id)).first()
        return next((row for row in rows if row.id == member), rows[0])
    return rows[0]


@click.group("templates")
def command() -> None:
    """Mail templates: check them before a campaign uses them.

    \b
    Example:
        mailer templates check templates/newsletter.html.j2
    """


@command.command("check")
@click.argument("template", required=False)
@click.option("--campaign", "campaign_slug", metavar="NAME",
              help="Check a campaign: its template and subject against its audience.")
@click.option("--list", "slugs", multiple=True, metavar="SLUG",
              help="The list whose members to check for (repeatable; default: the only "
                   "list, or the subscriber's first).")
@click.option("--where", "segment", multiple=True, metavar="CONDITION",
              help="Only the members for whom this holds, as `campaign create --where`.")
@click.option("--subscriber", "email", metavar="EMAIL",
              help="Render for this one subscriber instead of the list's members.")
@_subject_option
@_title_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def check_command(state: State, template: str | None, campaign_slug: str | None,
                  slugs: tuple[str, ...], segment: tuple[str, ...], email: str | None,
                  subject: str, title: str | None, as_json: bool) -> None:
    """Check a template with the rules `campaign create`, `test` and `send` apply: it
    renders for the list's confirmed members (each field used without a `| default`
    is counted: how many lack it), it has a visible unsubscribe link, alt text on
    images, no remote stylesheets or scripts, and an HTML part under Gmail's 102 KB
    clipping limit. With nobody on the list yet it renders for a sample subscriber (An
    Peeters). Exits 1 when there is an error: a send would refuse it.

    \b
    Example:
        mailer templates check templates/newsletter.html.j2 --list nieuwsbrief
        mailer templates check templates/december.md.j2 --where "language = en"
        mailer templates check --campaign dec-2026
    """
    project = state.project
    with session_scope(project.engine) as session:
        if campaign_slug:
            campaign = get_campaign(session, campaign_slug)
        elif template:
            member = get_subscriber(session, email) if email else None
            rows = [get_list(session, s) for s in dict.fromkeys(slugs)] or [
                _pick_list(session, None, member.id if member else None)]
            campaign = Campaign(slug="check", title=title or rows[0].name, template=template,
                                subject=subject, list_ids=[row.id for row in rows],
                                segment=[str(c) for c in parse_segment(list(segment))])
        else:
            raise InvalidInput("Say which template to check, or --campaign NAME.")
        if email:
            person = recipient(get_subscriber(session, email))
            row = session.get(MailingList, campaign.list_ids[0])
            mailing = make_mailing(project, template=campaign.template,
                                   subject=campaign.subject, mailing_list=row,
                                   campaign=_campaign(campaign.title, row.name))
            findings, people = check(mailing, person), None
        else:
            mailing, findings, people = check_campaign(project, session, campaign)
    who = person.email if email else (f"{people:,} recipients" if people
                                     else f"the sample subscriber {SAMPLE}")
    errors = [f for f in findings if f.level == "error"]
    if as_json:
        print_json({"template": campaign.template, "rendered_for": who,
                    "recipients": people, "ok": not errors,
                    "findings": [vars(f) for f in findings]})
    else:
        console = err()
        for finding in findings:
            colour = "red" if finding.level == "error" else "yellow"
            console.print(f"[{colour}]{finding.level}[/]: {escape(finding.message)}",
                          highlight=False, markup=True)
        if not findings:
            console.print(f"{campaign.template}: no problems found (rendered for {who}).",
                          highlight=False)
        else:
            console.print(f"{campaign.template}: {len(errors)} error(s), "
                          f"{len(findings) - len(errors)} warning(s) (rendered for {who}).",
                          highlight=False)
    if errors:
        sys.exit(1)


def _campaign(title: str | None, list_name: str) -> CampaignInfo:
    return CampaignInfo(id=0, slug="preview", title=title or list_name)


@click.command("preview")
@click.option("--template", required=True, help="The template, e.g. "
                                                "templates/newsletter.html.j2.")
@click.option("--subscriber", "email", metavar="EMAIL",
              help="The subscriber to render for (default: a sample subscriber).")
@click.option("--out", "out", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for message.eml, message.html and message.txt (readable by you "
                   "alone: they hold the subscriber's data).")
@_list_option
@_subject_option
@_title_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def preview(state: State, template: str, email: str | None, out: Path, slug: str | None,
            subject: str, title: str | None, as_json: bool) -> None:
    """Write the exact message one subscriber would get: the .eml as sent (signed when
    a DKIM key is configured), its HTML part and its text part. Nothing is sent.

    \b
    Example:
        mailer preview --template templates/newsletter.html.j2 \\
                       --subscriber an@example.be --out preview/
    """
    project = state.project
    with session_scope(project.engine) as session:
        person = recipient(get_subscriber(session, email)) if email else None
        row = _pick_list(session, slug, person.subscriber_id if person else None)
        mailing = make_mailing(project, template=template, subject=subject,
                               mailing_list=row, campaign=_campaign(title, row.name))
    person = person or sample_recipient(row.language)
    message = mailing.message(person)
    rendered = mailing.render(person, mailing.token(person))
    private_dir(out)
    files = {"eml": out / "message.eml", "html": out / "message.html",
             "text": out / "message.txt"}
    write_private(files["eml"], message.data)
    write_private(files["html"], rendered.html)
    write_private(files["text"], rendered.text)
    summary = {"to": message.recipient, "envelope_from": message.envelope_from,
               "subject": rendered.subject, "message_id": message.message_id,
               "bytes": len(message.data), "signed": mailing.signed,
               "files": {k: str(v) for k, v in files.items()}}
    if as_json:
        print_json(summary)
        return
    console = err()
    console.print(f"Preview for {message.recipient}: “{rendered.subject}”", highlight=False)
    console.print(f"  envelope sender {message.envelope_from}", highlight=False)
    console.print(f"  {len(message.data):,} bytes, "
                  f"{'DKIM-signed' if mailing.signed else 'not DKIM-signed (no key set)'}")
    for path in files.values():
        console.print(f"  {path}", highlight=False)

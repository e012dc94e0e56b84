"""The templates the lists send with: `mailer templates check`'s findings, and the
headers a message carries (what `mailer preview` would write), for each list.

Which template: the one of the list's most recent campaign, else
`templates/newsletter.html.j2` (the house style's), or the one given with --template.
The message is made for the sample subscriber, exactly as a send makes it (signed when
keys are configured); nothing is sent or written.

Each campaign not yet sent (draft or scheduled) is also checked as `templates check
--campaign` and its start would check it: against its real audience, each field used
without a default counted (how many lack it; counts only, no address). Its template's
findings are then that check's, not the sample subscriber's.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from sqlmodel import select

from mailer.content.environment import TemplateProblem
from mailer.content.lint import check
from mailer.content.mailing import CampaignInfo
from mailer.db import session_scope
from mailer.doctor.findings import (
    GMAIL_CLIP,
    GMAIL_ONE_CLICK,
    YAHOO_CONTENT,
    Finding,
)
from mailer.doctor.setup import Setup
from mailer.errors import MailerError
from mailer.messages import check_campaign, list_info, make_mailing, sample_recipient
from mailer.models import Campaign, CampaignKind, CampaignState, MailingList
from mailer.project import Project

__all__ = ["DEFAULT_TEMPLATE", "check_templates"]

DEFAULT_TEMPLATE = "newsletter.html.j2"
# The sample subscriber's token in the links and addresses: shown as TOKEN.
_TOKENS = re.compile(r"(/u/|unsub\+)[A-Za-z0-9_-]{40,}")


def _templates(project: Project, rows: list[MailingList],
               given: str | None) -> dict[int, tuple[str, str]]:
    """(template, subject) per list id; a list with neither a campaign nor the default
    template is left out."""
    chosen: dict[int, tuple[str, str]] = {}
    if not given:
        with session_scope(project.engine) as session:
            campaigns = session.exec(select(Campaign).order_by(Campaign.id.desc())).all()  # type: ignore[union-attr]
        for campaign in campaigns:
            for list_id in campaign.list_ids or []:
                chosen.setdefault(list_id, (campaign.template, campaign.subject))
    default = given or str(Path(project.settings.templates_dir) / DEFAULT_TEMPLATE)
    if given or project.settings.path(default).is_file():
        for row in rows:
            assert row.id is not None
            if given or row.id not in chosen:
                chosen[row.id] = (default, "{{ campaign.title }}")
    return chosen


def check_templates(project: Project, setup: Setup, given: str | None) -> list[Finding]:
    if not setup.lists:
        return [Finding("templates", "warn", "There are no lists, so no template was "
                        "checked.", "", "mailer lists sync")]
    findings, audited = _campaigns(project) if not given else ([], set())
    chosen = _templates(project, setup.lists, given)
    for row in setup.lists:
        if row.id not in chosen:
            findings.append(Finding("templates", "warn", f"The list {row.slug} has no "
                                    f"campaign yet and there is no {DEFAULT_TEMPLATE}: no "
                                    "template was checked.", "",
                                    "mailer doctor --template templates/YOUR.html.j2"))
            continue
        template, subject = chosen[row.id]
        findings += _one(project, row, template, subject,
                         lint=(template, subject) not in audited)
    return findings


def _campaigns(project: Project) -> tuple[list[Finding], set[tuple[str, str]]]:
    """The campaigns not yet sent, each checked against its real audience; and their
    (template, subject), which the sample subscriber then need not be checked with."""
    findings: list[Finding] = []
    audited: set[tuple[str, str]] = set()
    with session_scope(project.engine) as session:
        campaigns = session.exec(select(Campaign).where(
            Campaign.kind == CampaignKind.CAMPAIGN,
            Campaign.state.in_((CampaignState.DRAFT, CampaignState.SCHEDULED)))  # type: ignore[attr-defined]
            .order_by(Campaign.id)).all()
        for campaign in campaigns:
            where = f"The campaign {campaign.slug} ({campaign.template})"
            fix = f"mailer templates check --campaign {campaign.slug}"
            try:
                _, found, people = check_campaign(project, session, campaign)
            except (MailerError, TemplateProblem) as exc:
                hint = f" {exc.hint}" if isinstance(exc, MailerError) and exc.hint else ""
                findings.append(Finding("templates", "fail", f"{where} cannot be made into "
                                        f"a message: {exc}{hint}", "It cannot be sent.",
                                        fix))
                continue
            audited.add((campaign.template, campaign.subject))
            who = f"its {people:,} recipients" if people else "the sample subscriber " \
                "(nobody is in its audience yet)"
            findings += [_finding(f"{where}, for {who}: {item.message}", item.level,
                                  item.message, fix) for item in found]
            if not found:
                findings.append(Finding("templates", "ok", f"{where}: `templates check` "
                                        f"finds nothing for {who}."))
    return findings, audited


def _finding(what: str, level: str, message: str, fix: str) -> Finding:
    why = GMAIL_CLIP if "102 KB" in message else \
        YAHOO_CONTENT if "<script>" in message or "Remote" in message else ""
    return Finding("templates", "fail" if level == "error" else "warn", what, why, fix)


def _one(project: Project, row: MailingList, template: str, subject: str, *,
         lint: bool = True) -> list[Finding]:
    """The list's template made into a message for the sample subscriber: its headers,
    and (`lint`: no campaign's real audience judged it already) the check's findings."""
    where = f"{template} for the list {row.slug}"
    try:
        mailing = make_mailing(project, template=template, subject=subject, mailing_list=row,
                               campaign=CampaignInfo(id=0, slug="doctor", title=row.name))
        sample = sample_recipient(list_info(row).language)
        found = check(mailing, sample) if lint else []
        message = mailing.message(sample)
    except (MailerError, TemplateProblem) as exc:
        hint = f" {exc.hint}" if isinstance(exc, MailerError) and exc.hint else ""
        return [Finding("templates", "fail", f"{where} cannot be made into a message: "
                        f"{exc}{hint}", "No message of this list can be sent.",
                        f"mailer templates check {template} --list {row.slug}")]
    fix = f"mailer templates check {template} --list {row.slug}"
    findings = [_finding(f"{where}: {item.message}", item.level, item.message, fix)
                for item in found]
    if not found and lint:
        findings.append(Finding("templates", "ok", f"{where}: `templates check` finds "
                                "nothing."))
    findings.append(_headers(where, message.data, mailing.signed))
    return findings


def _headers(where: str, data: bytes, signed: bool) -> Finding:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
    unsubscribe = _TOKENS.sub(r"\1TOKEN", " ".join(str(headers.get("List-Unsubscribe",
                                                                    "")).split()))
    post = str(headers.get("List-Unsubscribe-Post", ""))
    feedback = str(headers.get("Feedback-ID", ""))
    shown = (f"List-Unsubscribe: {unsubscribe or '(none)'}; List-Unsubscribe-Post: "
             f"{post or '(none)'}; Feedback-ID: {feedback or '(none)'}")
    signatures = headers.get_all("DKIM-Signature") or []
    covered = all("list-unsubscribe-post" in "".join(str(s).split()).lower()
                  for s in signatures)
    if "<http://" in unsubscribe:
        return Finding("headers", "warn", f"{where}: List-Unsubscribe has an http URL, "
                       f"which is not one-click (see public_url) ({shown}).", GMAIL_ONE_CLICK,
                       'public_url = "https://…" in mailer.toml (docs/web.md).')
    problems = []
    if "<https://" not in unsubscribe:
        problems.append("List-Unsubscribe has no https URL")
    if "<mailto:" not in unsubscribe:
        problems.append("List-Unsubscribe has no mailto: address")
    if post != "List-Unsubscribe=One-Click":
        problems.append("List-Unsubscribe-Post is not List-Unsubscribe=One-Click")
    if problems:
        return Finding("headers", "fail", f"{where}: {'; '.join(problems)} ({shown}).",
                       GMAIL_ONE_CLICK, 'public_url = "https://…" in mailer.toml '
                       "(docs/web.md).")
    if not signatures or not signed or not covered:
        return Finding("headers", "warn", f"{where}: the one-click headers are not covered "
                       f"by a DKIM signature ({shown}).", "RFC 8058 (section 4) asks for a "
                       "signature that covers both; Gmail shows its unsubscribe button "
                       "only then.", "Configure a DKIM key (see the dkim findings).")
    if not feedback:
        return Finding("headers", "warn", f"{where}: no Feedback-ID ({shown}).",
                       "Gmail's feedback loop reports complaints per Feedback-ID.",
                       '[sending] feedback_id = "…" in mailer.toml.')
    return Finding("headers", "ok", f"{where}: {shown}, signed ({len(signatures)} DKIM "
                   f"signature{'s' if len(signatures) != 1 else ''}).")

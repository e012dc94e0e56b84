"""What `mailer campaign create --every`, `ls`, `show`, `pause`, `resume` and `cancel` say
and do for a recurring campaign (automation/recurring.py); campaigncmd calls these."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from mailer.automation.recurring import (
    ACTIVE,
    CANCELLED,
    create_recurring,
    find_recurring,
    listing,
    set_state,
    summary,
)
from mailer.cli.output import err, print_json, table
from mailer.db import session_scope
from mailer.delivery.campaigns import audience_count
from mailer.errors import InvalidInput
from mailer.messages import checked_mailing
from mailer.project import Project

__all__ = ["change", "create", "ls_rows", "show"]

DEFAULT_TZ = "Europe/Brussels"


def create(project: Project, *, name: str, every: str | None, tz: str | None,
           title: str | None, template: str, subject: str, lists: tuple[str, ...],
           segment: tuple[str, ...], as_json: bool) -> bool:
    """`campaign create … --every CRON`: False when no --every was given (a campaign,
    whose name must not be a recurring campaign's)."""
    if every is None:
        if tz is not None:
            raise InvalidInput("--tz is the time zone of --every; a campaign sent once is "
                               "scheduled with `mailer campaign schedule --tz`.")
        with session_scope(project.engine) as session:
            if find_recurring(session, name) is not None:
                raise InvalidInput(f"A recurring campaign called {name!r} exists already.")
        return False
    with session_scope(project.engine) as session:
        row, probe = create_recurring(session, name=name, every=every,
                                      timezone=tz or DEFAULT_TZ, title=title,
                                      template=template, subject=subject, list_slugs=lists,
                                      segment=segment)
        checked_mailing(project, session, probe, new=True)
        people = audience_count(session, probe)
        facts = summary(row)
    if as_json:
        print_json({**facts, "audience": people})
        return True
    err().print(f"Recurring campaign {name} created: {every} ({facts['tz']}); the next "
                f"occurrence is {facts['next']}, as {probe.slug}. {people:,} people would "
                f"get it now.\n`mailer run` (cron, every minute) makes and sends each "
                f"occurrence; stop it with: mailer campaign cancel {name}",
                highlight=False, markup=False)
    return True


def ls_rows(session: Session) -> list[dict[str, Any]]:
    """The recurring campaigns as rows of `campaign ls` (scheduled_at: the next one)."""
    return [{"campaign": r["campaign"], "state": r["state"], "lists": r["lists"],
             "total": None, "sent": None, "open": None, "scheduled_at": r["next"],
             "started_at": None, "every": r["every"], "tz": r["tz"], "next_at": r["next_at"]}
            for r in listing(session)]


def show(project: Project, name: str, as_json: bool) -> bool:
    """`campaign show NAME` of a recurring campaign; False when NAME is not one."""
    with session_scope(project.engine) as session:
        row = find_recurring(session, name)
        if row is None:
            return False
        facts = next(r for r in listing(session) if r["campaign"] == name)
    if as_json:
        print_json(facts)
        return True
    console = err()
    console.print(f"[bold]{name}[/] — {facts['state']}, every {facts['every']} "
                  f"({facts['tz']})", highlight=False)
    console.print(f"  lists {facts['lists']}" + (
        f", where {' and '.join(facts['segment'])}" if facts["segment"] else ""),
        highlight=False, markup=False)
    console.print(f"  template {facts['template']}; subject {facts['subject']}",
                  highlight=False, markup=False)
    console.print(f"  next occurrence: {facts['next'] or 'none (' + facts['state'] + ')'}",
                  highlight=False, markup=False)
    if facts["occurrences"]:
        table([{"occurrence": o["local_time"].replace("T", " "), "outcome": o["outcome"],
                "campaign": o["campaign"] or "", "note": o["note"] or ""}
               for o in facts["occurrences"]], ["occurrence", "outcome", "campaign", "note"],
              title="Last occurrences")
    return True


def change(project: Project, name: str, to: str, as_json: bool) -> bool:
    """`campaign pause|resume|cancel NAME` of a recurring campaign: its future
    occurrences; False when NAME is not one."""
    to = ACTIVE if to == "sending" else to  # `campaign resume`
    with session_scope(project.engine) as session:
        if find_recurring(session, name) is None:
            return False
        facts = summary(set_state(session, name, to))
    if as_json:
        print_json(facts)
    elif to == CANCELLED:
        err().print(f"{name} is cancelled: no occurrence is made any more (campaigns made "
                    f"already are not touched: see `mailer campaign ls`).", highlight=False)
    else:
        err().print(f"{name} is {facts['state']}"
                    + (f"; the next occurrence is {facts['next']}." if facts["next"] else "."),
                    highlight=False, markup=False)
    return True

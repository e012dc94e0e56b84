"""`mailer audit ls` and `mailer incidents add|ls|show`: the audit trail and the breach
register (privacy/audit.py, privacy/incidents.py), and the --actor option every command
that writes to the trail takes."""

from __future__ import annotations

import json

import click

from mailer.cli import State, pass_state
from mailer.cli.output import day, err, out, print_json, stream_json, table

ACTOR = click.option("--actor", default=None, metavar="NAME",
                     help="Who does this, for the audit trail (default: the OS user).")


def actor_name(actor: str | None) -> str:
    from mailer.models import current_actor

    return current_actor(actor)


@click.group("audit")
def audit() -> None:
    """The audit trail: who did what and when (no personal data in it).

    \b
    Example:
        mailer audit ls --since 2026-11-01
    """


@audit.command("ls")
@click.option("--since", metavar="DATE", help="From this date on (YYYY-MM-DD).")
@click.option("--action", metavar="PREFIX", help="Only actions starting so (gdpr, campaign).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def audit_ls(state: State, since: str | None, action: str | None, limit: int | None,
             as_json: bool) -> None:
    """The audit trail, newest first.

    \b
    Example:
        mailer audit ls --since 2026-11-01 --action gdpr
    """
    from mailer.privacy.audit import list_audit

    rows = list_audit(state.project.engine, since=day(since), action=action, limit=limit)
    if as_json:
        stream_json(rows)
        return
    # a configuration entry's digests are for the next comparison, not for reading
    table(({**row, "detail": json.dumps({k: v for k, v in row["detail"].items()
                                         if k != "fingerprint"}, ensure_ascii=False)}
           for row in rows),
          ["at", "actor", "action", "detail"], title="Audit trail",
          empty="Nothing in the audit trail.")


@click.group("incidents")
def incidents() -> None:
    """The breach register: every personal-data breach, reported or not (art. 33(5)).

    \b
    Example:
        mailer incidents add --title "Laptop with an export lost" --people 1
        mailer incidents ls
    """


@incidents.command("add")
@click.option("--title", required=True, help="What happened, in a line.")
@click.option("--facts", default="", help="What is known: when, what data, how.")
@click.option("--effects", default="", help="The consequences for the people concerned.")
@click.option("--remedy", default="", help="What was done about it.")
@click.option("--people", type=click.IntRange(min=0), default=None,
              help="How many people are affected.")
@click.option("--occurred", metavar="DATE", help="When it happened (YYYY-MM-DD).")
@click.option("--reported", metavar="DATE",
              help="When it was reported to the authority (YYYY-MM-DD), if it was.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@ACTOR
@pass_state
def incidents_add(state: State, title: str, facts: str, effects: str, remedy: str,
                  people: int | None, occurred: str | None, reported: str | None,
                  as_json: bool, actor: str | None) -> None:
    """Record an incident. Name no person in it (an address is refused).

    \b
    Example:
        mailer incidents add --title "Export mailed to the wrong colleague" --people 1 \\
            --facts "Export of one member sent internally by mistake" \\
            --remedy "Deleted by the recipient, confirmed in writing"
    """
    from mailer.privacy.incidents import IncidentText, add_incident, get_incident

    engine = state.project.engine
    number = add_incident(engine, IncidentText(title, facts, effects, remedy),
                          actor=actor_name(actor), people=people,
                          occurred_at=day(occurred), reported_at=day(reported))
    if as_json:
        print_json(get_incident(engine, number))
    else:
        err().print(f"Recorded as incident {number}.")


@incidents.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def incidents_ls(state: State, as_json: bool) -> None:
    """The register, newest first.

    \b
    Example:
        mailer incidents ls
    """
    from mailer.privacy.incidents import list_incidents

    rows = list_incidents(state.project.engine)
    if as_json:
        print_json(rows)
        return
    table(rows, ["number", "at", "title", "people", "reported_at", "source"],
          title="Breach register", empty="The register is empty.")


@incidents.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def incidents_show(state: State, number: int, as_json: bool) -> None:
    """One incident in full.

    \b
    Example:
        mailer incidents show 3
    """
    from mailer.privacy.incidents import get_incident

    entry = get_incident(state.project.engine, number)
    if as_json:
        print_json(entry)
        return
    console = out()
    for key, value in entry.items():
        console.print(f"{key.replace('_', ' ')}: {'' if value is None else value}",
                      highlight=False, markup=False)

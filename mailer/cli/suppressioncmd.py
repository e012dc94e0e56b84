"""`mailer suppression add|check|ls|remove`."""

from __future__ import annotations

import click
from sqlmodel import func, select

from mailer.audience.subscribers import validate_address
from mailer.audience.suppression import address_hash, is_suppressed, suppress, unsuppress
from mailer.cli import State, pass_state
from mailer.cli.output import err, print_json, table
from mailer.db import session_scope
from mailer.models import AuditLog, Suppression, SuppressionReason, current_actor


@click.group("suppression")
def command() -> None:
    """The global suppression list: addresses no list may ever mail (stored hashed).

    \b
    Example:
        mailer suppression add boos@example.be --note "asked by phone"
    """


@command.command("add")
@click.argument("email")
@click.option("--reason", type=click.Choice([r.value for r in SuppressionReason]),
              default=SuppressionReason.MANUAL.value, show_default=True)
@click.option("--note", default="", help="Why (no personal data: it is kept).")
@pass_state
def add(state: State, email: str, reason: str, note: str) -> None:
    """Suppress an address: no import, add or campaign can reach it afterwards.

    \b
    Example:
        mailer suppression add boos@example.be --note "asked by phone"
    """
    project = state.project
    address = validate_address(email)
    with session_scope(project.engine) as session:
        added = suppress(session, project.hash_key, address, SuppressionReason(reason), note)
        if added:
            session.add(AuditLog(actor=current_actor(), action="suppression.add",
                                 detail={"reason": reason}))
    err().print("Suppressed." if added else "Already suppressed.")


@command.command("check")
@click.argument("email")
@pass_state
def check(state: State, email: str) -> None:
    """Tell whether an address is suppressed (exit 0 yes, 1 no).

    \b
    Example:
        mailer suppression check boos@example.be
    """
    project = state.project
    address = validate_address(email)
    with session_scope(project.engine) as session:
        row = session.exec(select(Suppression).where(
            Suppression.email_hash == address_hash(project.hash_key, address))).first()
    if row is None:
        err().print("Not suppressed.")
        raise SystemExit(1)
    err().print(f"Suppressed since {row.created_at:%Y-%m-%d} ({row.reason}).")


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ls(state: State, as_json: bool) -> None:
    """Count suppressed addresses per reason (the addresses themselves are not stored).

    \b
    Example:
        mailer suppression ls
    """
    with session_scope(state.project.engine) as session:
        rows = [{"reason": reason, "count": n} for reason, n in session.exec(
            select(Suppression.reason, func.count()).group_by(Suppression.reason)
            .order_by(Suppression.reason))]
    if as_json:
        print_json(rows)
    else:
        table(rows, ["reason", "count"], title="Suppressed addresses",
              empty="Nobody is suppressed.")


@command.command("remove")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def remove(state: State, email: str, yes: bool) -> None:
    """Take an address off the suppression list (only with the person's new consent).

    \b
    Example:
        mailer suppression remove an@example.be --yes
    """
    project = state.project
    address = validate_address(email)
    with session_scope(project.engine) as session:
        if not is_suppressed(session, project.hash_key, address):
            err().print("Not suppressed; nothing changed.")
            return
        if not yes:
            click.confirm(f"Allow mail to {address} again?", abort=True, err=True)
        unsuppress(session, project.hash_key, address)
        session.add(AuditLog(actor=current_actor(), action="suppression.remove", detail={}))
    err().print("Removed from the suppression list.")

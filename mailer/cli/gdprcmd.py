"""`mailer gdpr export|erase|purge`: a person's rights, and the retention periods."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mailer.cli import State, pass_state
from mailer.cli.auditcmd import ACTOR, actor_name
from mailer.cli.output import err, print_json
from mailer.errors import InvalidInput, MailerError


@click.group("gdpr")
def command() -> None:
    """A person's rights (AVG/GDPR): a copy of their data, and erasure (docs/privacy.md).

    \b
    Example:
        mailer gdpr export an@example.be --out an.json
        mailer gdpr erase an@example.be --yes
    """


@command.command("export")
@click.argument("email")
@click.option("--out", "out", metavar="PATH",
              help="Where to write it (mode 0600; default export-ADDRESS.json or .txt); "
                   "- for standard output.")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json",
              show_default=True, help="JSON (art. 20, machine-readable) or text for a letter.")
@click.option("--language", type=click.Choice(["nl", "en"]), default=None,
              help="The language of the text format (default: the person's).")
@ACTOR
@pass_state
def export(state: State, email: str, out: str | None, fmt: str, language: str | None,
           actor: str | None) -> None:
    """Everything held about one person: details, lists, consent given and withdrawn,
    every mail sent, everything that came back, suppression. Written to a file readable
    by you alone, never to the screen unless --out -.

    \b
    Example:
        mailer gdpr export an@example.be --out an.json
        mailer gdpr export an@example.be --format text --out an.txt
    """
    from mailer.audience.subscribers import validate_address
    from mailer.db import session_scope
    from mailer.models import AuditLog
    from mailer.privacy.export import export_person, render_text

    project = state.project
    address = validate_address(email)
    document = export_person(project.engine, project.hash_key, address)
    person = document["subscriber"] or {}
    if fmt == "json":
        body = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    else:
        body = render_text(document, language or person.get("language") or "nl")
    target = out or f"export-{address.replace('@', '-at-')}.{'json' if fmt == 'json' else 'txt'}"
    if target == "-":
        click.echo(body, nl=False)
    else:
        _write_private(Path(target), body)
    with session_scope(project.engine) as session:
        session.add(AuditLog(actor=actor_name(actor), action="gdpr.export", detail={
            "subscriber": _subscriber_id(project, address), "format": fmt}))
    _exposed(project, target, actor_name(actor))
    if target != "-":
        err().print(f"Written to {target} (readable by you alone): "
                    f"{len(document['lists'])} lists, {len(document['consent'])} consent "
                    f"events, {len(document['deliveries'])} mails, "
                    f"{len(document['feedback'])} returns.", highlight=False)


def _exposed(project: Any, target: str, actor: str) -> None:
    """An export others can read (standard output sent to a 0644 file, a file system
    without modes) is a breach: recorded in the register, and said."""
    from mailer.privacy.incidents import exposed_export, readable_by_others

    try:
        mode = readable_by_others(sys.stdout.fileno() if target == "-" else Path(target))
    except (OSError, ValueError):  # no file behind standard output
        return
    if mode is None:
        return
    number = exposed_export(project.engine, mode, stdout=target == "-", actor=actor)
    where = "The file standard output went to" if target == "-" else target
    err().print(f"[red]Warning:[/] {where} can be read by others (mode {mode:o}): recorded "
                f"as incident {number} in the breach register. Remove it or chmod 600 it.",
                highlight=False)


def _subscriber_id(project: Any, address: str) -> int | None:
    import sqlalchemy as sa

    from mailer.models import Subscriber

    table_ = Subscriber.__table__  # type: ignore[attr-defined]
    with project.engine.connect() as conn:
        return conn.execute(sa.select(table_.c.id).where(table_.c.email == address)) \
            .scalar_one_or_none()


def _write_private(path: Path, body: str) -> None:
    """Create or replace the file as 0600 before a byte of personal data is in it."""
    from mailer.privacy.private import write_private

    try:
        write_private(path, body)
    except OSError as exc:
        raise MailerError(f"Cannot write {path}: {exc.strerror}") from None


@command.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
@ACTOR
@pass_state
def erase(state: State, email: str, yes: bool, dry_run: bool, actor: str | None) -> None:
    """Forget a person: their details, lists, consent log, replies and bounces are deleted,
    the mails sent to them are kept only as counts. Their address stays on the suppression
    list as a keyed hash, so no import can add them again by accident. Works while a
    campaign is sending: their queued mail is skipped.

    \b
    Example:
        mailer gdpr erase an@example.be --yes
    """
    from mailer.audience.subscribers import validate_address
    from mailer.privacy.erase import erase_person

    project = state.project
    address = validate_address(email)
    if not yes and not dry_run:
        if not sys.stdin.isatty():
            raise InvalidInput("Erasing cannot be undone: add --yes to confirm.")
        click.confirm(f"Erase everything held about {address}? This cannot be undone",
                      abort=True, err=True)
    result = erase_person(project.engine, project.hash_key, address, actor=actor_name(actor),
                          dry_run=dry_run)
    console = err()
    if result.subscriber_id is None and not result.newly_suppressed:
        console.print(f"Nothing is held about {address}; it is on the suppression list.",
                      highlight=False)
        return
    what = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in result.removed.items()
                     if n) or "no other data"
    verb = "Would erase" if dry_run else "Erased"
    console.print(f"{verb} {address}: {what}; the address is suppressed (as a hash).",
                  highlight=False)
    if not result.disk_clean:
        console.print("[yellow]Warning:[/] another process is reading the database; its "
                      "old pages leave the disk at the next checkpoint.")


@command.command("purge")
@click.option("--dry-run", is_flag=True, help="Count what would go, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@ACTOR
@pass_state
def purge(state: State, dry_run: bool, as_json: bool, actor: str | None) -> None:
    """Apply the retention periods of [privacy] in mailer.toml: never-confirmed sign-ups,
    old delivery details, the text of old returns, old audit entries. `mailer run` does
    this once a day by itself.

    \b
    Example:
        mailer gdpr purge --dry-run
        mailer gdpr purge
    """
    from mailer.privacy.retention import purge as run_purge

    project = state.project
    result = run_purge(project.engine, project.settings.privacy, actor=actor_name(actor),
                       dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, **result.counts})
        return
    labels = {"never_confirmed_people": "people who never confirmed",
              "pending_memberships": "unconfirmed sign-ups",
              "delivery_details": "delivery details", "unattributed_returns":
              "returns matched to nobody", "return_texts": "texts of returns",
              "audit_entries": "audit entries"}
    what = ", ".join(f"{n:,} {labels[k]}" for k, n in result.counts.items() if n)
    err().print(f"{'Would remove' if dry_run else 'Removed'}: {what or 'nothing'}.",
                highlight=False)

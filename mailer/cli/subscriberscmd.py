"""`mailer subscribers import|add|show|edit|ls|remove`."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from mailer.audience.addresses import needs_smtputf8
from mailer.audience.csvrows import parse_mapping
from mailer.audience.importer import ImportOptions, ImportReport, import_csv
from mailer.audience.subscribers import (
    LANGUAGES,
    SORTS,
    add_subscriber,
    edit_subscriber,
    get_subscriber,
    iter_subscribers,
    parse_attributes,
    remove_subscriber,
    subscriber_details,
    unsubscribe,
)
from mailer.cli import State, pass_state
from mailer.cli.output import err, out, print_json, progress_bar, stream_json, table
from mailer.db import session_scope
from mailer.models import GlobalStatus, SubscriptionStatus


@click.group("subscribers")
def command() -> None:
    """Subscribers: import, add, show, edit, list and remove.

    \b
    Example:
        mailer subscribers ls --list nieuwsbrief --status confirmed
    """


@command.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "list_slug", required=True, help="The list to subscribe them to.")
@click.option("--consent", required=True,
              help="What these people agreed to, and how (stored with each of them).")
@click.option("--confirmed", is_flag=True,
              help="They already confirmed (double opt-in done elsewhere): subscribe as "
                   "confirmed instead of pending.")
@click.option("--send-confirmation", is_flag=True,
              help="Double opt-in list: queue the confirmation mail for everyone left "
                   "pending (also those imported earlier and never asked); `mailer run` "
                   "or `mailer serve` sends them at the configured pace.")
@click.option("--start-sequences", is_flag=True,
              help="Those confirmed by this import start the list's drip sequences "
                   "(docs/sequences.md), timed from now; without it, only people who "
                   "confirm later do.")
@click.option("--update", is_flag=True,
              help="Refresh names, language and attributes of people already known.")
@click.option("--dry-run", is_flag=True, help="Check and count everything, change nothing.")
@click.option("--map", "mapping", multiple=True, metavar="COLUMN=FIELD",
              help="Map a CSV column to email, first_name, infix, last_name, language, "
                   "attr:NAME, or - to ignore it. Repeatable.")
@click.option("--delimiter", type=click.Choice([";", ",", "tab", "|"]),
              help="Column separator (default: detected from the first lines).")
@click.option("--encoding", default="utf-8", show_default=True,
              help="File encoding, e.g. cp1252 for an old Excel export.")
@click.option("--language", type=click.Choice(LANGUAGES),
              help="Language for rows without one (default: from mailer.toml).")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write rejected rows (default: FILE.rejects.csv beside the file).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_state
def import_cmd(state: State, csv_file: Path, list_slug: str, consent: str, confirmed: bool,
               send_confirmation: bool, start_sequences: bool, update: bool,
               dry_run: bool,
               mapping: tuple[str, ...], delimiter: str | None, encoding: str,
               language: str | None, rejects_path: Path | None, as_json: bool,
               quiet: bool) -> None:
    """Import subscribers from a CSV file into a list.

    The file needs a header row. The address column is found by name (email, e-mail,
    e-mailadres…) or set with --map; first_name/voornaam, last_name/achternaam,
    language/taal and the Dutch tussenvoegsel (tussenvoegsel, infix or prefix: the "van
    der" of Jan van der Berg) are recognised too; every other column becomes an attribute.
    Re-importing the same file changes nothing. Nobody who unsubscribed or is on the
    suppression list is subscribed again. Rejected rows are listed with line number and
    reason, and written to a rejects file.

    Into a double opt-in list, people stay pending (no mail) until they confirm:
    --send-confirmation mails each of them the confirmation link, once (a re-import does
    not ask again); --confirmed records that they already confirmed elsewhere.

    \b
    Examples:
        mailer subscribers import people.csv --list nieuwsbrief \\
            --consent "webform 2026-03, text v2" --map "E-mailadres=email" --dry-run
        mailer subscribers import leden.csv --list nieuwsbrief \\
            --consent "ledenlijst 2026, mondeling gevraagd" --send-confirmation
    """
    project = state.project
    options = ImportOptions(
        list_slug=list_slug, consent=consent, confirmed=confirmed,
        send_confirmation=send_confirmation, start_sequences=start_sequences,
        update=update,
        dry_run=dry_run, mapping=parse_mapping(mapping),
        delimiter="\t" if delimiter == "tab" else delimiter, encoding=encoding,
        default_language=language or project.settings.imports.default_language,
        rejects_path=rejects_path or csv_file.with_name(csv_file.stem + ".rejects.csv"),
        actor=getpass.getuser(),
    )
    size = csv_file.stat().st_size
    with progress_bar(f"Importing {csv_file.name}", size, quiet=quiet or as_json) as bar, \
            session_scope(project.engine) as session:
        report = import_csv(session, project.hash_key, csv_file, options,
                            progress=lambda rows, done: bar.update(completed=done, rows=rows))
        if dry_run:
            session.rollback()
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(report, project.settings.privacy.pending_days)


def _print_report(report: ImportReport, pending_days: int) -> None:
    console = err()
    head = "[yellow]Dry run, nothing saved:[/]" if report.dry_run else "[green]Imported[/]"
    console.print(f"{head} {report.file} into {report.list!r}: {report.rows:,} rows in "
                  f"{report.seconds:.1f} s")
    console.print(f"  {report.added:,} new subscribers, {report.subscribed:,} added to the "
                  f"list as {report.status}, {report.confirmed:,} confirmed, "
                  f"{report.updated:,} updated, {report.unchanged:,} already there")
    total = sum(report.rejected.values())
    if total:
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in report.rejected.most_common())
        console.print(f"  [red]{total:,} rejected[/]: {reasons}")
        for item in report.first_rejects:
            console.print(f"    line {item['line']}: {item['reason']}: {item['detail']}",
                          highlight=False)
        if total > len(report.first_rejects):
            console.print(f"    … and {total - len(report.first_rejects):,} more")
        if report.rejects_file:
            console.print(f"  Rejected rows are in {report.rejects_file}")
    _print_confirmations(report, pending_days)
    if report.smtputf8:
        lines = ", ".join(map(str, report.smtputf8_lines))
        more = ", …" if report.smtputf8 > len(report.smtputf8_lines) else ""
        one = report.smtputf8 == 1
        console.print(f"  [yellow]Warning:[/] {report.smtputf8:,} "
                      f"{'address needs' if one else 'addresses need'} "
                      f"SMTPUTF8 (a character outside ASCII, as in chloë@…; "
                      f"{'line' if one else 'lines'} {lines}{more}): imported, but only a "
                      f"relay that offers SMTPUTF8 can deliver to {'it' if one else 'them'}",
                      highlight=False)


def _print_confirmations(report: ImportReport, pending_days: int) -> None:
    """What happens next for the pending: asked by mail now, or nobody asks them; and
    that whoever never confirms is removed after [privacy] pending_days."""
    console = err()
    removed = (f"Who has not confirmed after {pending_days} days is removed ([privacy] "
               "pending_days).")
    if report.send_confirmation:
        verb = "would be queued" if report.dry_run else "queued"
        asked = (f" ({report.already_asked:,} asked before, not again)"
                 if report.already_asked else "")
        console.print(f"  {report.confirmations_queued:,} confirmation mails {verb}{asked}"
                      + ("" if report.dry_run else
                         ": `mailer run` (cron) or `mailer serve` sends them, at the pace "
                         f"of [sending]. {removed}"), highlight=False, markup=False)
    elif report.status == "pending" and report.subscribed:
        console.print(f"  [yellow]{report.subscribed:,} pending[/]: they get no mail until "
                      "they confirm, and nobody has asked them. Import again with "
                      "--send-confirmation to mail them the link (or --confirmed if they "
                      f"confirmed elsewhere). {escape(removed)}", highlight=False)


@command.command("add")
@click.argument("email")
@click.option("--list", "lists", multiple=True, required=True, help="List slug (repeatable).")
@click.option("--consent", required=True, help="What the person agreed to, and how.")
@click.option("--confirmed", is_flag=True,
              help="The person already confirmed: skip the pending state of double opt-in.")
@click.option("--send-confirmation", is_flag=True,
              help="Double opt-in: mail the person the confirmation link (`mailer run` or "
                   "`mailer serve` sends it), unless asked already.")
@click.option("--first-name")
@click.option("--infix", help='The Dutch tussenvoegsel: "van der" in Jan van der Berg.')
@click.option("--last-name")
@click.option("--language", type=click.Choice(LANGUAGES))
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
              help="An attribute (repeatable); JSON values keep their type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def add(state: State, email: str, lists: tuple[str, ...], consent: str, confirmed: bool,
        send_confirmation: bool, first_name: str | None, infix: str | None, last_name: str | None,
        language: str | None, attrs: tuple[str, ...], as_json: bool) -> None:
    """Add one subscriber to one or more lists, recording the consent.

    \b
    Example:
        mailer subscribers add an@example.be --list nieuwsbrief --first-name An \\
            --consent "paper form at the fair, 2026-10-12" --attr city=Gent
        mailer subscribers add jan@example.nl --list nieuwsbrief --first-name Jan \\
            --infix "van der" --last-name Berg --consent "aanmeldformulier beurs" \\
            --send-confirmation
    """
    project = state.project
    with session_scope(project.engine) as session:
        sub, result, asked = add_subscriber(
            session, project.hash_key, email, list(lists), consent=consent, source="cli",
            confirmed=confirmed, first_name=first_name, infix=infix, last_name=last_name,
            language=language, attributes=parse_attributes(attrs),
            send_confirmation=send_confirmation)
        address = sub.email
    utf8 = needs_smtputf8(address)
    if as_json:
        print_json({"email": address, "lists": result, "confirmation_queued": asked,
                    "smtputf8": utf8})
        return
    err().print(f"{address}: " + ", ".join(f"{k} {v}" for k, v in result.items()),
                highlight=False)
    pending = [slug for slug, status in result.items() if status == "pending"]
    if asked:
        err().print(f"Confirmation mail queued ({', '.join(asked)}): `mailer run` (cron) or "
                    "`mailer serve` sends it.", highlight=False, markup=False)
    elif pending:
        err().print(f"Pending on {', '.join(pending)}: no mail until they confirm; "
                    + ("they were asked before, not again." if send_confirmation else
                       "--send-confirmation mails them the link."), highlight=False)
    if utf8:
        err().print(f"[yellow]Warning:[/] {address} needs SMTPUTF8 (a character outside "
                    "ASCII): only a relay that offers SMTPUTF8 can deliver to it.",
                    highlight=False)


@command.command("show")
@click.argument("email")
@click.option("--consent", "consent_only", is_flag=True,
              help="The proof of consent per list: when, how and under which text.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def show(state: State, email: str, consent_only: bool, as_json: bool) -> None:
    """Show one subscriber: details, lists, the consent history and every bounce,
    complaint and action taken on what came back. With --consent: the proof of consent
    per list (art. 7).

    \b
    Example:
        mailer subscribers show an@example.be
        mailer subscribers show an@example.be --consent
    """
    from mailer.feedback.queries import subscriber_events

    with session_scope(state.project.engine) as session:
        sub = get_subscriber(session, email)
        details = subscriber_details(session, sub)
        assert sub.id is not None
        details["feedback"] = subscriber_events(session.connection(), sub.id)
    if consent_only:
        _show_consent(details, as_json)
        return
    if as_json:
        print_json(details)
        return
    console = out()
    console.print(f"[bold]{details['email']}[/]  {details['name'] or '-'}  language: "
                  f"{details['language'] or '-'}  status: {details['status']}", highlight=False)
    for key, value in details["attributes"].items():
        console.print(f"  {key}: {value}", highlight=False)
    table(details["lists"], ["list", "status", "source", "created_at", "confirmed_at",
                             "unsubscribed_at"], title="Lists", empty="Not on any list.")
    table(details["consent"], ["at", "action", "list", "source", "consent", "confirmed"],
          title="Consent history", empty="No consent events.")
    if details["feedback"]:
        table(details["feedback"], ["at", "kind", "reason", "status", "campaign", "action"],
              title="What came back (bounces, complaints, replies)")


def _show_consent(details: dict[str, Any], as_json: bool) -> None:
    """Per list: its status and every consent event for it, with the text agreed to."""
    proof = [{"list": m["list"], "status": m["status"], "since": m["created_at"],
              "confirmed_at": m["confirmed_at"], "unsubscribed_at": m["unsubscribed_at"],
              "events": [e for e in details["consent"] if e["list"] == m["list"]]}
             for m in details["lists"]]
    if as_json:
        print_json({"email": details["email"], "consent": proof})
        return
    console = out()
    console.print(f"[bold]{details['email']}[/]: proof of consent", highlight=False)
    for entry in proof:
        console.print(f"\n{entry['list']}: {entry['status']} (since {entry['since']})",
                      highlight=False)
        for e in entry["events"]:
            how = f"{e['at']}  {e['action']} via {e['source'] or '-'}"
            if e["ip"]:
                how += f" from {e['ip']}"
            if e["confirmed"]:
                how += " (confirmed opt-in)"
            console.print(f"  {how}", highlight=False, markup=False)
            if e["consent"]:
                console.print(f"    agreed to: \"{e['consent']}\"", highlight=False,
                              markup=False)
    if not proof:
        console.print("Not on any list.")


@command.command("edit")
@click.argument("email")
@click.option("--first-name")
@click.option("--infix", help='The Dutch tussenvoegsel ("van der"); "" removes it.')
@click.option("--last-name")
@click.option("--language", type=click.Choice(LANGUAGES))
@click.option("--status", type=click.Choice([s.value for s in GlobalStatus]),
              help="blocklisted: never mail this person, on any list.")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Set an attribute.")
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove an attribute.")
@pass_state
def edit(state: State, email: str, first_name: str | None, infix: str | None,
         last_name: str | None, language: str | None, status: str | None, attrs: tuple[str, ...],
         unset: tuple[str, ...]) -> None:
    """Change a subscriber's name, language, attributes or global status.

    \b
    Example:
        mailer subscribers edit an@example.be --language en --attr city=Gent --unset old
        mailer subscribers edit jan@example.nl --infix "van der" --last-name Berg
    """
    with session_scope(state.project.engine) as session:
        sub = edit_subscriber(session, email, first_name=first_name, infix=infix,
                              last_name=last_name,
                              language=language, status=status,
                              set_attributes=parse_attributes(attrs), unset_attributes=unset)
        address = sub.email
    err().print(f"Saved {address}.")


@command.command("ls")
@click.option("--list", "list_slug", help="Only members of this list.")
@click.option("--status", type=click.Choice([s.value for s in SubscriptionStatus]),
              help="Only members with this status on --list.")
@click.option("--global-status", type=click.Choice([s.value for s in GlobalStatus]))
@click.option("--search", help="Part of the address or name.")
@click.option("--sort", type=click.Choice(SORTS), default="added", show_default=True,
              help="name: by last name, the Dutch way (van der Berg under B).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def ls(state: State, list_slug: str | None, status: str | None, global_status: str | None,
       search: str | None, sort: str, limit: int | None, as_json: bool) -> None:
    """List subscribers, filtered by list, membership status, global status or text.

    With --list, `list_status` is each one's status on that list (pending, confirmed,
    unsubscribed); `status` is the global one (active, blocklisted).

    \b
    Example:
        mailer subscribers ls --list nieuwsbrief --status confirmed --json
        mailer subscribers ls --list nieuwsbrief --sort name --search "van der"
    """
    if limit is None and not as_json:
        limit = 1000  # a terminal table; --json streams any number
    with session_scope(state.project.engine) as session:
        rows = iter_subscribers(session, list_slug=list_slug, status=status,
                                global_status=global_status, search=search, limit=limit,
                                sort=sort)
        if as_json:
            stream_json(rows)
        else:
            columns = ["email", "first_name", "infix", "last_name", "language",
                       *(["list_status"] if list_slug else []), "status"]
            shown = table(rows, columns,
                          title="Subscribers", empty="No subscribers match.")
            if shown == limit:
                err().print(f"Showing the first {limit}; use --limit or --json for more.")


@command.command("remove")
@click.argument("email")
@click.option("--list", "list_slug",
              help="Only unsubscribe from this list (recorded as consent withdrawn).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def remove(state: State, email: str, list_slug: str | None, yes: bool) -> None:
    """Unsubscribe someone from one list, or delete the subscriber altogether.

    Deleting is not erasure: the address is not suppressed and could be imported again.

    \b
    Example:
        mailer subscribers remove an@example.be --list nieuwsbrief
    """
    with session_scope(state.project.engine) as session:
        if list_slug:
            changed = unsubscribe(session, email, list_slug, source="cli remove")
            err().print(f"Unsubscribed from {list_slug}." if changed
                        else f"Not subscribed to {list_slug}; nothing changed.")
            return
        sub = get_subscriber(session, email)
        if not yes:
            click.confirm(f"Delete {sub.email} with all memberships and consent history?",
                          abort=True, err=True)
        remove_subscriber(session, email)
    err().print("Deleted.")

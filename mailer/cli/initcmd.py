"""`mailer init`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailer.cli.output import err
from mailer.scaffold import EXAMPLE_DOMAIN, EXAMPLE_ORGANISATION, check_identity, create_project


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Project name (default: the folder's name).")
@click.option("--organisation", metavar="NAME",
              help="Who sends: the From name, the house style's signature, the consent "
                   "text (asked when not given, on a terminal).")
@click.option("--domain", metavar="DOMAIN",
              help="The sending domain: From and Reply-To addresses, [sending] domain (asked "
                   "when not given, on a terminal).")
def command(folder: Path, name: str | None, organisation: str | None,
            domain: str | None) -> None:
    """Create a new project: mailer.toml, a 0600 secrets file, lists/, templates/ and a
    migrated SQLite database. The new project mails nobody real.

    The organisation and the domain are written everywhere the sending identity
    belongs: [organisation], [sending] domain, the example list's From, Reply-To and
    consent text. Without them (and no terminal to ask on) the project keeps the
    example's identity, Voorbeeld vzw and example.be.

    \b
    Example:
        mailer init my-news --organisation "Groenbuurt vzw" --domain groenbuurt.nl
        cd my-news
    """
    if sys.stdin.isatty() and (organisation is None or domain is None):
        organisation = organisation or click.prompt(
            "Organisation (who sends)", default=EXAMPLE_ORGANISATION, err=True)
        domain = domain or click.prompt(
            "Sending domain (after the @ of your From address)", default=EXAMPLE_DOMAIN,
            err=True)
    organisation, domain = check_identity(organisation or EXAMPLE_ORGANISATION,
                                          domain or EXAMPLE_DOMAIN)
    config = create_project(folder, name=name, organisation=organisation, domain=domain)
    console = err()
    console.print(f"[green]Created[/] {config.parent}", highlight=False)
    if (organisation, domain) == (EXAMPLE_ORGANISATION, EXAMPLE_DOMAIN):
        console.print(f"It sends as the example, {EXAMPLE_ORGANISATION} from "
                      f"nieuws@{EXAMPLE_DOMAIN}: for your own, start again with "
                      "--organisation and --domain.", highlight=False)
    else:
        console.print(f"It sends as {organisation}, from nieuws@{domain} (see "
                      "lists/nieuwsbrief.toml).", highlight=False)
    console.print("Next:\n"
                  f"  cd {folder}\n"
                  "  mailer lists sync\n"
                  "  mailer subscribers import lists/nieuwsbrief.example.csv "
                  "--list nieuwsbrief --consent \"example data\" --send-confirmation\n"
                  "    (nieuwsbrief is double opt-in: each person gets a mail to confirm)\n"
                  f"  mailer dkim keygen --domain {domain} --selector mail2026 --configure",
                  highlight=False)

"""`mailer doctor`."""

from __future__ import annotations

import ipaddress
import sys

import click
from rich.markup import escape
from rich.table import Table

from mailer.cli import State, pass_state
from mailer.cli.output import out, print_json
from mailer.doctor import Report, examine
from mailer.doctor.resolver import parse_nameserver

_MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warning[/]", "fail": "[red]FAIL[/]"}


def _nameserver(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            parse_nameserver(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _addresses(ctx: click.Context, param: click.Parameter,
               value: tuple[str, ...]) -> list[str]:
    try:
        return [str(ipaddress.ip_address(v)) for v in value]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--nameserver", metavar="ADDRESS[:PORT]", callback=_nameserver,
              help="Ask this DNS server (default: the system's resolver), e.g. the domain's "
                   "own to see a change before caches expire.")
@click.option("--sending-ip", "sending_ips", multiple=True, metavar="ADDRESS",
              callback=_addresses,
              help="The address mail leaves from, when it is not the relay's (a provider "
                   "that sends from other addresses, or NAT). Repeatable.")
@click.option("--template", metavar="PATH",
              help="Check this template for every list (default: each list's latest "
                   "campaign's, else templates/newsletter.html.j2).")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True,
              help="Seconds for each DNS look-up and network probe.")
@pass_state
def command(state: State, as_json: bool, nameserver: str | None, sending_ips: list[str],
            template: str | None, timeout: float) -> None:
    """Will the mail land? Checks DNS, keys, the relay and the templates against what
    Gmail, Yahoo and Microsoft demand of bulk senders, and says for each problem what
    they answer and the exact record to publish.

    Checked: SPF of the envelope (bounce) domain (one record, valid, at most 10 DNS
    look-ups, covers the sending address, no +all); each DKIM selector's key (matches the
    key file, RSA >= 1024 bits, strings of at most 255 bytes); DMARC (a policy, From
    aligned with DKIM d= and the envelope domain, reports); MX of the bounce domain;
    PTR of the sending address and the EHLO name; the relay (STARTTLS, certificate, AUTH
    after TLS); public_url (https, answers a one-click POST); each list's template and
    the List-Unsubscribe headers. docs/deliverability.md explains every finding.

    Exits 0 when nothing blocks delivery (warnings do not), 1 otherwise.

    \b
    Example:
        mailer doctor
        mailer doctor --json
        mailer doctor --nameserver 192.0.2.53 --sending-ip 192.0.2.10
        mailer doctor --template templates/december.md.j2
    """
    report = examine(state.project, nameserver=nameserver, sending_ips=sending_ips,
                     template=template, timeout=timeout)
    if as_json:
        print_json(report.as_dict())
    else:
        _show(report)
    if not report.ok:
        sys.exit(1)


def _show(report: Report) -> None:
    console = out()
    grid = Table(show_lines=False, header_style="bold")
    for column in ("", "check", "finding"):
        grid.add_column(column)
    for finding in report.findings:
        grid.add_row(_MARK[finding.status], finding.check, escape(finding.what))
    console.print(grid)
    problems = [f for f in report.findings if f.status != "ok"]
    for number, finding in enumerate(problems, 1):
        console.print(f"\n{number}. {_MARK[finding.status]} {escape(finding.what)}",
                      highlight=False)
        if finding.why:
            console.print(f"   Why: {escape(finding.why)}", highlight=False)
        if finding.fix:
            console.print("   Fix:", highlight=False)
            for line in finding.fix.splitlines():
                console.print(f"     {escape(line)}", highlight=False, soft_wrap=True)
    checked = report.checked
    console.print(f"\nChecked {', '.join(checked['from_domains']) or 'no domain'} with "
                  f"{checked['nameserver']} in {checked['seconds']:.1f} s: "
                  f"{report.count('fail')} problem(s) that block delivery, "
                  f"{report.count('warn')} warning(s).", highlight=False)

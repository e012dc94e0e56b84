"""`make demo`: the main job on the embedded defaults, narrated.

Creates a fresh project in ./demo (SQLite), syncs the example list, imports the example
subscribers (a Dutch Excel export with a duplicate and a broken address), checks and
previews the newsletter, and sends a whole campaign through the project's default
transport: a Maildir folder, demo/outbox/. Nobody real gets mail.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rich.console import Console

from mailer.cli import cli

FOLDER = Path("demo")


def _step(console: Console, title: str, *args: str) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"[dim]$ mailer {' '.join(args)}[/]", highlight=False)
    try:
        cli.main(list(args), prog_name="mailer", standalone_mode=False)
    except SystemExit as exc:  # `check`-style commands exit non-zero on purpose
        if exc.code not in (0, None):
            raise


def main() -> None:
    console = Console(stderr=True)
    if FOLDER.exists():
        shutil.rmtree(FOLDER)
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        del os.environ[name]  # the demo runs on the embedded defaults only
    _step(console, "1. A new project", "init", str(FOLDER))
    os.chdir(FOLDER)
    _step(console, "2. Lists from lists/*.toml", "lists", "sync")
    _step(console, "3. Import consented subscribers", "subscribers", "import",
          "lists/nieuwsbrief.example.csv", "--list", "nieuwsbrief",
          "--consent", "demo: example data, not real people", "--confirmed")
    _step(console, "4. The lists", "lists", "ls")
    _step(console, "5. Check the newsletter template", "templates", "check",
          "templates/newsletter.html.j2")
    _step(console, "6. Preview one subscriber's message", "preview", "--template",
          "templates/newsletter.html.j2", "--subscriber", "an.peeters@example.be",
          "--out", "preview")
    _step(console, "7. A campaign", "campaign", "create", "dec-2026", "--list",
          "nieuwsbrief", "--template", "templates/newsletter.html.j2", "--subject",
          "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws van december")
    _step(console, "8. A test send first", "campaign", "test", "dec-2026", "--to",
          "redactie@example.be")
    _step(console, "9. Send it (the default transport is a local folder)", "campaign",
          "send", "dec-2026", "--yes")
    _step(console, "10. The campaign afterwards", "campaign", "show", "dec-2026")
    outbox = Path("outbox") / "new"
    sent = next(p.read_bytes() for p in sorted(outbox.iterdir())
                if b"Delivered-To: an.peeters@example.be" in p.read_bytes())
    bounced = _one_bounce(sent, Path("returns"))
    _step(console, "11. A bounce comes back: what the engine reads in it", "bounces",
          "explain", str(bounced))
    _step(console, "12. Process the return mailbox", "bounces", "process", "--source",
          "maildir:returns")
    _step(console, "13. The campaign with its bounces", "campaign", "show", "dec-2026")
    console.rule()
    console.print(f"{len(list(outbox.iterdir()))} messages are in {outbox.resolve()} "
                  "(a Maildir: open a file in a mail client, or point one at the folder).\n"
                  f"The preview of one message is in {Path('preview').resolve()}.\n"
                  f"The demo project is in {Path.cwd()}; try `cd {FOLDER}` and "
                  "`../.venv/bin/mailer --help`.", highlight=False)


def _one_bounce(sent: bytes, maildir: Path) -> Path:
    """What a receiving server (Postfix) sends back for an address that does not exist:
    an RFC 3464 report to the message's VERP address, with the original's headers."""
    import mailbox
    from email import message_from_bytes
    from email.utils import formatdate

    headers = sent.split(b"\r\n\r\n", 1)[0].decode()
    original = message_from_bytes(sent)
    verp = str(original["Return-Path"]).strip("<>")
    to = str(original["Delivered-To"])
    report = (
        f"Return-Path: <>\r\nDelivered-To: {verp}\r\n"
        "From: MAILER-DAEMON@mx.example.be (Mail Delivery System)\r\n"
        f"To: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {formatdate()}\r\nMIME-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n"
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered."
        f"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.be\r\n\r\n"
        f"Final-Recipient: rfc822; {to}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{to}>: Recipient address rejected: "
        "User unknown in virtual mailbox table\r\n"
        f"\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--b--\r\n")
    box = mailbox.Maildir(maildir, create=True)
    key = box.add(report.encode())
    return maildir / "new" / key


if __name__ == "__main__":
    sys.exit(main())

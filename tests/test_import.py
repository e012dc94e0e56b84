"""CSV import: formats, mapping, rejects, idempotence, consent and safety (both databases)."""

from __future__ import annotations

import csv
import json
import re
import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlmodel import Session

from mailer.audience.importer import ImportOptions, import_csv
from mailer.config import load_settings
from mailer.db import make_engine
from mailer.models import ConsentEvent, Subscriber, Subscription
from tests.support.notices import NOTICE


def write(path: Path, text: str, *, bom: bool = False, encoding: str = "utf-8") -> Path:
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def counts(project: Path) -> dict[str, int]:
    settings = load_settings()
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as s:
        out = {
            "subscribers": s.exec(select(func.count()).select_from(Subscriber)).one()[0],
            "memberships": s.exec(select(func.count()).select_from(Subscription)).one()[0],
            "events": s.exec(select(func.count()).select_from(ConsentEvent)).one()[0],
        }
    engine.dispose()
    return out


def import_json(run, *args: str) -> dict:  # noqa: ANN001
    result = run("subscribers", "import", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


DUTCH_EXCEL = (
    "E-mailadres;Voornaam;Achternaam;Taal;Gemeente\r\n"
    "an@example.be;An;Peeters;nl;Gent\r\n"
    "Jan.Janssens@EXAMPLE.be;Jan;Janssens;EN;Antwerpen\r\n"
    "geen-adres;Piet;Fout;nl;Mechelen\r\n"
    "an@example.be;An;Peeters;nl;Gent\r\n"
    "\r\n"
    "jürgen@example.de;Jürgen;Müller;;Aken\r\n"
)


def test_dutch_excel_file_with_bom_and_semicolons_imports_and_reports_rejects(run, project):
    path = write(project / "people.csv", DUTCH_EXCEL, bom=True)
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "form v2")
    assert report["rows"] == 5
    assert report["added"] == 3 and report["subscribed"] == 3
    assert report["status"] == "pending"  # the example list is double opt-in
    assert report["rejected_by_reason"] == {"invalid": 1, "duplicate": 1}
    assert [(r["line"], r["reason"]) for r in report["first_rejects"]] == [
        (4, "invalid"), (5, "duplicate")]
    assert "line 2" in report["first_rejects"][1]["detail"]
    rejects = project / "people.rejects.csv"
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    with rejects.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    assert rows[0][:4] == ["line", "reason", "detail", "E-mailadres"]
    assert [r[:2] for r in rows[1:]] == [["4", "invalid"], ["5", "duplicate"]]
    assert rows[1][3] == "geen-adres"

    shown = json.loads(run("subscribers", "show", "jan.janssens@example.be", "--json").stdout)
    assert shown["first_name"] == "Jan" and shown["language"] == "en"
    assert shown["attributes"] == {"Gemeente": "Antwerpen"}
    assert shown["lists"][0]["status"] == "pending"
    assert shown["consent"][0]["action"] == "import"
    assert shown["consent"][0]["consent"] == "form v2"
    assert shown["consent"][0]["confirmed"] is False
    # A row without a language gets the project's default.
    assert json.loads(run("subscribers", "show", "jürgen@example.de", "--json").stdout)[
        "language"] == "nl"


def test_comma_file_with_mapping_and_ignored_column(run, project):
    path = write(project / "crm.csv",
                 "Mail,Given,Secret,Plan\nx@example.be,Xavier,do-not-keep,gold\n")
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "crm",
                         "--map", "Mail=email", "--map", "Given=first_name",
                         "--map", "Secret=-")
    assert report["added"] == 1
    shown = json.loads(run("subscribers", "show", "x@example.be", "--json").stdout)
    assert shown["first_name"] == "Xavier"
    assert shown["attributes"] == {"Plan": "gold"}


def test_reimport_is_idempotent_and_update_refreshes_attributes(run, project):
    path = write(project / "p.csv", "email;city\na@example.be;Gent\nb@example.be;Gent\n")
    import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    before = counts(project)
    again = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    assert again["added"] == 0 and again["subscribed"] == 0 and again["unchanged"] == 2
    assert counts(project) == before

    write(path, "email;city\na@example.be;Leuven\nb@example.be;Gent\n")
    without = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    assert without["updated"] == 0
    updated = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1",
                          "--update")
    assert updated["updated"] == 1 and updated["unchanged"] == 1
    shown = json.loads(run("subscribers", "show", "a@example.be", "--json").stdout)
    assert shown["attributes"] == {"city": "Leuven"}
    assert counts(project) == before  # no new people, memberships or consent events


def test_confirmed_import_records_confirmed_consent_and_upgrades_pending(run, project):
    path = write(project / "p.csv", "email\na@example.be\n")
    import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--confirmed",
                         "--consent", "double opt-in on old site, 2025")
    assert report["confirmed"] == 1 and report["status"] == "confirmed"
    shown = json.loads(run("subscribers", "show", "a@example.be", "--json").stdout)
    assert shown["lists"][0]["status"] == "confirmed"
    assert [e["confirmed"] for e in shown["consent"]] == [False, True]
    assert shown["consent"][1]["consent"] == "double opt-in on old site, 2025"


def test_import_never_resubscribes_unsubscribed_or_suppressed(run, project):
    path = write(project / "p.csv", "email\na@example.be\nb@example.be\nc@example.be\n")
    import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1", "--confirmed")
    assert run("subscribers", "remove", "a@example.be", "--list", "nieuwsbrief").exit_code == 0
    assert run("suppression", "add", "b@example.be").exit_code == 0
    assert run("suppression", "add", "new@example.be").exit_code == 0
    write(path, "email\na@example.be\nb@example.be\nnew@example.be\nd@example.be\n")
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v2",
                         "--confirmed", "--update")
    assert report["rejected_by_reason"] == {"unsubscribed": 1, "suppressed": 2}
    assert report["added"] == 1
    shown = json.loads(run("subscribers", "show", "a@example.be", "--json").stdout)
    assert shown["lists"][0]["status"] == "unsubscribed"
    assert run("subscribers", "show", "new@example.be").exit_code == 1


def test_dry_run_reports_the_same_and_changes_nothing(run, project):
    path = write(project / "p.csv", DUTCH_EXCEL)
    before = counts(project)
    dry = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1", "--dry-run")
    assert counts(project) == before
    real = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    for key in ("rows", "added", "subscribed", "rejected_by_reason"):
        assert dry[key] == real[key]
    assert dry["dry_run"] is True


def test_broken_encoding_half_way_leaves_database_untouched(run, project):
    lines = "email\n" + "".join(f"p{i}@example.be\n" for i in range(5000))
    path = project / "p.csv"
    path.write_bytes(lines.encode() + b"caf\xe9@example.be\n")
    before = counts(project)
    result = run("subscribers", "import", str(path), "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 1
    assert "Line 5002 is not valid" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 2
    assert counts(project) == before
    # The same file read as cp1252 imports fine.
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1",
                         "--encoding", "cp1252")
    assert report["added"] == 5001


@pytest.mark.parametrize("args, message", [
    (["--list", "nope", "--consent", "v1"], "No list called 'nope'"),
    (["--list", "nieuwsbrief", "--consent", " "], "consent"),
    (["--list", "nieuwsbrief", "--consent", "v1", "--map", "Nope=email"], "Nope"),
])
def test_bad_options_give_one_line_and_exit_1(run, project, args, message):
    path = write(project / "p.csv", "email\na@example.be\n")
    result = run("subscribers", "import", str(path), *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert counts(project)["subscribers"] == 0


def test_file_without_address_column_is_refused(run, project):
    path = write(project / "p.csv", "name;city\nAn;Gent\n")
    result = run("subscribers", "import", str(path), "--list", "nieuwsbrief", "--consent", "v")
    assert result.exit_code == 1
    assert "No address column" in result.stderr
    assert "split on semicolons (;)" in result.stderr and "--delimiter" in result.stderr


@pytest.mark.parametrize("separator", [",", ";", "\t", "|"])
def test_the_separator_is_detected_from_the_first_lines(run, project, separator):
    """A comma in a `;` file's header ("Naam, voornaam") does not fool the detection."""
    other = "," if separator != "," else ";"
    header = separator.join(["email", f"Naam{other} voornaam", "Gemeente"])
    rows = [separator.join([f"p{i}@example.be", f"Peeters{other} An", "Gent"])
            for i in range(3)]
    path = write(project / "p.csv", "\n".join([header, *rows]) + "\n")
    result = run("subscribers", "import", str(path), "--list", "nieuwsbrief", "--consent",
                 "v", "--confirmed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 3


def test_duplicates_across_batches_and_parallel_workers_match_sequential(project, run):
    """Workers (separate processes) and batch boundaries give the same result as one pass."""
    rows = [f"user{i % 4500}@d{i % 4500 % 7}.example.be;N{i}" for i in range(5000)]
    rows[100] = "not an address;X"
    path = write(project / "big.csv", "email;first_name\n" + "\n".join(rows) + "\n")
    settings = load_settings()
    engine = make_engine(settings.resolved_database_url)
    key = settings.secrets.require("hash_key")
    reports = []
    for workers in (0, 1):
        with Session(engine) as session:
            report = import_csv(session, key, path, ImportOptions(
                list_slug="nieuwsbrief", consent="v1", workers=workers))
            session.rollback()
        reports.append(report.as_dict())
    engine.dispose()
    for report in reports:
        report.pop("seconds")
    assert reports[0] == reports[1]
    first = reports[0]
    # 4500 distinct addresses; line 102 is invalid, so user100's first valid row is later.
    assert first["added"] == 4500
    assert first["rejected_by_reason"] == {"invalid": 1, "duplicate": 499}


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 18])
def test_blocks_never_cut_a_record_and_keep_line_numbers(size):
    """Cutting the file into blocks gives exactly the rows (and lines) csv.reader gives."""
    import io

    from mailer.audience.csvrows import CsvReader, parse_block

    text = ('email;note\r\n'
            'a@example.be;"two\r\nlines; with ; separators"\r\n'
            'b@example.be;plain\r\n'
            '\r\n'
            'c@example.be;"quote "" inside"\r\n'
            'd@example.be;"three\nshort\nlines"\n'
            'e@example.be;last')
    reader = CsvReader(io.BytesIO(text.encode()))
    got = []
    for first, block in reader.blocks(size):
        got.extend(parse_block(block, first, reader.encoding, reader.delimiter))
    expected_cells = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))[1:]
    assert [cells for _, cells in got] == [c for c in expected_cells if c]
    assert [line for line, _ in got] == [2, 4, 6, 7, 10]


def test_addresses_that_need_smtputf8_are_imported_counted_and_named(run, project):
    """chloë@… is a valid address: imported, counted and named by line, with the warning
    that only a relay offering SMTPUTF8 can deliver it; a rejected row is not counted."""
    path = write(project / "p.csv", "email;voornaam\n"
                                    "an@example.be;An\n"
                                    "Chloë@Example.be;Chloë\n"
                                    "chloë@example.be;Chloë\n"  # duplicate: rejected
                                    "jürgen@müller.de;Jürgen\n")
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1",
                         "--dry-run")
    assert (report["smtputf8"], report["smtputf8_lines"]) == (2, [3, 5])
    result = run("subscribers", "import", str(path), "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 0, result.stderr
    assert "2 addresses need SMTPUTF8" in result.stderr and "lines 3, 5" in result.stderr
    assert "only a relay that offers SMTPUTF8 can deliver to them" in result.stderr
    assert show_json(run, "chloë@example.be")["first_name"] == "Chloë"
    # Once known, the same address counts again on a re-import (it is still in the list).
    again = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1")
    assert again["unchanged"] == 3 and again["smtputf8"] == 2
    plain = write(project / "plain.csv", "email\nbob@example.be\n")
    result = run("subscribers", "import", str(plain), "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 0 and "SMTPUTF8" not in result.stderr
    one = write(project / "one.csv", "email\nzoë@example.be\n")
    result = run("subscribers", "import", str(one), "--list", "nieuwsbrief", "--consent", "v1")
    assert "1 address needs SMTPUTF8" in result.stderr and "line 2)" in result.stderr
    assert "can deliver to it" in result.stderr


def show_json(run, address: str) -> dict:  # noqa: ANN001
    result = run("subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def notices(project: Path) -> list[tuple[str, str, str]]:
    """(address, kind, state) of every notice, in address order."""
    engine = make_engine(load_settings().resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            f"SELECT s.email, n.kind, n.state FROM {NOTICE} n JOIN subscriber s "
            "ON s.id = n.subscriber_id ORDER BY s.email")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_send_confirmation_asks_every_pending_person_once_and_the_link_confirms(
        run, project, monkeypatch):
    """Into a double opt-in list: without the option the summary says nobody asks them;
    with it, a confirmation is queued for the new and the earlier pending (once), `mailer
    run` sends them through the relay, and the link confirms with the import's consent."""
    from tests.support.smtpserver import SmtpServer
    from tests.support.webserver import WebServer

    first = write(project / "a.csv", "email;voornaam\nan@example.be;An\nbo@example.be;Bo\n")
    result = run("subscribers", "import", str(first), "--list", "nieuwsbrief",
                 "--consent", "ledenlijst 2026")
    assert result.exit_code == 0, result.stderr
    assert "2 pending" in result.stderr and "--send-confirmation" in result.stderr
    # retention removes who never confirms: the summary says so, with the setting
    assert "Who has not confirmed after 30 days is removed ([privacy] pending_days)." \
        in result.stderr
    assert notices(project) == []

    both = write(project / "b.csv", "email;voornaam\nan@example.be;An\ncas@example.be;Cas\n")
    args = ("--list", "nieuwsbrief", "--consent", "ledenlijst 2026", "--send-confirmation")
    dry = import_json(run, str(both), *args, "--dry-run")
    assert (dry["confirmations_queued"], dry["already_asked"]) == (2, 0)
    assert notices(project) == []
    report = import_json(run, str(both), *args)
    # cas is new, an was pending and never asked; bo is not in this file
    assert (report["confirmations_queued"], report["already_asked"]) == (2, 0)
    assert notices(project) == [("an@example.be", "confirm", "queued"),
                                ("cas@example.be", "confirm", "queued")]
    again = run("subscribers", "import", str(both), *args)
    assert again.exit_code == 0, again.stderr
    assert "0 confirmation mails queued (2 asked before, not again)" in again.stderr
    assert "`mailer run` (cron) or `mailer serve` sends them, at the pace of [sending]" \
        in again.stderr
    assert len(notices(project)) == 2

    with SmtpServer() as smtp:
        monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT",
                           f"smtp://127.0.0.1:{smtp.port}?tls=none")
        monkeypatch.setenv("MAILER_PUBLIC_URL", "https://nieuws.example.be")
        sent = run("run", "--json")
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.stdout)["notices"]["sent"] == 2
        assert sorted(m.recipients for m in smtp.messages()) == [
            ("an@example.be",), ("cas@example.be",)]
        mail = next(m for m in smtp.messages() if m.recipients == ("cas@example.be",))
    assert notices(project) == [("an@example.be", "confirm", "sent"),
                                ("cas@example.be", "confirm", "sent")]

    from email import message_from_bytes

    from mailer.project import Project
    from mailer.web.app import create_app

    html = next(p for p in message_from_bytes(mail.data).walk()
                if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    link = re.search(r'href="https://nieuws\.example\.be(/c/[^"]+)"', html).group(1)
    app_project = Project.load()
    with WebServer(create_app(app_project)) as web:
        assert web.request("POST", link).status == 200
    app_project.close()
    shown = show_json(run, "cas@example.be")
    assert shown["lists"][0]["status"] == "confirmed"
    assert [(e["action"], e["consent"], e["confirmed"]) for e in shown["consent"]] == [
        ("import", "ledenlijst 2026", False), ("confirm", "ledenlijst 2026", True)]


@pytest.mark.parametrize("args, message", [
    (["--list", "nieuwsbrief", "--confirmed"], "give one of the two"),
    (["--list", "events"], "'events' is a single opt-in list"),
])
def test_send_confirmation_is_refused_where_nobody_confirms(run, project, args, message):
    (project / "lists" / "events.toml").write_text(
        'name = "Events"\nlanguage = "en"\noptin = "single"\nfrom_name = "Events"\n'
        'from_address = "events@example.be"\n')
    run("lists", "sync")
    path = write(project / "p.csv", "email\na@example.be\n")
    result = run("subscribers", "import", str(path), *args, "--consent", "v1",
                 "--send-confirmation")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert counts(project)["subscribers"] == 0


DUTCH_NAMES = (
    "E-mailadres;Voornaam;Tussenvoegsel;Achternaam\r\n"
    "jan@example.nl;Jan;van der;Berg\r\n"
    "marieke@example.nl;Marieke;De;Vries\r\n"  # as some systems export it: capital D
    "piet@example.nl;Piet;;Jansen\r\n"
    "anna@example.nl;Anna;'t;Hart\r\n"
)


def test_a_tussenvoegsel_column_is_imported_shown_sorted_and_used_in_the_mail(
        run, project, monkeypatch):
    """The infix (tussenvoegsel) is a field of its own: imported, shown, searched, sorted
    under the last name, and written the Dutch way in the To header and the template."""
    from email import message_from_bytes
    from email.header import decode_header, make_header

    from tests.support.smtpserver import SmtpServer

    path = write(project / "leden.csv", DUTCH_NAMES, bom=True)
    report = import_json(run, str(path), "--list", "nieuwsbrief", "--consent", "v1",
                         "--confirmed")
    assert report["added"] == 4 and report["rejected"] == 0
    jan = show_json(run, "jan@example.nl")
    assert (jan["first_name"], jan["infix"], jan["last_name"]) == ("Jan", "van der", "Berg")
    assert jan["name"] == "Jan van der Berg" and "attributes" not in jan["attributes"]
    assert jan["attributes"] == {}
    assert show_json(run, "marieke@example.nl")["name"] == "Marieke de Vries"
    assert "Jan van der Berg" in run("subscribers", "show", "jan@example.nl").stdout

    def emails(*args: str) -> list[str]:
        result = run("subscribers", "ls", *args, "--json")
        assert result.exit_code == 0, result.stderr
        return [r["email"].partition("@")[0] for r in json.loads(result.stdout)]

    assert emails("--sort", "name") == ["jan", "anna", "piet", "marieke"]  # B, H, J, V
    assert emails("--sort", "name", "--list", "nieuwsbrief", "--limit", "2") == [
        "jan", "anna"]
    assert emails("--search", "de vries") == ["marieke"]
    assert emails("--search", "van der") == ["jan"]

    # --update changes an infix; a file with an "infix" (or "prefix") header works too
    fixed = write(project / "fix.csv", "email,prefix,last_name\npiet@example.nl,van,Jansen\n")
    updated = import_json(run, str(fixed), "--list", "nieuwsbrief", "--consent", "v1",
                          "--update")
    assert updated["updated"] == 1
    assert show_json(run, "piet@example.nl")["name"] == "Piet van Jansen"

    subject = ("Beste {{ subscriber.name | default('lezer') }} "
               "({{ subscriber.family_name | default('-') }})")
    with SmtpServer() as smtp:
        monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT",
                           f"smtp://127.0.0.1:{smtp.port}?tls=none")
        created = run("campaign", "create", "namen", "--list", "nieuwsbrief", "--template",
                      "templates/newsletter.html.j2", "--subject", subject)
        assert created.exit_code == 0, created.output
        sent = run("campaign", "send", "namen", "--yes", "--json")
        assert sent.exit_code == 0, sent.output
        mails = {m.recipients[0]: message_from_bytes(m.data) for m in smtp.messages()}
    jan_mail, anna_mail = mails["jan@example.nl"], mails["anna@example.nl"]
    assert str(make_header(decode_header(jan_mail["To"]))) == (
        "Jan van der Berg <jan@example.nl>")
    assert str(make_header(decode_header(jan_mail["Subject"]))) == (
        "Beste Jan van der Berg (Van der Berg)")
    assert str(make_header(decode_header(anna_mail["Subject"]))) == (
        "Beste Anna 't Hart ('t Hart)")
    assert str(make_header(decode_header(mails["marieke@example.nl"]["Subject"]))) == (
        "Beste Marieke de Vries (De Vries)")

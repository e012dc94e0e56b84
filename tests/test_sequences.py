"""Drip sequences (issue 15, points 2, 3 and 6): `[[sequence]]` in a list's file, steps
timed from confirmation (or an import with --start-sequences) in send windows of the
subscriber's zone, each step once and in order, never after unsubscribing, through the one
outbox; on SQLite and PostgreSQL.

Time is the engine's one test hook, TEST_MAILER_NOW: imports, syncs and `mailer run`s
happen at chosen instants, and months are walked by calling `queue_due` at chosen
instants. Mails go to the real test SMTP server (tests/support/smtpserver.py)."""

from __future__ import annotations

import json
import shlex
import signal
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailer.audience.lists import parse_weekdays
from mailer.audience.selfservice import confirm_member, sign_up
from mailer.audience.subscribers import unsubscribe
from mailer.automation.sequences import next_window, queue_due
from mailer.db import session_scope
from mailer.delivery.sender import MARK_AHEAD, worker_count
from mailer.models import TEST_CLOCK, MailingList, Subscriber
from mailer.project import Project
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.test_delivery import alive, configure, mailer, run_out

BRUSSELS = ZoneInfo("Europe/Brussels")
WELCOME = ('  { after = "0m", template = "templates/welcome.html.j2", '
           "subject = \"Welkom, {{ subscriber.first_name | default('lezer') }}\" },\n")
WELKOM = ('\n[[sequence]]\nname = "welkom"\nsteps = [\n' + WELCOME
          + '  { after = "3d", id = "tips-1", template = "templates/newsletter.html.j2", '
          'subject = "Drie tips om te starten", window = "09:00-17:00", weekdays = "mon-fri" '
          '},\n'
          '  { after = "10d", id = "tips-2", template = "templates/newsletter.html.j2", '
          'subject = "Nog een tip" },\n]\n')


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


def at(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    monkeypatch.setenv(TEST_CLOCK, when)


def define(project: Path, text: str) -> None:
    """lists/nieuwsbrief.toml as `mailer init` wrote it, plus `text`."""
    path = project / "lists" / "nieuwsbrief.toml"
    original = path.with_suffix(".orig")
    if not original.exists():
        original.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    path.write_text(original.read_text(encoding="utf-8") + text, encoding="utf-8")


def sync(run, *extra: str):  # noqa: ANN001, ANN201
    result = run("lists", "sync", *extra)
    assert result.exit_code == 0, result.output
    return result


def join(run, project: Path, rows: list[tuple[str, str]], *extra: str) -> None:  # noqa: ANN001
    """Import (address, timezone attribute or "") as confirmed members, starting the
    sequences."""
    csv = project / f"join-{len(list(project.glob('join-*.csv')))}.csv"
    csv.write_text("email,first_name,timezone\n" + "".join(
        f"{a},{a.split('@')[0].title()},{tz}\n" for a, tz in rows))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed", "--start-sequences", "--quiet", *extra)
    assert result.exit_code == 0, result.output


def got(server: SmtpServer) -> dict[str, list[str]]:
    """Each recipient's subjects, in the order they arrived."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in server.messages():
        subject = str(message_from_bytes(m.data, policy=email_policy)["subject"])
        for r in m.recipients:
            out[r].append(subject)
    return dict(out)


def engine():  # noqa: ANN201
    return Project.load().engine


# --- the send window ---------------------------------------------------------------------


def test_a_window_opens_at_its_local_time_through_both_dst_changes():
    monday_nine = datetime(2026, 3, 30, 7, tzinfo=UTC)  # 09:00 summer time in Brussels
    # Saturday 28 March 18:00 winter time: the next window is Monday, after the change.
    assert next_window(datetime(2026, 3, 28, 17, tzinfo=UTC), BRUSSELS, "09:00-17:00",
                       "mon-fri") == monday_nine
    assert next_window(monday_nine, BRUSSELS, "09:00-17:00", "mon-fri") is None
    assert next_window(monday_nine - timedelta(seconds=1), BRUSSELS, "09:00-17:00",
                       "mon-fri") == monday_nine
    # Autumn: Friday 23 October 17:00 summer time -> Monday 26th 09:00 winter time.
    assert next_window(datetime(2026, 10, 23, 15, tzinfo=UTC), BRUSSELS, "09:00-17:00",
                       "mon-fri") == datetime(2026, 10, 26, 8, tzinfo=UTC)
    # New York's own change (8 March): 09:00 there is 14:00 UTC before, 13:00 after.
    york = ZoneInfo("America/New_York")
    assert next_window(datetime(2026, 3, 7, 15, tzinfo=UTC), york, "09:00-10:00",
                       None) == datetime(2026, 3, 8, 13, tzinfo=UTC)
    # Weekdays alone: a Saturday waits for Monday midnight, local.
    assert next_window(datetime(2026, 12, 5, 12, tzinfo=UTC), BRUSSELS, None,
                       "mon-fri") == datetime(2026, 12, 6, 23, tzinfo=UTC)
    assert parse_weekdays("mon,wed-fri") == {0, 2, 3, 4}


@pytest.mark.parametrize(("steps", "said"), [
    ('{ after = "3 dagen", template = "templates/newsletter.html.j2", subject = "x" }',
     "a time after the start"),
    ('{ after = "1d", template = "templates/newsletter.html.j2", subject = "x", '
     'window = "17:00-09:00" }', "ending after it starts"),
    ('{ after = "1d", template = "templates/newsletter.html.j2", subject = "x", '
     'weekdays = "ma-vr" }', "weekdays are mon"),
    ('{ after = "2d", template = "templates/newsletter.html.j2", subject = "x" }, '
     '{ after = "1d", template = "templates/welcome.html.j2", subject = "y" }',
     "must come later"),
    ('{ after = "1d", template = "templates/newsletter.html.j2", subject = "x" }, '
     '{ after = "2d", template = "templates/newsletter.html.j2", subject = "y" }',
     "give each step an id"),
])
def test_a_bad_sequence_is_one_clear_line_and_nothing_is_written(run, project, steps, said):
    define(project, f'\n[[sequence]]\nname = "welkom"\nsteps = [{steps}]\n')
    result = run("lists", "sync")
    assert result.exit_code == 1 and said in result.stderr, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) <= 2
    assert run("sequences", "ls", "--json").stdout.strip() == "[]"


def test_a_bad_zone_template_or_field_is_one_clear_line_and_nothing_is_written(run,
                                                                               project):
    """A list's time zone that is no zone, a step's template that does not exist, a
    subject that reads a field nobody has: one line (and a hint that works), exit 1, no
    sequence written."""
    sync(run)  # the list exists (a step's check names it)
    path = project / "lists" / "nieuwsbrief.toml"
    original = path.read_text(encoding="utf-8")
    path.write_text('timezone = "Europe/Brusel"\n' + original + WELKOM, encoding="utf-8")
    result = run("lists", "sync")
    assert result.exit_code == 1 and "unknown time zone 'Europe/Brusel'" in result.stderr
    path.write_text(original, encoding="utf-8")
    define(project, WELKOM.replace("templates/welcome.html.j2", "templates/welkom.html.j2"))
    result = run("lists", "sync")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: Sequence welkom, step templates/welkom.html.j2: "
                                    "Template not found: templates/welkom.html.j2"), \
        result.stderr
    define(project, WELKOM.replace('"Nog een tip"', '"Nog een tip, {{ subscriber.bijnaam }}"'))
    result = run("lists", "sync")
    assert result.exit_code == 1, result.output
    first, hint = result.stderr.strip().splitlines()
    assert first.startswith("Error: Sequence welkom, step tips-2: subscriber.bijnaam (the "
                            "subject) is undefined"), first
    # the hint names what exists (the step's campaign does not: the sync was undone)
    checked = run(*shlex.split(hint.split("See every problem: mailer ", 1)[1]))
    assert checked.exit_code == 1 and "subscriber.bijnaam" in checked.output, checked.output
    assert run("sequences", "ls", "--json").stdout.strip() == "[]"
    with engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar_one() == 0


def test_mailer_run_sends_a_windowed_step_at_local_nine_across_both_dst_changes(
        run, project, smtp, monkeypatch):
    """Through `mailer run` and the SMTP server: a 3d step in 09:00-17:00 mon-fri for
    someone who confirmed the Friday evening before a change of the clocks goes at 09:00
    Brussels time on the Tuesday after it (Monday 18:00 is outside the window): 07:00
    UTC after the spring change, 08:00 UTC after the autumn one; a run an hour before
    (in autumn: 09:00 by the summer offset) sends nothing. Also docs/sequences.md's example: a
    confirmation on Tuesday 1 December 21:20 gets the 3d step on Monday 7 December 09:00."""
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-03-01T08:00:00+00:00")
    sync(run)
    for start, early, due, address in [
            ("2026-03-27T17:00:00+00:00", "2026-03-31T06:00:10+00:00",
             "2026-03-31T07:00:10+00:00", "lente@example.be"),  # Friday 18:00 CET
            ("2026-10-23T16:00:00+00:00", "2026-10-27T07:00:10+00:00",
             "2026-10-27T08:00:10+00:00", "herfst@example.be")]:  # Friday 18:00 CEST
        at(monkeypatch, start)
        join(run, project, [(address, "")])
        assert run("run").exit_code == 0  # the welcome
        at(monkeypatch, early)
        assert run("run").exit_code == 0
        assert got(smtp)[address] == [f"Welkom, {address.split('@')[0].title()}"], early
        at(monkeypatch, due)
        assert run("run").exit_code == 0
        assert got(smtp)[address][1:] == ["Drie tips om te starten"], due
    # the worked example: 3 days after Tuesday 21:20 is Friday 21:20, after the window
    assert next_window(datetime(2026, 12, 4, 20, 20, tzinfo=UTC), BRUSSELS, "09:00-17:00",
                       "mon-fri") == datetime(2026, 12, 7, 8, tzinfo=UTC)


# --- months of simulated time --------------------------------------------------------------


def test_months_of_steps_each_once_in_order_in_each_zones_window(run, project,
                                                                 monkeypatch):
    """Three steps (0m; 3d in 09:00-17:00 mon-fri; 10d in 10:00-11:00) walked every 30
    minutes from 1 March to 30 May 2026, through New York's (8 March) and Brussels' (29
    March) change to summer time, for people in four zones who start at different
    moments. The sender is stood in for by marking what was queued as sent at once; the
    expected moment of each step is worked out here independently, by trying each
    instant of the walk against the window in the person's zone."""
    define(project, WELKOM.replace(
        'subject = "Nog een tip" }',
        'subject = "Nog een tip", window = "10:00-11:00" }'))
    sync(run)
    zones = {"": BRUSSELS, "America/New_York": ZoneInfo("America/New_York"),
             "Asia/Tokyo": ZoneInfo("Asia/Tokyo"), "Asia/Kolkata": ZoneInfo("Asia/Kolkata")}
    starts = ["2026-03-01T10:07:00+00:00", "2026-03-05T23:40:00+00:00",
              "2026-03-26T16:55:00+00:00", "2026-04-10T03:00:00+00:00"]
    people: dict[str, tuple[ZoneInfo, datetime]] = {}
    for i, start in enumerate(starts):
        at(monkeypatch, start)
        rows = [(f"p{i}{j}@example.be", tz) for j, tz in enumerate(zones)]
        join(run, project, rows)
        for address, tz in rows:
            people[address] = (zones[tz], datetime.fromisoformat(start))
    monkeypatch.delenv(TEST_CLOCK)
    instance = Project.load()
    walk = [datetime(2026, 3, 1, 10, tzinfo=UTC) + timedelta(minutes=30 * i)
            for i in range(90 * 48)]
    for now in walk:
        if queue_due(instance, now).queued:
            with instance.engine.begin() as conn:  # the sender, standing in
                conn.execute(sa.text("UPDATE delivery SET state = 'sent', sent_at = queued_at "
                                     "WHERE state = 'queued'"))
    with instance.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.email, c.subject, d.queued_at FROM delivery d JOIN subscriber s "
            "ON s.id = d.subscriber_id JOIN campaign c ON c.id = d.campaign_id "
            "ORDER BY d.id")).all()
        states = Counter(conn.execute(sa.text("SELECT state FROM sequence_progress")
                                      ).scalars())
    instance.close()
    assert states == {"done": len(people)}
    queued: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for email, subject, stamp in rows:
        when = stamp if isinstance(stamp, datetime) else datetime(1970, 1, 1, tzinfo=UTC) \
            + timedelta(microseconds=stamp)
        queued[email].append((subject, when.astimezone(UTC)))

    def expected(zone: ZoneInfo, due: datetime, window: tuple[int, int] | None,
                 weekdays: set[int]) -> datetime:
        for now in walk:
            local = now.astimezone(zone)
            if now >= due and local.weekday() in weekdays and (
                    window is None or window[0] <= local.hour < window[1]):
                return now
        raise AssertionError("never")

    everyday = set(range(7))
    for address, (zone, start) in people.items():
        subjects = [s for s, _ in queued[address]]
        assert subjects == ["Welkom, {{ subscriber.first_name | default('lezer') }}",
                            "Drie tips om te starten", "Nog een tip"], address
        times = [t for _, t in queued[address]]
        assert times == [
            expected(zone, start, None, everyday),
            expected(zone, start + timedelta(days=3), (9, 17), {0, 1, 2, 3, 4}),
            expected(zone, start + timedelta(days=10), (10, 11), everyday)], address
        assert 9 <= times[1].astimezone(zone).hour < 17 and times[1].astimezone(zone
                                                                                 ).weekday() < 5
        assert times[2].astimezone(zone).hour == 10


# --- end to end: mailer run, the real SMTP server ----------------------------------------


def test_mailer_run_sends_each_step_once_in_order_and_never_after_leaving(
        run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    join(run, project, [("an@example.be", ""), ("bo@example.be", ""),
                        ("cor@example.be", "America/New_York")])
    before = run("run", "--json")  # 0m: the welcome, at once
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["steps"]["queued"] == 3
    assert {a: s for a, s in got(smtp).items()} == {
        a: ["Welkom, " + a.split("@")[0].title()] for a in
        ("an@example.be", "bo@example.be", "cor@example.be")}
    assert run("run").exit_code == 0 and len(smtp.messages()) == 3  # again: nothing
    # An unsubscribes; bo's address is suppressed.
    instance = Project.load()
    with session_scope(instance.engine) as session:
        assert unsubscribe(session, "an@example.be", "nieuwsbrief", source="test")
    instance.close()
    assert run("suppression", "add", "bo@example.be").exit_code == 0
    # 3 days later is Friday 4 December 09:00 in Brussels, but only 03:00 in New York.
    at(monkeypatch, "2026-12-04T08:00:10+00:00")
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == {"queued": 0, "waiting": 1, "stopped": 2}
    assert len(smtp.messages()) == 3
    at(monkeypatch, "2026-12-04T14:00:10+00:00")  # 09:00 in New York
    assert run("run").exit_code == 0
    assert got(smtp)["cor@example.be"] == ["Welkom, Cor", "Drie tips om te starten"]
    at(monkeypatch, "2026-12-11T08:00:10+00:00")  # 10 days
    assert run("run").exit_code == 0
    assert got(smtp) == {"an@example.be": ["Welkom, An"], "bo@example.be": ["Welkom, Bo"],
                         "cor@example.be": ["Welkom, Cor", "Drie tips om te starten",
                                            "Nog een tip"]}
    shown = json.loads(run("sequences", "show", "welkom", "--json").stdout)
    assert shown["people"] == {"active": 0, "done": 1, "stopped": 2}
    assert [s["deliveries"] for s in shown["steps"]] == [{"sent": 3}, {"sent": 1},
                                                        {"sent": 1}]
    listed = json.loads(run("sequences", "ls", "--json").stdout)
    assert listed[0]["sequence"] == "welkom" and listed[0]["done"] == 1
    # The step campaigns are not campaigns a person made: `campaign ls` does not list them.
    assert json.loads(run("campaign", "ls", "--json").stdout) == []
    preview = run("sequences", "preview", "welkom", "--step", "2", "--subscriber",
                  "cor@example.be")
    assert preview.exit_code == 0 and "Drie tips om te starten" in preview.stderr
    missing = run("sequences", "preview", "welkom", "--step", "4", "--subscriber",
                  "cor@example.be")
    assert missing.exit_code == 1 and "has 3 step(s)" in missing.stderr
    # An signs up again and confirms: a member again, but not in the sequence again
    instance = Project.load()
    with session_scope(instance.engine) as session:
        ml = session.exec(select(MailingList)).one()
        sign_up(session, instance.hash_key, email="an@example.be", mailing_list=ml,
                consent="test")
        an = session.exec(select(Subscriber).where(Subscriber.email == "an@example.be")).one()
        assert confirm_member(session, an.id, ml.id, issued_at=datetime(
            2026, 12, 11, 8, 0, 10, tzinfo=UTC)) == "confirmed"
    instance.close()
    at(monkeypatch, "2026-12-25T08:00:10+00:00")
    assert run("run").exit_code == 0
    assert [s for s in got(smtp)["an@example.be"] if "tip" in s] == []
    with engine().connect() as conn:
        assert conn.execute(sa.text(
            "SELECT q.state FROM sequence_progress q JOIN subscriber p ON p.id = "
            "q.subscriber_id WHERE p.email = 'an@example.be'")).scalar_one() == "stopped"


def test_only_confirmation_or_start_sequences_start_a_sequence(run, project, smtp,
                                                                monkeypatch):
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    csv = project / "old.csv"
    csv.write_text("email\nold@example.be\n")
    assert run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed", "--quiet").exit_code == 0
    sync(run)  # members before the sequence existed are not in it
    assert run("subscribers", "add", "new@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    again = project / "again.csv"
    again.write_text("email\nimported@example.be\n")
    assert run("subscribers", "import", str(again), "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed", "--quiet").exit_code == 0  # no --start-sequences
    assert run("run").exit_code == 0
    assert sorted(got(smtp)) == ["new@example.be"]


# --- editing a sequence ------------------------------------------------------------------


def test_editing_steps_reaches_who_has_not_passed_and_never_resends(run, project, smtp,
                                                                    monkeypatch):
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")  # a Tuesday
    sync(run)
    join(run, project, [("an@example.be", "")])
    assert run("run").exit_code == 0
    at(monkeypatch, "2026-12-04T08:00:10+00:00")  # Friday 09:00 in Brussels: an's 3d
    join(run, project, [("bo@example.be", "")])
    assert run("run").exit_code == 0
    assert got(smtp) == {"an@example.be": ["Welkom, An", "Drie tips om te starten"],
                         "bo@example.be": ["Welkom, Bo"]}
    # A step at 2d, added now: an has passed 2d (she had the 3d step), bo has not.
    added = WELKOM.replace('  { after = "3d"', '  { after = "2d", id = "extra", template = '
                           '"templates/newsletter.html.j2", subject = "Extra" },\n'
                           '  { after = "3d"')
    define(project, added)
    dry = sync(run, "--dry-run")
    assert "step 2 extra added (after 2d): reaches the 1 person who has not passed 2d" \
        in dry.stderr and "Dry run: nothing was changed." in dry.stderr
    assert len(json.loads(run("sequences", "show", "welkom", "--json").stdout)["steps"]) == 3
    sync(run)
    at(monkeypatch, "2026-12-06T08:00:20+00:00")  # bo's 2d (a Sunday: no window)
    assert run("run").exit_code == 0
    at(monkeypatch, "2026-12-07T08:00:20+00:00")  # bo's 3d, Monday 09:00
    assert run("run").exit_code == 0
    assert got(smtp)["bo@example.be"] == ["Welkom, Bo", "Extra", "Drie tips om te starten"]
    assert got(smtp)["an@example.be"] == ["Welkom, An", "Drie tips om te starten"]
    # Reordered: tips-1 after tips-2 now (12d and 10d); the welcome and extra steps
    # removed; the template's text changed (not its subject). Nobody gets a step again.
    moved = WELKOM.replace(WELCOME, "").replace(
        'after = "3d", id = "tips-1"', 'after = "12d", id = "tips-1"')
    lines = moved.strip().splitlines()
    define(project, "\n" + "\n".join([*lines[:3], lines[4], lines[3], *lines[5:]]) + "\n")
    template = project / "templates" / "newsletter.html.j2"
    template.write_text(template.read_text(encoding="utf-8").replace(
        "<h2>Agenda</h2>", "<h2>Agenda</h2><p>Nieuw: de kalender voor 2027.</p>"),
        encoding="utf-8")
    said = sync(run).stderr
    assert "step templates/welcome.html.j2 removed" in said and "step extra removed" in said
    assert "tips-1: after 3d" in said and "-> after 12d" in said
    assert "step 1 tips-2: new template or subject: the 2 people still to get it" in said
    at(monkeypatch, "2026-12-11T08:00:30+00:00")  # an's 10d
    assert run("run").exit_code == 0
    # then a new subject for tips-2: bo, still to get it, gets that one
    define(project, "\n" + "\n".join([*lines[:3], lines[4], lines[3], *lines[5:]]).replace(
        '"Nog een tip" }', '"Nog een tip (nieuw)" }') + "\n")
    assert "step 1 tips-2: new template or subject: the 1 person still to get it" in sync(
        run).stderr
    for when in ("2026-12-14T08:00:30", "2026-12-16T08:00:30"):
        at(monkeypatch, when + "+00:00")  # an's 12d / bo's 10d; bo's 12d
        assert run("run").exit_code == 0
    assert got(smtp) == {
        "an@example.be": ["Welkom, An", "Drie tips om te starten", "Nog een tip"],
        "bo@example.be": ["Welkom, Bo", "Extra", "Drie tips om te starten",
                          "Nog een tip (nieuw)"]}
    # the new text is in the mails sent after the sync, and only in those
    mails = [message_from_bytes(m.data, policy=email_policy) for m in smtp.messages()]
    new_text = {(str(m["subject"]), "de kalender voor 2027" in m.get_body(
        ("html",)).get_content()) for m in mails if not m["subject"].startswith("Welkom")}
    assert new_text == {("Drie tips om te starten", False), ("Extra", False),
                        ("Nog een tip", True), ("Nog een tip (nieuw)", True)}, new_text
    shown = json.loads(run("sequences", "show", "welkom", "--json").stdout)
    assert shown["people"]["done"] == 2
    assert [s["step"] for s in shown["steps"]] == [1, 2, None, None]  # removed ones last
    # The sequence gone from the file: who is in it stops.
    define(project, "")
    assert "removed from its file" in sync(run).stderr
    assert json.loads(run("sequences", "ls", "--json").stdout)[0]["state"] == "removed"


def test_a_step_waits_while_the_one_before_is_still_in_the_outbox(run, project, smtp,
                                                                  monkeypatch):
    """The welcome held at the relay (in flight) when the 3d step comes due: the step
    waits for it (five minutes at a time) and goes after it, never before. (A deferred
    welcome is in the outbox the same way.)"""
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    join(run, project, [("an@example.be", "")])
    smtp.hold_data()
    runner = mailer("run", "--max-seconds", "300", **{TEST_CLOCK: "2026-12-01T08:00:30+00:00"})

    def in_flight() -> bool:
        with engine().connect() as conn:
            return alive(runner) and smtp.held == 1 and conn.execute(sa.text(
                "SELECT state FROM delivery")).scalar_one_or_none() == "sending"

    wait_for(in_flight, "the welcome in flight", state=lambda: f"{smtp.held} held")
    instance = Project.load()
    friday_nine = datetime(2026, 12, 4, 8, 0, 10, tzinfo=UTC)  # 09:00 in Brussels
    report = queue_due(instance, friday_nine)
    instance.close()
    assert (report.queued, report.waiting) == (0, 1)
    smtp.release_data()
    _, err = runner.communicate(timeout=300)
    assert runner.returncode == 0, err.decode(errors="replace")
    at(monkeypatch, "2026-12-04T08:00:20+00:00")
    assert json.loads(run("run", "--json").stdout)["steps"]["queued"] == 0  # 5 minutes
    assert got(smtp) == {"an@example.be": ["Welkom, An"]}
    at(monkeypatch, "2026-12-04T08:05:30+00:00")
    assert run("run").exit_code == 0
    assert got(smtp) == {"an@example.be": ["Welkom, An", "Drie tips om te starten"]}


# --- never twice ---------------------------------------------------------------------------


def test_a_stale_run_and_overlapping_runs_queue_a_step_once(run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    join(run, project, [(f"p{i}@example.be", "") for i in range(30)])
    monkeypatch.delenv(TEST_CLOCK)
    instance = Project.load()
    now = datetime(2026, 12, 1, 8, 1, tzinfo=UTC)
    with instance.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT subscriber_id, passed_after, last_step_id, "
                                      "next_step_id, next_at, state FROM sequence_progress"
                                      )).all()
    assert queue_due(instance, now).queued == 30
    with instance.engine.begin() as conn:  # what a run that read before that commit saw
        for row in before:
            conn.execute(sa.text(
                "UPDATE sequence_progress SET passed_after = :p, last_step_id = :l, "
                "next_step_id = :n, next_at = :a, state = :s WHERE subscriber_id = :i"),
                {"p": row.passed_after, "l": row.last_step_id, "n": row.next_step_id,
                 "a": row.next_at, "s": row.state, "i": row.subscriber_id})
    assert queue_due(instance, now).queued == 0  # the outbox's key says no
    with instance.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM delivery")).scalar_one() == 30
    instance.close()
    smtp.hold_data()
    env = {TEST_CLOCK: "2026-12-01T08:02:00+00:00"}
    runs = [mailer("run", "--json", **env) for _ in range(2)]
    wait_for(lambda: smtp.held and [p for p in runs if p.poll() is not None],
             "one run sending and the other one gone",
             state=lambda: f"{smtp.held} held, exit codes {[p.poll() for p in runs]}")
    smtp.release_data()
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")
    arrived = Counter(r for m in smtp.messages() for r in m.recipients)
    assert len(arrived) == 30 and set(arrived.values()) == {1}


def test_a_killed_sender_never_sends_a_step_twice(run, project, smtp, monkeypatch):
    """`mailer run` killed (-9) while steps are in flight, three times at random points
    (tests/test_delivery.kill_mid_send, as for campaigns and notices), then run to the
    end: every person got the welcome step at most once, and exactly those a kill left
    "sending" are "unknown" (in flight at a kill), never queued again by the sequence."""
    import random

    from tests.test_delivery import kill_mid_send, new_in_flight, wait_for_leases

    connections = 4
    configure(monkeypatch, smtp, rate=20, burst=20, connections=connections,
              lease_seconds=1)  # PostgreSQL: a killed run's claims hold this long
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    people = [f"p{i}@example.be" for i in range(150)]
    join(run, project, [(a, "") for a in people])
    at(monkeypatch, "2026-12-01T08:00:30+00:00")  # the runs' clock (os.environ)
    database = engine()
    rng = random.Random(20261202)
    in_flight: list[int] = []
    counted: set[int] = set()
    for kill in range(1, 4):
        kill_mid_send(smtp, rng, kill)
        left = len(new_in_flight(database, counted))
        assert 1 <= left <= worker_count(connections, 20) == connections, \
            f"kill {kill}: {left} steps were in flight"
        in_flight.append(left)
    wait_for_leases(database)  # the last kill's claims free
    for _ in range(2):  # to the end, and a second: nothing more
        run_out("run", "--max-seconds", "300", MAILER_DELIVERY__RATE="500",
                MAILER_DELIVERY__BURST="0")
    arrived = Counter(r for m in smtp.messages() for r in m.recipients)
    assert max(arrived.values()) == 1, "a step went out twice"
    with database.connect() as conn:
        states = dict(conn.execute(sa.text(
            "SELECT s.email, d.state FROM delivery d JOIN subscriber s "
            "ON s.id = d.subscriber_id")).all())
        progress = Counter(conn.execute(sa.text(
            "SELECT passed_after FROM sequence_progress")).scalars())
    database.dispose()
    assert len(states) == len(people) and progress == {0: len(people)}
    unknown = {a for a, s in states.items() if s == "unknown"}
    assert {a for a in people if not arrived[a]} <= unknown
    assert all(states[a] in ("sent", "unknown") for a in people)
    assert len(unknown) == sum(in_flight)  # each kill's in-flight ones, and no other


# --- a person's data ------------------------------------------------------------------------


def test_export_shows_and_erasure_removes_where_someone_is(run, project, monkeypatch):
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    join(run, project, [("an@example.be", "")])
    exported = run("gdpr", "export", "an@example.be", "--out", "-")
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.stdout)
    assert [q["sequence"] for q in document["sequences"]] == ["welkom"]
    assert run("gdpr", "erase", "an@example.be", "--yes").exit_code == 0
    with engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sequence_progress")
                            ).scalar_one() == 0


# --- the faults and signals campaign mails meet, on steps and notices ----------------------


def kinds(conn_engine) -> dict[tuple[str, str], str]:  # noqa: ANN001
    """(address, kind of campaign) -> state of every step and notice mail."""
    with conn_engine.connect() as conn:
        return {(e, k): s for e, k, s in conn.execute(sa.text(
            "SELECT p.email, c.kind, d.state FROM delivery d JOIN campaign c ON "
            "c.id = d.campaign_id JOIN subscriber p ON p.id = d.subscriber_id "
            "WHERE c.kind <> 'campaign'"))}


def test_steps_and_notices_meet_the_faults_campaign_mails_do(run, project, smtp,
                                                              monkeypatch):
    """tests/test_delivery.py's fault set (a greylisting, a refused address, a refused
    message, a lost reply after the final dot, dropped connections, a busy greeting) on
    welcome steps and confirmation mails in one `mailer run`: deferred and retried, the
    5.1.1 refusal bounced and suppressed (so the sequence stops for that person), the
    5.7.1 one failed, the lost reply unknown and never sent again; nobody twice."""
    configure(monkeypatch, smtp, connections=2, pause_failure_rate=0.9)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    members = [f"p{i}@example.be" for i in range(10)]
    join(run, project, [(a, "") for a in members])
    pending = [f"n{i}@example.nl" for i in range(6)]
    csv = project / "nieuw.csv"
    csv.write_text("email\n" + "".join(f"{a}\n" for a in pending))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--send-confirmation", "--quiet")
    assert result.exit_code == 0, result.output
    smtp.reply_to_rcpt(members[1], 451, "4.7.1 Greylisted, try later", times=1)
    smtp.reply_to_rcpt(pending[1], 451, "4.7.1 Greylisted, try later", times=1)
    smtp.reply_to_rcpt(members[2], 550, "5.1.1 No such user")
    smtp.reply_to_rcpt(pending[2], 550, "5.1.1 No such user")
    smtp.reply_to_data(554, "5.7.1 Rejected as spam", match=pending[3])
    smtp.reply_to_data(452, "4.3.1 Insufficient storage", times=2)
    smtp.drop_after_data(match=members[3])
    smtp.drop_after(3, times=2)
    smtp.drop_during_data(times=1)
    smtp.greet_with(421, "4.3.2 Too busy", times=1)
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    final = kinds(engine())
    step = {a: final[(a, "step")] for a in members}
    notice = {a: final[(a, "notice")] for a in pending}
    assert step.pop(members[2]) == "bounced" and step.pop(members[3]) == "unknown"
    assert set(step.values()) == {"sent"}, step
    assert notice.pop(pending[2]) == "bounced" and notice.pop(pending[3]) == "failed"
    assert set(notice.values()) == {"sent"}, notice
    got_once = Counter(r for m in smtp.messages() for r in m.recipients)
    assert set(got_once) == set(members + pending) - {members[2], pending[2], pending[3]}
    assert max(got_once.values()) == 1
    smtp.clear_faults()
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 0  # unknown stays
    # Three days on: the next step for everyone but the refused address (suppressed).
    at(monkeypatch, "2026-12-04T08:00:10+00:00")
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == {"queued": 9, "waiting": 0, "stopped": 1}
    assert {a: s[-1] for a, s in got(smtp).items() if a in members} == {
        a: "Drie tips om te starten" for a in members if a != members[2]}
    assert max(Counter(r for m in smtp.messages() for r in m.recipients
                       if r != members[3]).values()) == 2


def test_sigterm_lets_the_steps_and_notices_in_flight_finish_and_the_next_run_goes_on(
        run, project, smtp, monkeypatch):
    """`mailer run` sending welcome steps and confirmation mails gets SIGTERM (as systemd
    stops it) with two of them held at the server: those two finish and are recorded, it
    stops with exit 130 and the one line, and the command it names sends the rest, each
    person's mail once."""
    from tests.test_interrupt import delivered, finish, start

    configure(monkeypatch, smtp, rate=200, connections=2)
    define(project, WELKOM)
    at(monkeypatch, "2026-12-01T08:00:00+00:00")
    sync(run)
    members = [f"p{i}@example.be" for i in range(12)]
    join(run, project, [(a, "") for a in members])
    pending = [f"n{i}@example.nl" for i in range(6)]
    csv = project / "nieuw.csv"
    csv.write_text("email\n" + "".join(f"{a}\n" for a in pending))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--send-confirmation", "--quiet")
    assert result.exit_code == 0, result.output
    smtp.hold_data()
    runner = start("run", "--max-seconds", "600")
    # two in flight, two more marked and waiting for the connections (put back at the
    # signal: they had not started)
    wait_for(lambda: alive(runner) and smtp.held == 2 and Counter(
        kinds(engine()).values())["sending"] == 2 * MARK_AHEAD,
        "2 steps or notices in flight, 2 more marked",
        state=lambda: f"{smtp.held} held, {Counter(kinds(engine()).values())}")
    runner.send_signal(signal.SIGTERM)
    wait_for(lambda: delivered(runner.pid), "SIGTERM delivered")
    smtp.release_data()
    _, line = finish(runner)
    states = Counter(kinds(engine()).values())
    assert states["sent"] == len(smtp.messages()) == 2  # the two in flight, recorded
    assert states == {"sent": 2, "queued": 16}, states
    assert line.groups() == ("SIGTERM", "2", "16", None, "mailer run")
    result = run(*shlex.split(line[5])[1:], "--json")  # the command it gave
    assert result.exit_code == 0, result.output
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(received) == sorted(members + pending) and set(received.values()) == {1}
    assert Counter(kinds(engine()).values()) == {"sent": 18}

"""Recurring campaigns (issue 15, point 4): `campaign create --every CRON --tz ZONE`, and
`mailer run` making one dated campaign per occurrence, on SQLite and PostgreSQL.

Time is controlled with the engine's one test hook, TEST_MAILER_NOW (models.utcnow): the
`mailer run`s below happen at chosen instants, and months of schedule are walked by
calling `materialize` at chosen instants. Mails go to the real test SMTP server."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mailer.automation.recurring import Schedule, materialize
from mailer.models import TEST_CLOCK, RecurringCampaign
from mailer.project import Project
from tests.support.smtpserver import SmtpServer
from tests.test_delivery import TEMPLATE, configure, mailer, people

BRUSSELS = ZoneInfo("Europe/Brussels")
WEEKLY_SUBJECT = "Week {{ campaign.date | date('%V') }}"


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


def at(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """The engine's clock stands at `when` (ISO 8601, with its offset)."""
    monkeypatch.setenv(TEST_CLOCK, when)


def recurring(run, name: str, every: str, *extra: str, subject: str = WEEKLY_SUBJECT):  # noqa: ANN001, ANN201
    result = run("campaign", "create", name, "--list", "nieuwsbrief", "--template", TEMPLATE,
                 "--subject", subject, "--every", every, *extra)
    assert result.exit_code == 0, result.output
    return result


def subjects(server: SmtpServer) -> list[str]:
    return [str(message_from_bytes(m.data, policy=email_policy)["subject"])
            for m in server.messages()]


def campaigns(run) -> dict[str, dict]:  # noqa: ANN001
    result = run("campaign", "ls", "--json")
    assert result.exit_code == 0, result.output
    return {row["campaign"]: row for row in json.loads(result.stdout)}


# --- the schedule: croniter over wall times, zoneinfo for the instant ---------------------


def test_a_daily_time_in_the_skipped_and_the_repeated_hour_happens_once_a_day():
    """Brussels, 2026: summer time from 29 March 02:00 (to 03:00), winter time from 25
    October 03:00 (back to 02:00). 02:30 does not exist on 29 March: it is due at 03:30
    summer time; it happens twice on 25 October: due the first time only."""
    schedule = Schedule.parse("30 2 * * *", "Europe/Brussels")
    walls = [datetime(2026, 3, 28, 2, 30)]
    for _ in range(3):
        walls.append(schedule.after(walls[-1]))
    assert [schedule.due(w) for w in walls] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC), datetime(2026, 3, 31, 0, 30, tzinfo=UTC)]
    assert schedule.due(walls[1]).astimezone(BRUSSELS).hour == 3  # 03:30 summer time
    # Made at 03:20 summer time that night, the 02:30 still to come is the first.
    assert schedule.first_after(datetime(2026, 3, 29, 1, 20, tzinfo=UTC)) == walls[1]
    autumn = schedule.after(datetime(2026, 10, 24, 3, 0))
    assert schedule.due(autumn) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    # At 02:45 winter time (after the second 02:30) the next one is the next day's.
    assert schedule.first_after(datetime(2026, 10, 25, 1, 45, tzinfo=UTC)) == \
        datetime(2026, 10, 26, 2, 30)


def test_nine_in_the_morning_stays_nine_across_both_changes():
    schedule = Schedule.parse("0 9 * * *", "Europe/Brussels")
    dues = [schedule.due(datetime(2026, 3, d, 9)) for d in (28, 29, 30)] + \
        [schedule.due(datetime(2026, 10, d, 9)) for d in (24, 25, 26)]
    assert [d.hour for d in dues] == [8, 7, 7, 7, 8, 8]  # UTC
    assert {d.astimezone(BRUSSELS).hour for d in dues} == {9}


@pytest.mark.parametrize(("cron", "zone", "said"), [
    ("0 9 * * MON *", "Europe/Brussels", "five fields"),
    ("61 9 * * *", "Europe/Brussels", "cannot be used"),
    ("0 9 * * *", "Europe/Gent", "Unknown time zone"),
])
def test_a_bad_schedule_is_one_clear_line(run, project, cron, zone, said):
    result = run("campaign", "create", "weekly", "--list", "nieuwsbrief", "--template",
                 TEMPLATE, "--subject", "Hallo", "--every", cron, "--tz", zone)
    assert result.exit_code == 1
    assert said in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert "weekly" not in campaigns(run)  # nothing half-written


def test_tz_without_every_and_a_taken_name_are_refused(run, project):
    people(run, project, 1)
    result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                 TEMPLATE, "--subject", "Hallo", "--tz", "UTC")
    assert result.exit_code == 1 and "--tz is the time zone of --every" in result.stderr
    recurring(run, "weekly", "0 9 * * MON")
    again = run("campaign", "create", "weekly", "--list", "nieuwsbrief", "--template",
                TEMPLATE, "--subject", "Hallo")
    assert again.exit_code == 1 and "exists already" in again.stderr
    bad = run("campaign", "create", "monthly", "--list", "nieuwsbrief", "--template",
              TEMPLATE, "--subject", "{{ campaign.date | date('%V') }} {{ nope }}",
              "--every", "0 9 1 * *")
    assert bad.exit_code == 1 and "nope" in bad.stderr  # the template check, as for create
    assert "monthly" not in campaigns(run)


# --- months of simulated time --------------------------------------------------------------


def _instants(first: date, last: date) -> list[datetime]:
    """When the simulated `mailer run`s happen: a few times a day (local), and every ten
    minutes through the two nights the clocks change."""
    moments: set[datetime] = set()
    day = first
    while day <= last:
        for hour, minute in ((0, 5), (2, 40), (3, 40), (8, 50), (9, 10)):
            moments.add(datetime(day.year, day.month, day.day, hour, minute,
                                 tzinfo=BRUSSELS).astimezone(UTC))
        day += timedelta(days=1)
    for night in (datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 10, 24, 22, tzinfo=UTC)):
        moments.update(night + timedelta(minutes=10 * i) for i in range(40))
    return sorted(moments)


def test_eight_months_of_occurrences_each_once_on_time_through_both_dst_changes(
        run, project, monkeypatch):
    people(run, project, 1)
    at(monkeypatch, "2026-03-01T00:00:00+01:00")
    recurring(run, "nacht", "30 2 * * *")
    recurring(run, "ochtend", "0 9 * * *")
    recurring(run, "weekly", "0 9 * * MON")
    monkeypatch.delenv(TEST_CLOCK)
    instance = Project.load()
    made: dict[str, datetime] = {}
    first, last = date(2026, 3, 1), date(2026, 11, 1)
    for now in _instants(first, last):
        for occurrence in materialize(instance, now):
            assert occurrence.campaign and not occurrence.late, occurrence.describe()
            assert occurrence.campaign not in made, f"{occurrence.campaign} made twice"
            assert occurrence.due_at <= now < occurrence.due_at + timedelta(hours=1)
            made[occurrence.campaign] = occurrence.due_at
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    assert {n for n in made if n.startswith("nacht-")} == {f"nacht-{d}" for d in days}
    assert {n for n in made if n.startswith("ochtend-")} == {f"ochtend-{d}" for d in days}
    assert {n for n in made if n.startswith("weekly-")} == {
        f"weekly-{d}" for d in days if d.weekday() == 0}
    for name, due in made.items():
        local = due.astimezone(BRUSSELS)
        if name.startswith("nacht-"):  # 02:30, and 03:30 on the night 02:00-03:00 is skipped
            assert (local.hour, local.minute) == ((3, 30) if name == "nacht-2026-03-29"
                                                  else (2, 30)), name
        else:
            assert (local.hour, local.minute) == (9, 0), name
    assert made["nacht-2026-10-25"] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert made["ochtend-2026-03-29"] == datetime(2026, 3, 29, 7, tzinfo=UTC)
    assert made["ochtend-2026-10-25"] == datetime(2026, 10, 25, 8, tzinfo=UTC)
    # Every one of them is a scheduled campaign at its time, for the start rules.
    shown = campaigns(run)
    assert shown["nacht-2026-03-29"]["state"] == "scheduled"
    assert shown["nacht-2026-03-29"]["scheduled_at"].startswith("2026-03-29T01:30")
    assert shown["weekly"]["scheduled_at"] == "2026-11-02 09:00 Europe/Brussels"


# --- end to end: mailer run, the real SMTP server ----------------------------------------


def test_mailer_run_sends_each_weekly_occurrence_once_with_its_week(run, project, smtp,
                                                                    monkeypatch):
    configure(monkeypatch, smtp)
    people(run, project, 3)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    created = recurring(run, "weekly", "0 9 * * MON", "--tz", "Europe/Brussels")
    assert "2026-12-07 09:00 Europe/Brussels" in created.stderr
    assert "weekly-2026-12-07" in created.stderr
    shown = run("campaign", "show", "weekly", "--json")
    assert json.loads(shown.stdout)["next"] == "2026-12-07 09:00 Europe/Brussels"

    at(monkeypatch, "2026-12-07T07:59:00+00:00")  # 08:59 in Brussels: not yet
    early = run("run")
    assert early.exit_code == 0 and smtp.messages() == [], early.output
    at(monkeypatch, "2026-12-07T08:00:20+00:00")
    first = run("run")
    assert first.exit_code == 0, first.output
    assert "weekly-2026-12-07: started" in first.stderr
    assert sorted(smtp.recipients()) == ["p0@example.be", "p1@example.be", "p2@example.be"]
    assert set(subjects(smtp)) == {"Week 50"}
    for _ in range(2):  # the same minute again, and the next: nothing more
        assert run("run").exit_code == 0
        at(monkeypatch, "2026-12-07T08:01:20+00:00")
    assert len(smtp.messages()) == 3

    at(monkeypatch, "2026-12-14T08:00:40+00:00")
    assert run("run").exit_code == 0
    assert sorted(subjects(smtp)) == ["Week 50"] * 3 + ["Week 51"] * 3
    listed = campaigns(run)
    assert listed["weekly-2026-12-14"]["state"] == "sent"
    assert listed["weekly"]["scheduled_at"] == "2026-12-21 09:00 Europe/Brussels"


@pytest.mark.parametrize("policy", ["send-late", "skip"])
def test_missed_occurrences_are_sent_once_late_or_skipped_with_a_warning(
        run, project, smtp, monkeypatch, policy):
    configure(monkeypatch, smtp, missed=policy)
    people(run, project, 2)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    recurring(run, "weekly", "0 9 * * MON")
    at(monkeypatch, "2026-12-23T10:00:00+00:00")  # down for three Mondays' worth
    result = run("run")
    assert result.exit_code == 0, result.output
    out = result.stderr
    assert out.count("Warning: weekly") == 3, out
    assert "2026-12-07 09:00 Europe/Brussels is skipped" in out
    assert "2026-12-14 09:00 Europe/Brussels is skipped" in out
    if policy == "send-late":
        assert "2026-12-21 09:00 Europe/Brussels was missed" in out and "2 d 2 h late" in out
        assert set(subjects(smtp)) == {"Week 52"} and len(smtp.messages()) == 2
    else:
        assert 'missed = "skip"' in out and smtp.messages() == []
    assert run("run").exit_code == 0  # again: nothing more, no second warning
    assert len(smtp.messages()) == (2 if policy == "send-late" else 0)
    at(monkeypatch, "2026-12-28T08:00:05+00:00")  # the next one is on time
    on_time = run("run")
    assert "Warning" not in on_time.stderr
    assert subjects(smtp)[-2:] == ["Week 53"] * 2
    shown = json.loads(run("campaign", "show", "weekly", "--json").stdout)
    assert [o["outcome"] for o in shown["occurrences"]] == (
        ["created", "created", "skipped", "skipped"] if policy == "send-late"
        else ["created", "skipped", "skipped", "skipped"])


def test_an_occurrence_is_made_once_by_overlapping_runs(run, project, monkeypatch, db_url):
    """The key (recurring campaign, wall time): two runs that both read the occurrence as
    due make one campaign; one that acts on what it read before the other committed
    hits the key and steps over it."""
    people(run, project, 1)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    recurring(run, "weekly", "0 9 * * MON")
    monkeypatch.delenv(TEST_CLOCK)
    instance = Project.load()
    engine = instance.engine
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT next_local, next_at FROM recurring_campaign")
                              ).one()
    now = datetime(2026, 12, 7, 8, 0, 30, tzinfo=UTC)
    assert [o.campaign for o in materialize(instance, now)] == ["weekly-2026-12-07"]
    with engine.begin() as conn:  # the stale view of a run that read before that commit
        conn.execute(sa.text("UPDATE recurring_campaign SET next_local = :l, next_at = :a"),
                     {"l": before.next_local, "a": before.next_at})
    assert materialize(instance, now) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT next_local FROM recurring_campaign")
                            ).scalar_one() == "2026-12-14T09:00"

    # And racing for real: threads materializing the same months at the same instants.
    errors: list[BaseException] = []
    start = datetime(2026, 12, 7, 8, tzinfo=UTC)
    instants = [start + timedelta(days=7 * i, minutes=1) for i in range(1, 9)]

    def race() -> None:
        try:
            mine = Project.load()
            for when in instants:
                materialize(mine, when)
            mine.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT slug FROM campaign ORDER BY slug")).scalars().all()
    assert names == [f"weekly-{date(2026, 12, 7) + timedelta(days=7 * i)}" for i in range(9)]
    instance.close()


def test_two_mailer_runs_at_once_send_an_occurrence_once(run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    people(run, project, 2)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    recurring(run, "weekly", "0 9 * * MON")
    now = {TEST_CLOCK: "2026-12-07T08:00:10+00:00"}
    procs = [mailer("run", **now) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")
    at(monkeypatch, now[TEST_CLOCK])
    assert run("run").exit_code == 0  # whatever a busy run left
    assert sorted(smtp.recipients()) == ["p0@example.be", "p1@example.be"]


def test_cancel_pause_and_resume_act_on_future_occurrences(run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    people(run, project, 1)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    recurring(run, "weekly", "0 9 * * MON")
    paused = run("campaign", "pause", "weekly")
    assert paused.exit_code == 0 and "paused" in paused.stderr
    assert campaigns(run)["weekly"]["state"] == "recurring, paused"
    at(monkeypatch, "2026-12-07T08:00:10+00:00")
    assert run("run").exit_code == 0 and smtp.messages() == []
    at(monkeypatch, "2026-12-08T12:00:00+00:00")
    resumed = run("campaign", "resume", "weekly")  # what passed while paused is not sent
    assert "2026-12-14 09:00 Europe/Brussels" in resumed.stderr
    assert run("run").exit_code == 0 and smtp.messages() == []
    at(monkeypatch, "2026-12-14T08:00:10+00:00")
    assert run("run").exit_code == 0 and len(smtp.messages()) == 1
    cancelled = run("campaign", "cancel", "weekly")
    assert cancelled.exit_code == 0 and "no occurrence is made any more" in cancelled.stderr
    shown = run("campaign", "show", "weekly")
    assert "next occurrence: none (recurring, cancelled)" in shown.stderr
    at(monkeypatch, "2027-02-01T08:00:10+00:00")
    assert run("run").exit_code == 0 and len(smtp.messages()) == 1
    assert campaigns(run)["weekly-2026-12-14"]["state"] == "sent"  # made ones stay
    again = run("campaign", "cancel", "weekly")
    assert again.exit_code == 1 and "cancelled already" in again.stderr


def test_campaign_date_is_the_day_a_campaign_is_scheduled_for(run, project, smtp,
                                                               monkeypatch):
    """`campaign.date` exists for every campaign: the date it is scheduled for (or
    starts), in the operator's zone; for an occurrence, the occurrence's date."""
    configure(monkeypatch, smtp)
    people(run, project, 1)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    result = run("campaign", "create", "kerst", "--list", "nieuwsbrief", "--template",
                 TEMPLATE, "--subject", "Nieuws van {{ campaign.date | date('%d-%m-%Y') }}")
    assert result.exit_code == 0, result.output
    assert run("campaign", "schedule", "kerst", "--at", "2026-12-24 08:00").exit_code == 0
    at(monkeypatch, "2026-12-24T07:00:30+00:00")
    assert run("run").exit_code == 0
    assert subjects(smtp) == ["Nieuws van 24-12-2026"]
    wrong = run("campaign", "create", "fout", "--list", "nieuwsbrief", "--template",
                TEMPLATE, "--subject", "{{ campaign.title | date('%V') }}")
    assert wrong.exit_code == 1 and "is not a date" in wrong.stderr


def test_an_occurrence_that_cannot_be_made_is_said_and_the_others_go_out(
        run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp)
    people(run, project, 1)
    at(monkeypatch, "2026-12-02T12:00:00+00:00")
    recurring(run, "weekly", "0 9 * * MON")
    recurring(run, "kapot", "0 9 * * MON", subject="Kapot")
    instance = Project.load()
    with instance.engine.begin() as conn:  # a definition the engine can no longer use
        conn.execute(sa.update(RecurringCampaign).where(RecurringCampaign.slug == "kapot")
                     .values(list_ids=[]))
    instance.close()
    at(monkeypatch, "2026-12-07T08:00:10+00:00")
    for _ in range(2):  # said at every run, never recorded as done
        result = run("run")
        assert result.exit_code == 0, result.output
        assert "Warning: kapot: the occurrence of 2026-12-07 09:00 Europe/Brussels cannot " \
               "be made now (A campaign needs at least one list" in result.stderr
    assert subjects(smtp) == ["Week 50"]
    assert json.loads(run("campaign", "show", "kapot", "--json").stdout)["occurrences"] == []

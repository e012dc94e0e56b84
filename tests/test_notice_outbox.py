"""Confirmation, welcome and export mails go through the one outbox (issue 15, point 1):
the send-time checks of their kind, retry with the delivery backoff, never twice after a
kill mid-send, a notice asked for again; and `mailer run` sends them before a big
campaign's messages (point 5). Against the test SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer.audience.selfservice import sign_up
from mailer.audience.subscribers import unsubscribe_member
from mailer.dbtypes import Timestamp
from mailer.delivery.notices import queue
from mailer.delivery.sender import worker_count
from mailer.models import MailingList, NoticeKind, Subscriber
from mailer.project import Project
from tests import test_delivery
from tests.support.notices import notice_rows, set_notices
from tests.support.waiting import wait_for
from tests.test_delivery import (
    alive,
    configure,
    create,
    kill_mid_send,
    mailer,
    outbox_states,
    people,
    run_out,
)

smtp, database = test_delivery.smtp, test_delivery.database  # the fixtures


def notice_states(engine: sa.Engine) -> Counter[str]:
    return Counter(state for (state,) in notice_rows(engine, "state"))


def add(run, email: str, *extra: str) -> None:  # noqa: ANN001
    result = run("subscribers", "add", email, "--list", "nieuwsbrief", "--consent", "test",
                 *extra)
    assert result.exit_code == 0, result.output


def queue_for(engine: sa.Engine, kind: str, *emails: str) -> None:
    """Queue a `kind` notice of nieuwsbrief for these people, as the web app does."""
    with Session(engine) as session:
        ml = session.exec(select(MailingList).where(MailingList.slug == "nieuwsbrief")).one()
        ids = [session.exec(select(Subscriber.id).where(Subscriber.email == e)).one()
               for e in emails]
        queue(session.connection(), kind, ml.id, ids, again=True)
        session.commit()


def by_address(engine: sa.Engine) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(address, kind) -> (state, last reply) of every notice."""
    with engine.connect() as conn:
        from tests.support.notices import NOTICE

        return {(r.email, r.kind): (r.state, r.last_reply) for r in conn.execute(sa.text(
            f"SELECT s.email, n.kind, n.state, n.last_reply FROM {NOTICE} n "
            "JOIN subscriber s ON s.id = n.subscriber_id"))}


def test_each_kind_of_notice_is_checked_by_its_own_rule_when_it_goes(
        run, project, smtp, monkeypatch, database):
    """confirm: to a member not confirmed; welcome: to a confirmed one; neither to a
    suppressed address. export: whatever the memberships and the suppression list say,
    with the data attached. None of them to a blocklisted person."""
    configure(monkeypatch, smtp)
    monkeypatch.setenv("MAILER_PUBLIC_URL", "https://nieuws.example.be")
    for email in ("pending@example.be", "confirmed-since@example.be", "supp@example.be"):
        add(run, email)
    for email in ("member@example.be", "left@example.be", "gone@example.be",
                  "blocked@example.be"):
        add(run, email, "--confirmed")
    queue_for(database, NoticeKind.CONFIRM, "pending@example.be", "confirmed-since@example.be",
              "supp@example.be")
    queue_for(database, NoticeKind.WELCOME, "member@example.be", "left@example.be")
    queue_for(database, NoticeKind.EXPORT, "gone@example.be", "blocked@example.be")
    # what changed between the queueing and the send
    assert run("subscribers", "add", "confirmed-since@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    assert run("suppression", "add", "supp@example.be", "--reason", "manual").exit_code == 0
    for email in ("left@example.be", "gone@example.be"):
        assert run("subscribers", "remove", email, "--list", "nieuwsbrief").exit_code == 0
    assert run("suppression", "add", "gone@example.be", "--reason", "manual").exit_code == 0
    assert run("subscribers", "edit", "blocked@example.be", "--status",
               "blocklisted").exit_code == 0

    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notices"] == {
        "sent": 3, "deferred": 0, "failed": 0, "skipped": 4, "unknown": 0}
    assert sorted(r for m in smtp.messages() for r in m.recipients) == [
        "gone@example.be", "member@example.be", "pending@example.be"]
    assert by_address(database) == {
        ("pending@example.be", "confirm"): ("sent", "250 OK"),
        ("confirmed-since@example.be", "confirm"): ("skipped", "confirmed meanwhile"),
        ("supp@example.be", "confirm"): ("skipped", "the address is on the suppression list"),
        ("member@example.be", "welcome"): ("sent", "250 OK"),
        ("left@example.be", "welcome"): ("skipped", "no longer subscribed (unsubscribed)"),
        ("gone@example.be", "export"): ("sent", "250 OK"),
        ("blocked@example.be", "export"): ("skipped", "the subscriber is blocklisted"),
    }
    mails = {m.recipients[0]: message_from_bytes(m.data, policy=policy.default)
             for m in smtp.messages()}
    assert "https://nieuws.example.be/c/" in mails["pending@example.be"].get_body(
        ("html",)).get_content()
    [attachment] = mails["gone@example.be"].iter_attachments()
    document = json.loads(attachment.get_content())
    assert document["subscriber"]["email"] == "gone@example.be"
    assert document["suppressed"]["reason"] == "manual"
    assert {n["kind"] for n in document["notices"]} == {"export"}
    # the engine's own campaigns are not campaigns a person made
    assert json.loads(run("campaign", "ls", "--json").stdout) == []


def test_a_deferred_notice_is_retried_with_the_delivery_backoff(run, project, smtp,
                                                                monkeypatch, database):
    configure(monkeypatch, smtp, retry_after=60, max_attempts=3)
    add(run, "an@example.be")
    queue_for(database, NoticeKind.CONFIRM, "an@example.be")
    smtp.reply_to_data(451, "4.3.0 Try again later", times=1)
    before = datetime.now(UTC)
    assert json.loads(run("run", "--json").stdout)["notices"]["deferred"] == 1
    [(state, attempts, retry_at)] = notice_rows(database, "state, attempts, next_attempt_at")
    assert (state, attempts) == ("deferred", 1)
    retry_at = Timestamp().process_result_value(retry_at, database.dialect)
    assert retry_at >= before + timedelta(seconds=60)  # retry_after, not at once
    assert json.loads(run("run", "--json").stdout)["notices"] == {
        "sent": 0, "deferred": 0, "failed": 0, "skipped": 0, "unknown": 0}  # not due yet
    set_notices(database, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 1
    assert notice_rows(database, "state, attempts") == [("sent", 2)]
    assert [m.recipients for m in smtp.messages()] == [("an@example.be",)]
    # deferred every time: failed after max_attempts, within one run (retry_after 0)
    monkeypatch.setenv("MAILER_DELIVERY__RETRY_AFTER", "0")
    add(run, "bo@example.be")
    queue_for(database, NoticeKind.CONFIRM, "bo@example.be")
    smtp.reply_to_data(451, "4.3.0 Try again later")
    assert json.loads(run("run", "--json").stdout)["notices"]["failed"] == 1
    assert by_address(database)[("bo@example.be", "confirm")] == (
        "failed", "451 4.3.0 Try again later")


def test_a_notice_asked_for_again_goes_again_but_never_while_on_its_way(
        run, project, smtp, monkeypatch, database):
    """One row per person and notice campaign: a second sign-up after an unsubscribe
    queues the sent confirmation again (the same row); a sign-up while it is still queued
    adds nothing; an import with --send-confirmation asks nobody twice."""
    configure(monkeypatch, smtp)
    app = Project.load()
    with Session(app.engine, expire_on_commit=False) as session:
        ml = session.exec(select(MailingList)).one()
        for _ in range(2):
            sign_up(session, app.hash_key, email="twice@example.be", mailing_list=ml,
                    consent="test")
        session.commit()
    assert notice_rows(database, "kind, state") == [("confirm", "queued")]
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 1
    [(row_id,)] = notice_rows(database, "id")
    csv = project / "again.csv"
    csv.write_text("email\ntwice@example.be\n")
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--send-confirmation")
    assert result.exit_code == 0 and "asked before, not again" in result.stderr
    with Session(app.engine, expire_on_commit=False) as session:
        person = session.exec(select(Subscriber).where(
            Subscriber.email == "twice@example.be")).one()
        unsubscribe_member(session, person.id, ml.id, source="test")
        sign_up(session, app.hash_key, email="twice@example.be", mailing_list=ml,
                consent="test")
        session.commit()
    assert notice_rows(database, "id, state") == [(row_id, "queued")]
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 1
    assert [m.recipients for m in smtp.messages()] == [("twice@example.be",)] * 2
    # "sending" or "unknown" (in flight, or when a sender died): left as it is
    set_notices(database, state="unknown")
    with Session(app.engine, expire_on_commit=False) as session:
        sign_up(session, app.hash_key, email="twice@example.be", mailing_list=ml,
                consent="test")
        session.commit()
    assert notice_rows(database, "state") == [("unknown",)]
    app.close()


def test_sigkill_mid_send_never_sends_a_notice_twice(run, project, smtp, monkeypatch,
                                                     database):
    """Kills -9 of `mailer run` while confirmation mails are in flight, at random points;
    after each, the next run goes on. Every notice ends sent (received exactly once) or
    unknown (at most once): exactly those a kill left "sending" (at 20 a second, at most
    one a connection: `sender.worker_count`)."""
    connections, kills = 4, 4
    configure(monkeypatch, smtp, rate=20, burst=20, connections=connections,
              lease_seconds=1)  # PostgreSQL: a killed run's claims hold this long
    addresses = [f"n{i}@example.be" for i in range(200)]
    csv = project / "pending.csv"
    csv.write_text("email\n" + "".join(f"{a}\n" for a in addresses))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "ledenlijst 2026", "--send-confirmation")
    assert result.exit_code == 0, result.output
    rng = random.Random(20261202)
    in_flight: list[int] = []
    counted: set[int] = set()
    for kill in range(1, kills + 1):
        kill_mid_send(smtp, rng, kill)
        left = len(test_delivery.new_in_flight(database, counted))
        assert 1 <= left <= worker_count(connections, 20) == connections, \
            f"kill {kill}: {left} notices were in flight"
        in_flight.append(left)
    test_delivery.wait_for_leases(database)  # the last kill's claims free
    out, _ = run_out("run", "--json", "--max-seconds", "300", MAILER_DELIVERY__RATE="500",
                     MAILER_DELIVERY__BURST="0")
    assert json.loads(out)["notices"]["unknown"] == 0  # recovery is not a send
    got = Counter(r for m in smtp.messages() for r in m.recipients)
    assert max(got.values()) == 1, "someone got the confirmation twice"
    final = dict(notice_rows(database, "(SELECT email FROM subscriber WHERE id = "
                                       "n.subscriber_id), state"))
    unknown = [a for a, s in final.items() if s == "unknown"]
    assert Counter(final.values())["sent"] + len(unknown) == len(addresses)
    assert all(got[a] == 1 for a, s in final.items() if s == "sent")
    assert len(unknown) == sum(in_flight)


def test_a_notice_queued_during_a_big_campaign_goes_before_the_campaign_ends(
        run, project, smtp, monkeypatch, database):
    """A campaign of 300 at 5 a second (a minute) through one connection: a sign-up's
    confirmation mail queued once the campaign is under way arrives while most of the
    campaign still waits, not after it (the sender puts due notices first)."""
    configure(monkeypatch, smtp, rate=5, burst=5, connections=1)
    people(run, project, 300)
    create(run)
    assert run("campaign", "schedule", "dec", "--at", "2020-01-01 09:00",
               "--yes").exit_code == 0
    sender = mailer("run", "--max-seconds", "600")
    try:
        wait_for(lambda: alive(sender) and len(smtp.messages()) >= 5,
                 "the campaign under way", state=lambda: f"{len(smtp.messages())} arrived")
        app = Project.load()
        with Session(app.engine) as session:
            ml = session.exec(select(MailingList)).one()
            sign_up(session, app.hash_key, email="new@example.be", mailing_list=ml,
                    consent="test")
            session.commit()
        app.close()
        wait_for(lambda: alive(sender) and any(
            m.recipients == ("new@example.be",) for m in smtp.messages()),
            "the confirmation mail", state=lambda: f"{len(smtp.messages())} arrived, "
            f"{notice_states(database)}")
        assert outbox_states(database)["queued"] > 200  # the campaign is far from done
    finally:
        sender.terminate()  # SIGTERM: stops after the message in flight
        sender.communicate(timeout=120)
    assert notice_states(database) == {"sent": 1}
    got = Counter(r for m in smtp.messages() for r in m.recipients)
    assert set(got.values()) == {1}


def test_the_migration_moves_notices_into_the_outbox(run, project, db_url):
    """The migration on a database with notices: each (kind, list) a notice campaign, the latest
    notice per person and kind a delivery; one left "sending" is "unknown"."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from mailer.db import _alembic_config, make_engine

    add(run, "an@example.be")
    add(run, "bo@example.be", "--confirmed")
    engine = make_engine(db_url)
    config = _alembic_config(engine)
    [ours] = [r for r in ScriptDirectory.from_config(config).walk_revisions()
              if (r.doc or "").startswith("notices into the one outbox")]
    before = ours.down_revision
    command.downgrade(config, before)
    notice = sa.table("notice", sa.column("kind"), sa.column("subscriber_id"),
                      sa.column("list_id"), sa.column("state"), sa.column("attempts"),
                      sa.column("queued_at", Timestamp()), sa.column("sent_at", Timestamp()),
                      sa.column("next_attempt_at", Timestamp()), sa.column("last_reply"))
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT email, id FROM subscriber")).all())
        list_id = conn.execute(sa.text("SELECT id FROM mailing_list")).scalar_one()
        rows = [("confirm", "an@example.be", "sent", now - timedelta(days=2), now),
                ("confirm", "an@example.be", "sending", now - timedelta(days=1), None),
                ("welcome", "bo@example.be", "deferred", now, None)]
        conn.execute(notice.insert(), [
            {"kind": k, "subscriber_id": ids[e], "list_id": list_id, "state": s,
             "attempts": 1, "queued_at": q, "sent_at": t, "next_attempt_at": now,
             "last_reply": "x"} for k, e, s, q, t in rows])
    command.upgrade(config, "head")
    with engine.connect() as conn:
        assert "notice" not in sa.inspect(conn).get_table_names()
        slugs = sorted(conn.execute(sa.text(
            "SELECT slug, kind, state FROM campaign")).all())
    assert slugs == [(f"notice:confirm:{list_id}", "notice", "sending"),
                     (f"notice:welcome:{list_id}", "notice", "sending")]
    assert sorted(notice_rows(engine, "kind, state")) == [("confirm", "unknown"),
                                                          ("welcome", "deferred")]
    command.downgrade(config, before)  # and back
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT kind, state FROM notice")).all()) == [
            ("confirm", "unknown"), ("welcome", "deferred")]
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar_one() == 0
    command.upgrade(config, "head")
    engine.dispose()


def test_notices_pass_the_identity_check_a_campaign_does(run, project, smtp, monkeypatch,
                                                         database):
    """A sending identity a campaign's send would refuse (here: unsigned mail whose
    bounces go to another domain than the From's, so DMARC fails) stops the notices too:
    one line with the fix, exit 1, nothing sent, the mail still queued."""
    configure(monkeypatch, smtp)
    add(run, "an@example.be")
    queue_for(database, NoticeKind.CONFIRM, "an@example.be")
    monkeypatch.setenv("MAILER_SENDING__BOUNCE_DOMAIN", "bounce.other.example")
    result = run("run")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert "neither DKIM nor SPF is aligned" in line
    assert smtp.messages() == [] and notice_rows(database, "state") == [("queued",)]
    monkeypatch.delenv("MAILER_SENDING__BOUNCE_DOMAIN")
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 1

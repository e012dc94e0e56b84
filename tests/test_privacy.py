"""Privacy: the inventory covers the whole schema; export holds everything about a person;
erasure leaves no byte of them in the database (SQLite file and WAL, PostgreSQL rows), also
while a campaign is sending."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailer.db import make_engine
from mailer.privacy.inventory import INVENTORY
from tests.test_feedback import dsn, people, process, returns, send

ADDRESS = "zoe.quixotic-marker@example.org"
NAME = "Quixotemarker"
TEMPLATE = "templates/newsletter.html.j2"


def test_every_table_and_column_is_in_the_inventory(db_url):
    """A table or column added later without telling export and erase about it fails."""
    engine = make_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        live = {t: {c["name"] for c in inspector.get_columns(t)}
                for t in inspector.get_table_names()}
    finally:
        engine.dispose()
    missing = {t: sorted(cols - set(INVENTORY.get(t, {}))) for t, cols in live.items()}
    assert {t: c for t, c in missing.items() if c} == {}, (
        "personal data unknown to mailer/privacy/inventory.py (and so to export and erase)")
    assert set(INVENTORY) <= set(live)


def _person(run, project: Path) -> None:  # noqa: ANN001
    """A person with something in every table that can hold them."""
    csv = project / "zoe.csv"
    csv.write_text(f"email,first_name,last_name,Gemeente\n{ADDRESS},Zoe,{NAME},"
                   f"{NAME}dorp\n")
    assert run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
               "form 2026", "--confirmed").exit_code == 0


def _fill(db_url: str) -> None:
    """Traces a web sign-up and a bounce leave: IP, user agent, a reply quoting the address."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        sid = conn.execute(sa.text("SELECT id FROM subscriber WHERE email = :e"),
                           {"e": ADDRESS}).scalar_one()
        conn.execute(sa.text(
            "UPDATE consent_event SET ip = '198.51.100.7', user_agent = :ua "
            "WHERE subscriber_id = :s"), {"ua": f"Mozilla/5.0 ({NAME})", "s": sid})
        conn.execute(sa.text("UPDATE delivery SET last_reply = :r WHERE subscriber_id = :s"),
                     {"r": f"550 5.1.1 <{ADDRESS}>: no such user", "s": sid})
    engine.dispose()


def test_export_holds_everything_and_is_readable_by_the_owner_only(run, project, db_url):
    _person(run, project)
    people(run, project, 2)
    sent = send(run, project)
    process(run, returns(project, dsn(sent[ADDRESS], ADDRESS, status="5.2.2",
                                      diagnostic="552 5.2.2 mailbox full")))
    result = run("gdpr", "export", ADDRESS, "--out", "zoe.json")
    assert result.exit_code == 0, result.output
    path = project / "zoe.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["schema"] == "mailer.export/1"
    assert doc["subscriber"]["email"] == ADDRESS
    assert doc["subscriber"]["attributes"] == {"Gemeente": f"{NAME}dorp"}
    assert [(m["list"], m["status"]) for m in doc["lists"]] == [("nieuwsbrief", "confirmed")]
    assert doc["consent"][0]["action"] == "import"
    assert [(d["campaign"], d["subject"], d["state"]) for d in doc["deliveries"]] == [
        ("dec", "Nieuws", "sent")]
    assert [(e["kind"], e["reason"]) for e in doc["feedback"]] == [("bounce", "mailboxfull")]
    assert doc["suppressed"] is None
    text = run("gdpr", "export", ADDRESS, "--format", "text", "--out", "-")
    assert text.exit_code == 0 and "Wat we over je bewaren" in text.output
    assert f"{NAME}dorp" in text.output
    audit = json.loads(run("audit", "ls", "--action", "gdpr", "--json").stdout)
    assert [a["action"] for a in audit] == ["gdpr.export", "gdpr.export"]
    assert ADDRESS not in json.dumps(audit) and NAME not in json.dumps(audit)


def _holds(db_url: str, project: Path, needles: list[str]) -> list[str]:
    """Where the needles still are: SQLite file and WAL bytes, or PostgreSQL rows."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        found = []
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                data = file.read_bytes()
                found += [f"{file.name}: {n}" for n in needles if n.encode() in data]
        return found
    engine = make_engine(db_url)
    found = []
    with engine.connect() as conn:
        for table in INVENTORY:
            rows = conn.execute(sa.text(f"SELECT t::text FROM {table} t")).scalars()
            found += [f"{table}: {n}" for row in rows for n in needles if n in row]
    engine.dispose()
    return found


def test_erasure_leaves_no_byte_of_the_person_anywhere(run, project, db_url):
    _person(run, project)
    people(run, project, 2)
    sent = send(run, project)
    process(run, returns(project, dsn(sent[ADDRESS], ADDRESS, status="5.2.2",
                                      diagnostic="552 5.2.2 mailbox full")))
    _fill(db_url)
    needles = [ADDRESS, NAME, "198.51.100.7"]
    assert _holds(db_url, project, needles), "the test must see the person before erasure"
    result = run("gdpr", "erase", ADDRESS, "--yes")
    assert result.exit_code == 0, result.output
    assert "Erased" in result.output
    assert _holds(db_url, project, needles) == []
    # What has no person in it stays: the campaign's counts.
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
    assert shown["counts"] == {"sent": 3}
    # The hash keeps them from being imported again by accident.
    assert run("suppression", "check", ADDRESS).exit_code == 0
    again = run("subscribers", "import", str(project / "zoe.csv"), "--list", "nieuwsbrief",
                "--consent", "old list", "--confirmed", "--json")
    assert json.loads(again.stdout)["added"] == 0
    assert run("subscribers", "show", ADDRESS).exit_code == 1
    audit = json.loads(run("audit", "ls", "--json").stdout)
    assert "gdpr.erase" in [a["action"] for a in audit] and ADDRESS not in json.dumps(audit)
    twice = run("gdpr", "erase", ADDRESS, "--yes")
    assert twice.exit_code == 0 and "Nothing is held" in twice.output


def test_erasure_while_a_campaign_is_sending_skips_the_person(run, project, monkeypatch):
    people(run, project, 6)
    _person(run, project)  # last in the outbox: six messages go before hers
    monkeypatch.setenv("MAILER_DELIVERY__RATE", "1")
    monkeypatch.setenv("MAILER_DELIVERY__BURST", "1")
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template", TEMPLATE,
               "--subject", "Nieuws").exit_code == 0
    sender = subprocess.Popen([sys.executable, "-m", "mailer", "campaign", "send", "dec",
                               "--yes", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy())

    def states() -> dict[str, str]:
        rows = json.loads(run("campaign", "deliveries", "dec", "--json").stdout or "[]")
        return {row["email"]: row["state"] for row in rows}

    deadline = time.monotonic() + 120
    while "sent" not in states().values():  # the send is under way …
        assert sender.poll() is None and time.monotonic() < deadline, sender.stderr.read()
        time.sleep(0.05)
    assert states()[ADDRESS] == "queued"  # … and her turn is still to come
    erased = run("gdpr", "erase", ADDRESS, "--yes")
    assert erased.exit_code == 0, erased.output
    out, errors = sender.communicate(timeout=120)
    assert sender.returncode == 0, errors
    outbox = [p.read_bytes() for p in (project / "outbox" / "new").iterdir()]
    assert len(outbox) == 6 and not any(ADDRESS.encode() in data for data in outbox)
    assert json.loads(out)["sent"] == 6
    rows = json.loads(run("campaign", "deliveries", "dec", "--json").stdout)
    assert [row["last_reply"] for row in rows if row["state"] == "skipped"] == [
        "the subscriber was erased"]


def _age(db_url: str, table: str, column: str, days: int, where: str = "1=1") -> None:
    """Move a table's timestamps back in time (the retention rules read them)."""
    from datetime import UTC, datetime, timedelta

    from mailer.dbtypes import stamp

    engine = make_engine(db_url)
    with engine.begin() as conn:
        then = stamp(datetime.now(UTC) - timedelta(days=days), conn.dialect)
        conn.execute(sa.text(f"UPDATE {table} SET {column} = :t WHERE {where}"), {"t": then})
    engine.dispose()


@pytest.mark.parametrize("windows", ["default", "one row per batch"])
def test_purge_applies_each_retention_period_and_dry_run_only_counts(run, project, db_url,
                                                                     windows, monkeypatch):
    if windows != "default":  # every rule then spans several windows and batches
        from mailer.privacy import retention
        monkeypatch.setattr(retention, "BATCH", 1)
        monkeypatch.setattr(retention, "WINDOW", 2)
    people(run, project, 3)  # confirmed: they stay
    for n in range(2):  # double opt-in, never confirmed
        assert run("subscribers", "add", f"pending{n}@example.org", "--list", "nieuwsbrief",
                   "--consent", "form").exit_code == 0
    sent = send(run, project)
    process(run, returns(project, dsn(sent["p0@example.org"], "p0@example.org",
                                      status="5.2.2", diagnostic="552 5.2.2 mailbox full")))
    _age(db_url, "subscriber", "created_at", 31, "email LIKE 'pending%'")
    _age(db_url, "subscription", "created_at", 31, "status = 'pending'")
    _age(db_url, "delivery", "queued_at", 800)
    _age(db_url, "feedback_event", "at", 91)
    _age(db_url, "audit_log", "at", 6 * 365, "action = 'subscribers.import'")
    dry = json.loads(run("gdpr", "purge", "--dry-run", "--json").stdout)
    assert dry["never_confirmed_people"] == 2 and dry["delivery_details"] == 3
    assert dry["return_texts"] == 1 and dry["audit_entries"] >= 1
    assert run("subscribers", "show", "pending0@example.org").exit_code == 0  # unchanged
    done = json.loads(run("gdpr", "purge", "--json").stdout)
    assert done["never_confirmed_people"] == 2
    assert done["delivery_details"] == 3 and done["return_texts"] == 1
    assert run("subscribers", "show", "pending0@example.org").exit_code == 1
    assert run("suppression", "check", "pending0@example.org").exit_code == 1  # not objected
    assert run("subscribers", "show", "p1@example.org").exit_code == 0
    rows = json.loads(run("campaign", "deliveries", "dec", "--json").stdout)
    assert len(rows) == 3 and {r["email"] for r in rows} == {"(erased)"}
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["counts"] == {
        "sent": 3}
    events = json.loads(run("subscribers", "show", "p0@example.org", "--json").stdout)
    assert [e["diagnostic"] for e in events["feedback"]] == [None]
    audit = [a["action"] for a in json.loads(run("audit", "ls", "--json").stdout)]
    assert "subscribers.import" not in audit and audit[0] == "gdpr.purge"
    # mailer run purges once a day: it just did (the purge above counts).
    result = run("run", "--json")
    assert json.loads(result.stdout)["purged"] == {}


def test_a_purge_beside_a_sending_campaign_leaves_the_lock_free_between_batches(
        run, project, db_url, monkeypatch):
    """While a campaign is sending, every batch is followed by a pause as long as it took
    (a sender waiting for the lock gets in); with none sending, no pause."""
    from mailer.privacy import retention
    from mailer.project import Project

    monkeypatch.setattr(retention, "BATCH", 4)
    monkeypatch.setattr(retention, "GENTLE", 4)  # one row a batch while sending
    people(run, project, 2)
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template", TEMPLATE,
               "--subject", "Nieuws").exit_code == 0
    assert run("campaign", "send", "dec", "--yes", "--max-seconds", "0.000001").exit_code == 0
    settings = Project.load().settings.privacy
    engine = make_engine(db_url)
    try:
        for rounds, state in enumerate(["sending", "cancelled"]):
            for n in range(3):  # double opt-in, never confirmed, signed up long ago
                assert run("subscribers", "add", f"late{rounds}{n}@example.org", "--list",
                           "nieuwsbrief", "--consent", "form").exit_code == 0
            _age(db_url, "subscriber", "created_at", 40, "email LIKE 'late%'")
            _age(db_url, "subscription", "created_at", 40, "status = 'pending'")
            shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
            assert shown["state"] == state
            purged = retention.purge(engine, settings, actor="test")
            assert purged.counts["never_confirmed_people"] == 3
            if state == "sending":  # three batches of one, each paused for as long
                assert purged.paused > 0 and purged.longest_batch <= purged.paused
                assert run("campaign", "cancel", "dec").exit_code == 0
            else:
                assert purged.paused == 0
    finally:
        engine.dispose()


def test_mailer_run_applies_retention_once_a_day(run, project, db_url):
    assert run("subscribers", "add", "late@example.org", "--list", "nieuwsbrief",
               "--consent", "form").exit_code == 0
    _age(db_url, "subscriber", "created_at", 40)
    _age(db_url, "subscription", "created_at", 40)
    first = json.loads(run("run", "--json").stdout)
    assert first["purged"]["never_confirmed_people"] == 1
    assert json.loads(run("run", "--json").stdout)["purged"] == {}


def test_the_breach_register_names_no_person(run, project):
    refused = run("incidents", "add", "--title", "Export of an@example.be sent to a colleague")
    assert refused.exit_code == 1 and "must not name a person" in refused.output
    added = run("incidents", "add", "--title", "Export sent to the wrong colleague",
                "--people", "1", "--facts", "One member's export mailed internally",
                "--remedy", "Deleted, confirmed in writing", "--occurred", "2026-11-30",
                "--json")
    assert added.exit_code == 0, added.output
    entry = json.loads(added.stdout)
    assert entry["number"] == 1 and entry["people"] == 1 and entry["reported_at"] is None
    listed = json.loads(run("incidents", "ls", "--json").stdout)
    assert [e["title"] for e in listed] == ["Export sent to the wrong colleague"]
    assert run("incidents", "show", "1").exit_code == 0
    missing = run("incidents", "show", "9")
    assert missing.exit_code == 1 and "No incident 9" in missing.output
    bad = run("incidents", "add", "--title", "x", "--occurred", "30-11-2026")
    assert bad.exit_code == 1 and "not a date" in bad.output


def test_consent_proof_per_list(run, project):
    assert run("subscribers", "add", "an@example.org", "--list", "nieuwsbrief",
               "--consent", "Ja, ik wil de nieuwsbrief (v2026-11)", "--confirmed").exit_code == 0
    shown = run("subscribers", "show", "an@example.org", "--consent")
    assert shown.exit_code == 0, shown.output
    assert "nieuwsbrief: confirmed" in shown.output
    assert 'agreed to: "Ja, ik wil de nieuwsbrief (v2026-11)"' in shown.output
    proof = json.loads(run("subscribers", "show", "an@example.org", "--consent",
                           "--json").stdout)
    assert proof["consent"][0]["events"][0]["consent"] == "Ja, ik wil de nieuwsbrief (v2026-11)"


def test_the_audit_trail_records_sends_list_changes_and_cancellations(run, project):
    people(run, project, 2)
    send(run, project, "dec")
    assert run("campaign", "create", "jan", "--list", "nieuwsbrief", "--template", TEMPLATE,
               "--subject", "Nieuws").exit_code == 0
    assert run("campaign", "cancel", "jan").exit_code == 0
    toml = project / "lists" / "nieuwsbrief.toml"
    toml.write_text(toml.read_text().replace('name = "Nieuwsbrief"', 'name = "Nieuws"'))
    assert run("lists", "sync").exit_code == 0
    trail = json.loads(run("audit", "ls", "--json").stdout)
    actions = [a["action"] for a in trail]
    assert actions[:3] == ["lists.sync", "campaign.cancel", "campaign.start"]
    start = trail[2]["detail"]
    assert start["slug"] == "dec" and start["queued"] == 2
    assert all(a["actor"] for a in trail)
    assert "@" not in json.dumps(trail)


def _trail(run, action: str) -> list[dict]:  # noqa: ANN001
    return json.loads(run("audit", "ls", "--action", action, "--json").stdout)


def test_config_and_key_changes_are_in_the_audit_trail_by_name_only(run, project):
    """An edit of mailer.toml, a rotated secret and a new DKIM key are each recorded by
    the next command that uses the database: what changed, never the value."""
    [first] = _trail(run, "config.change")  # the fixture's `lists sync`: as found
    assert first["detail"]["first"] is True and first["detail"]["changed"] == []
    run("lists", "ls")
    assert len(_trail(run, "config.change")) == 1  # nothing changed: nothing recorded
    toml = project / "mailer.toml"
    toml.write_text(toml.read_text().replace("\nrate = 10 ", "\nrate = 7 ", 1))
    secrets = project / "secrets.toml"
    old_key = secrets.read_text().split('secret_key = "')[1].split('"')[0]
    secrets.write_text(secrets.read_text().replace(
        old_key, "a-new-secret-key-rotated-by-hand-0123456789"))
    assert run("lists", "ls").exit_code == 0
    latest = _trail(run, "config.change")[0]
    assert latest["detail"]["changed"] == ["delivery.rate", "secrets.secret_key"]
    assert latest["detail"]["command"].endswith(" lists ls") and latest["actor"]
    made = run("dkim", "keygen", "--domain", "example.be", "--selector", "mail2026",
               "--algorithm", "ed25519", "--configure")
    assert made.exit_code == 0, made.output
    [keygen] = _trail(run, "dkim.keygen")
    assert keygen["detail"] == {"domain": "example.be", "selector": "mail2026",
                                "algorithm": "ed25519", "configured": True}
    key = "dkim/mail2026.example.be.ed25519.pem"
    assert _trail(run, "config.change")[0]["detail"]["changed"] == [
        f"key:{key}", "sending.dkim_keys", "sending.domain"]
    (project / key).write_bytes((project / key).read_bytes() + b"\n")  # replaced by hand
    run("lists", "ls")
    assert _trail(run, "config.change")[0]["detail"]["changed"] == [f"key:{key}"]
    trail = json.dumps(json.loads(run("audit", "ls", "--json").stdout))
    for secret in (old_key, "a-new-secret-key-rotated-by-hand-0123456789",
                   (project / key).read_text().split("\n")[1]):
        assert secret not in trail
    shown = run("audit", "ls")  # the table leaves the digests out
    assert "secrets.secret_key" in shown.output and "fingerprint" not in shown.output


def test_an_export_others_can_read_is_recorded_as_an_incident(run, project):
    _person(run, project)
    private = run("gdpr", "export", ADDRESS, "--out", "zoe.json")
    assert private.exit_code == 0 and "incident" not in private.output
    target = project / "zoe-copy.json"
    target.touch()
    target.chmod(0o644)  # what a shell's `> zoe-copy.json` makes with umask 022
    with target.open("w") as fh:
        done = subprocess.run([sys.executable, "-m", "mailer", "gdpr", "export", ADDRESS,
                               "--out", "-"], stdout=fh, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["subscriber"]["email"] == ADDRESS
    assert "can be read by others (mode 644)" in done.stderr
    assert "recorded as incident 1" in done.stderr
    [entry] = json.loads(run("incidents", "ls", "--json").stdout)
    assert entry["source"] == "engine" and entry["people"] == 1
    assert "standard output" in entry["facts"] and "644" in entry["facts"]
    assert ADDRESS not in json.dumps(entry) and "zoe" not in json.dumps(entry).lower()


def test_a_campaign_that_reaches_a_list_not_confirmed_is_an_incident(run, project, db_url):
    """A sending campaign gets another list, and its outbox a member of it, after the send
    was confirmed for one list (a fault, made here by hand in the database): when the
    campaign finishes, the register has it and the sender says so."""
    from mailer.models import Campaign
    from mailer.privacy.incidents import check_campaign_lists

    (project / "lists" / "bestuur.toml").write_text(
        'name = "Bestuur"\nlanguage = "nl"\noptin = "single"\nfrom_name = "Voorbeeld vzw"\n'
        'from_address = "bestuur@example.be"\npublic = false\n')
    assert run("lists", "sync").exit_code == 0
    people(run, project, 3)
    assert run("subscribers", "add", "p0@example.org", "--list", "bestuur", "--consent",
               "vergadering", "--confirmed").exit_code == 0
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template", TEMPLATE,
               "--subject", "Nieuws").exit_code == 0
    started = run("campaign", "send", "dec", "--yes", "--max-seconds", "0.000001")
    assert started.exit_code == 0, started.output
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            every = list(conn.execute(sa.text("SELECT id FROM mailing_list")).scalars())
            campaign = Campaign.__table__  # type: ignore[attr-defined]
            conn.execute(campaign.update().where(campaign.c.slug == "dec")
                         .values(list_ids=every))
            assert conn.execute(sa.text(
                "UPDATE delivery SET list_id = (SELECT id FROM mailing_list WHERE slug = "
                "'bestuur') WHERE state = 'queued' AND subscriber_id = (SELECT id FROM "
                "subscriber WHERE email = 'p0@example.org')")).rowcount == 1
        finished = run("campaign", "send", "dec", "--yes")
        assert finished.exit_code == 0, finished.output
        assert "dec is sent" in finished.output
        assert "went to 1 members of bestuur, not only of the confirmed nieuwsbrief" \
            in finished.output and "incident 1" in finished.output
        [entry] = json.loads(run("incidents", "ls", "--json").stdout)
        assert entry["source"] == "engine" and entry["people"] == 1
        assert "confirmed for nieuwsbrief" in entry["facts"] and "@" not in json.dumps(entry)
        assert check_campaign_lists(engine, "dec", actor="test") is None  # once only
    finally:
        engine.dispose()


def test_suppression_changes_name_who_made_them(run, project):
    import getpass

    assert run("suppression", "add", "boos@example.org", "--note", "asked by phone") \
        .exit_code == 0
    assert run("suppression", "remove", "boos@example.org", "--yes").exit_code == 0
    trail = _trail(run, "suppression")
    assert [(a["action"], a["actor"]) for a in trail] == [
        ("suppression.remove", getpass.getuser()), ("suppression.add", getpass.getuser())]
    assert "boos" not in json.dumps(trail)

"""Subscribers: add, show, edit, ls, remove; consent events; suppression cannot be bypassed."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from mailer.config import load_settings
from mailer.db import make_engine
from tests.support.notices import NOTICE


def show(run, address: str) -> dict:  # noqa: ANN001
    result = run("subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def add_events_list(project) -> None:  # noqa: ANN001
    (project / "lists" / "events.toml").write_text(
        'name = "Events"\nlanguage = "en"\noptin = "single"\nfrom_name = "Events"\n'
        'from_address = "events@example.be"\n')


def test_add_to_double_optin_is_pending_and_recorded(run, project):
    result = run("subscribers", "add", " An@Example.BE ", "--list", "nieuwsbrief",
                 "--first-name", "An", "--attr", "city=Gent", "--attr", "kids=2",
                 "--consent", "paper form, fair 2026-10")
    assert result.exit_code == 0, result.stderr
    data = show(run, "an@example.be")
    assert data["email"] == "an@example.be"
    assert data["attributes"] == {"city": "Gent", "kids": 2}
    assert data["lists"][0]["status"] == "pending"
    (event,) = data["consent"]
    assert (event["action"], event["list"], event["consent"], event["confirmed"]) == (
        "subscribe", "nieuwsbrief", "paper form, fair 2026-10", False)


def test_confirmed_flag_and_single_optin_give_confirmed(run, project):
    add_events_list(project)
    run("lists", "sync")
    run("subscribers", "add", "b@example.be", "--list", "nieuwsbrief", "--confirmed",
        "--consent", "confirmed on old site")
    run("subscribers", "add", "c@example.be", "--list", "events", "--consent", "v1")
    assert show(run, "b@example.be")["lists"][0]["status"] == "confirmed"
    assert show(run, "b@example.be")["consent"][0]["confirmed"] is True
    assert show(run, "c@example.be")["lists"][0]["status"] == "confirmed"


def test_add_needs_consent_and_a_valid_address(run, project):
    result = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief",
                 "--consent", "")
    assert result.exit_code == 1 and "consent" in result.stderr
    result = run("subscribers", "add", "a@@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 1 and "not a valid address" in result.stderr
    result = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1", "--first-name", "An\r\nBcc: x@example.be")
    assert result.exit_code == 1 and "line breaks" in result.stderr
    assert json.loads(run("subscribers", "ls", "--json").stdout) == []


def test_suppressed_and_unsubscribed_cannot_be_added(run, project):
    assert run("suppression", "add", "Gone@Example.be", "--reason", "complaint").exit_code == 0
    result = run("subscribers", "add", "gone@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 1 and "suppression list" in result.stderr
    run("subscribers", "add", "u@example.be", "--list", "nieuwsbrief", "--consent", "v1")
    run("subscribers", "remove", "u@example.be", "--list", "nieuwsbrief")
    result = run("subscribers", "add", "u@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1", "--confirmed")
    assert result.exit_code == 1 and "unsubscribed" in result.stderr
    data = show(run, "u@example.be")
    assert data["lists"][0]["status"] == "unsubscribed"
    assert [e["action"] for e in data["consent"]] == ["subscribe", "unsubscribe"]


def test_suppression_stores_no_address_in_clear(run, project):
    run("suppression", "add", "secret.person@example.be")
    assert run("suppression", "check", "SECRET.person@example.be").exit_code == 0
    assert run("suppression", "check", "other@example.be").exit_code == 1
    settings = load_settings()
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT email_hash, reason, note FROM suppression")).all()
    engine.dispose()
    assert len(rows) == 1 and "secret" not in "".join(map(str, rows[0]))
    assert len(rows[0][0]) == 64
    assert json.loads(run("suppression", "ls", "--json").stdout) == [
        {"reason": "manual", "count": 1}]
    assert run("suppression", "remove", "secret.person@example.be", "--yes").exit_code == 0
    assert run("suppression", "check", "secret.person@example.be").exit_code == 1


def test_edit_changes_fields_and_logs_a_preference_event(run, project):
    run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief", "--consent", "v1",
        "--attr", "old=1")
    result = run("subscribers", "edit", "a@example.be", "--first-name", "Ann",
                 "--language", "en", "--attr", "city=Gent", "--unset", "old")
    assert result.exit_code == 0, result.stderr
    data = show(run, "a@example.be")
    assert (data["first_name"], data["language"], data["attributes"]) == (
        "Ann", "en", {"city": "Gent"})
    event = data["consent"][-1]
    assert event["action"] == "preference"
    assert "first_name" in event["source"] and "Ann" not in event["source"]
    assert run("subscribers", "edit", "a@example.be", "--status", "blocklisted").exit_code == 0
    assert show(run, "a@example.be")["status"] == "blocklisted"
    result = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 1 and "blocklisted" in result.stderr


def test_ls_filters_and_json(run, project):
    add_events_list(project)
    run("lists", "sync")
    run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief", "--consent", "v1",
        "--first-name", "Anna")
    run("subscribers", "add", "b@example.be", "--list", "nieuwsbrief", "--consent", "v1",
        "--confirmed")
    run("subscribers", "add", "c@example.be", "--list", "events", "--consent", "v1")

    def emails(*args: str) -> list[str]:
        result = run("subscribers", "ls", *args, "--json")
        assert result.exit_code == 0, result.stderr
        return [r["email"] for r in json.loads(result.stdout)]

    assert emails() == ["a@example.be", "b@example.be", "c@example.be"]
    assert emails("--list", "nieuwsbrief") == ["a@example.be", "b@example.be"]
    assert emails("--list", "nieuwsbrief", "--status", "confirmed") == ["b@example.be"]
    assert emails("--list", "events", "--status", "confirmed") == ["c@example.be"]
    assert emails("--search", "ANNA") == ["a@example.be"]
    assert emails("--limit", "1") == ["a@example.be"]
    result = run("subscribers", "ls", "--status", "confirmed")
    assert result.exit_code == 1 and "--status needs --list" in result.stderr
    assert "b@example.be" in run("subscribers", "ls").stdout


def test_ls_of_a_list_shows_the_status_on_that_list(run, project):
    """Not only the global status (active for both): pending and confirmed on this list."""
    run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief", "--consent", "v1")
    run("subscribers", "add", "b@example.be", "--list", "nieuwsbrief", "--consent", "v1",
        "--confirmed")
    rows = json.loads(run("subscribers", "ls", "--list", "nieuwsbrief", "--json").stdout)
    assert [(r["email"], r["list_status"], r["status"]) for r in rows] == [
        ("a@example.be", "pending", "active"), ("b@example.be", "confirmed", "active")]
    lines = run("subscribers", "ls", "--list", "nieuwsbrief").stdout.splitlines()
    assert "list status" in next(line for line in lines if "email" in line)
    assert "pending" in next(line for line in lines if "a@example.be" in line)
    assert "confirmed" in next(line for line in lines if "b@example.be" in line)
    assert "list_status" not in json.loads(run("subscribers", "ls", "--json").stdout)[0]


def test_remove_asks_and_deletes_everything(run, project):
    run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief", "--consent", "v1")
    result = run("subscribers", "remove", "a@example.be", input="n\n")
    assert result.exit_code == 1
    assert show(run, "a@example.be")["email"] == "a@example.be"
    assert run("subscribers", "remove", "a@example.be", "--yes").exit_code == 0
    result = run("subscribers", "show", "a@example.be")
    assert result.exit_code == 1 and "No subscriber" in result.stderr
    settings = load_settings()
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM consent_event")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM subscription")).scalar() == 0
    engine.dispose()


def test_add_warns_about_an_address_that_needs_smtputf8(run, project):
    result = run("subscribers", "add", "Chloë@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 0, result.stderr
    assert "chloë@example.be needs SMTPUTF8" in result.stderr
    result = run("subscribers", "add", "zoë@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1", "--json")
    assert json.loads(result.stdout)["smtputf8"] is True
    result = run("subscribers", "add", "an@example.be", "--list", "nieuwsbrief",
                 "--consent", "v1")
    assert result.exit_code == 0 and "SMTPUTF8" not in result.stderr


@pytest.mark.parametrize("first, infix, last, full, family", [
    ("Jan", "van der", "Berg", "Jan van der Berg", "Van der Berg"),
    ("Marieke", "De", "Vries", "Marieke de Vries", "De Vries"),
    (None, "van der", "Berg", "Van der Berg", "Van der Berg"),
    ("Anna", "'t", "Hart", "Anna 't Hart", "'t Hart"),
    (" Jan ", " van  den ", " Bosch ", "Jan van den Bosch", "Van den Bosch"),
    ("Lieve", None, "Van den Bossche", "Lieve Van den Bossche", "Van den Bossche"),
    ("Jan", "van", None, "Jan", ""),
    (None, None, None, "", ""),
])
def test_full_and_family_name_follow_the_dutch_rules(first, infix, last, full, family):
    """After a first name the infix is lower case, alone it takes a capital (not 't);
    a Belgian surname kept whole in the last name is left as it is."""
    from mailer.audience.names import family_name, full_name
    from mailer.content.mailing import Recipient

    assert full_name(first, infix, last) == full
    assert family_name(infix, last) == family
    data = Recipient(subscriber_id=1, email="x@example.nl", first_name=first, infix=infix,
                     last_name=last).template_data()
    assert data.get("name", "") == full and data.get("family_name", "") == family
    assert ("infix" in data) == bool(infix)


def test_add_and_edit_an_infix(run, project):
    result = run("subscribers", "add", "jan@example.nl", "--list", "nieuwsbrief",
                 "--first-name", "Jan", "--infix", "van der", "--last-name", "Berg",
                 "--consent", "v1")
    assert result.exit_code == 0, result.stderr
    assert show(run, "jan@example.nl")["name"] == "Jan van der Berg"
    assert run("subscribers", "edit", "jan@example.nl", "--infix", "van den").exit_code == 0
    data = show(run, "jan@example.nl")
    assert data["name"] == "Jan van den Berg"
    assert data["consent"][-1]["source"] == "cli: infix"  # the field, never its value
    assert run("subscribers", "edit", "jan@example.nl", "--infix", "").exit_code == 0
    assert show(run, "jan@example.nl")["infix"] is None
    result = run("subscribers", "edit", "jan@example.nl", "--infix", "van\nder")
    assert result.exit_code == 1 and "line breaks" in result.stderr


def test_gdpr_export_holds_the_infix_and_erase_removes_it(run, project):
    run("subscribers", "add", "jan@example.nl", "--list", "nieuwsbrief", "--first-name",
        "Jan", "--infix", "uit den", "--last-name", "Bogaard", "--consent", "v1")
    result = run("gdpr", "export", "jan@example.nl", "--out", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["subscriber"]["infix"] == "uit den"
    text_export = run("gdpr", "export", "jan@example.nl", "--format", "text", "--out", "-")
    assert "infix: uit den" in text_export.stdout
    assert run("gdpr", "erase", "jan@example.nl", "--yes").exit_code == 0
    engine = make_engine(load_settings().resolved_database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscriber WHERE infix IS NOT NULL")
                            ).scalar() == 0
    engine.dispose()


def test_add_with_send_confirmation_queues_the_mail_once(run, project):
    """One person added to a double opt-in list is not a dead end either."""
    add_events_list(project)
    run("lists", "sync")
    result = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief",
                 "--consent", "paper form")
    assert result.exit_code == 0, result.stderr
    assert "Pending on nieuwsbrief" in result.stderr and "--send-confirmation" in result.stderr
    result = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief", "--list",
                 "events", "--consent", "paper form", "--send-confirmation", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["lists"] == {"nieuwsbrief": "pending", "events": "confirmed"}
    assert data["confirmation_queued"] == ["nieuwsbrief"]  # events is single opt-in
    again = run("subscribers", "add", "a@example.be", "--list", "nieuwsbrief",
                "--consent", "paper form", "--send-confirmation")
    assert again.exit_code == 0 and "asked before, not again" in again.stderr
    engine = make_engine(load_settings().resolved_database_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT kind, state FROM {NOTICE} n")).all() == [
            ("confirm", "queued")]
    engine.dispose()
    for args, message in ((["--list", "events"], "Only a double opt-in list"),
                          (["--list", "nieuwsbrief", "--confirmed"], "one of the two")):
        result = run("subscribers", "add", "b@example.be", *args, "--consent", "v1",
                     "--send-confirmation")
        assert result.exit_code == 1 and message in result.stderr
    assert run("subscribers", "show", "b@example.be").exit_code == 1

"""A zero audience is explained (issue 12, point 3): on a double opt-in list where people
were imported without --confirmed, `campaign create` and `campaign send` say how many are
pending confirmation and how to ask them, instead of creating or sending for nobody
silently."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_delivery import SUBJECT, TEMPLATE

PENDING = "11 people are pending confirmation on nieuwsbrief; 0 confirmed."


def pending(run, project: Path, n: int = 11) -> None:  # noqa: ANN001
    csv = project / "leden.csv"
    csv.write_text("email;voornaam\n" + "".join(f"p{i}@example.be;P{i}\n" for i in range(n)))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "ledenlijst 2026")  # the example list is double opt-in: all pending
    assert result.exit_code == 0, result.output


def create(run, *extra: str):  # noqa: ANN001, ANN201
    return run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template", TEMPLATE,
               "--subject", SUBJECT, *extra)


def test_create_and_send_explain_an_audience_of_pending_people(run, project):
    pending(run, project)
    result = create(run)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "nobody would get it now: " + PENDING in text, text
    assert "mailer subscribers import FILE --list nieuwsbrief --send-confirmation" in text
    assert "--confirmed" in text

    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "Nobody would get dec: " + PENDING in text, text
    assert "--send-confirmation" in text and "Traceback" not in text
    shown = run("campaign", "show", "dec", "--json")
    assert json.loads(shown.stdout)["state"] == "draft"  # nothing started, no outbox


def test_create_json_carries_the_explanation(run, project):
    pending(run, project, 1)
    result = create(run, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["audience"] == 0
    assert data["audience_empty"] == ("1 person is pending confirmation on nieuwsbrief; "
                                      "0 confirmed.")
    assert "--send-confirmation" in data["hint"]


def test_a_segment_that_matches_none_of_the_confirmed_says_so(run, project):
    csv = project / "leden.csv"
    csv.write_text("email;voornaam;language\nan@example.be;An;nl\nbo@example.be;Bo;nl\n")
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
    result = create(run, "--where", "language = en")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "2 confirmed on nieuwsbrief, none matching the segment (language = en)" in text

"""The Dutch tussenvoegsel (subscriber.infix, issue 12 point 5) wherever a person's fields
are used: segments (`--where`), the template check's audience, the preferences page."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

NAMED = """{% extends "layout.html.j2" %}
{% block content %}
<p>Beste {{ subscriber.name }} ({{ subscriber.infix }}),</p>
{% endblock %}
"""


def _add(run, email: str, first: str, infix: str | None, last: str) -> None:  # noqa: ANN001
    args = ["subscribers", "add", email, "--list", "nieuwsbrief", "--consent", "test",
            "--confirmed", "--first-name", first, "--last-name", last]
    if infix is not None:
        args += ["--infix", infix]
    result = run(*args)
    assert result.exit_code == 0, result.output


def _people(run) -> None:  # noqa: ANN001
    _add(run, "jan@example.nl", "Jan", "van der", "Berg")
    _add(run, "piet@example.nl", "Piet", "van", "Dam")
    _add(run, "anna@example.nl", "Anna", None, "Jansen")


def _recipients(project: Path) -> set[str]:
    folder = project / "outbox" / "new"
    return {str(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["To"])
            for p in folder.iterdir()} if folder.exists() else set()


def test_a_segment_can_pick_people_by_their_infix(run, project):
    _people(run)
    for slug, where in (("van", "infix = 'van'"), ("met", "infix is set"),
                        ("vander", 'infix starts with "van d"'), ("zonder", "infix is not set")):
        result = run("campaign", "create", slug, "--list", "nieuwsbrief", "--template",
                     "templates/newsletter.html.j2", "--subject", "Nieuws", "--where", where)
        assert result.exit_code == 0, result.output
    result = run("campaign", "send", "van", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 1
    assert _recipients(project) == {"Piet van Dam <piet@example.nl>"}
    for slug, expected in (("met", 2), ("vander", 1), ("zonder", 1)):
        shown = run("templates", "check", "--campaign", slug, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["recipients"] == expected, slug


def test_the_check_sees_the_infix_of_the_real_audience(run, project):
    (project / "templates" / "named.html.j2").write_text(NAMED)
    _add(run, "jan@example.nl", "Jan", "van der", "Berg")
    _add(run, "piet@example.nl", "Piet", "van", "Dam")
    result = run("templates", "check", "templates/named.html.j2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["findings"] == [] and report["recipients"] == 2
    # one person without an infix: missing for that one, not for everyone; and the way
    # out the message gives (--where "infix is set") works
    _add(run, "anna@example.nl", "Anna", None, "Jansen")
    result = run("templates", "check", "templates/named.html.j2", "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["field"] == "subscriber.infix" and finding["lacking"] == 1
    assert '--where "infix is set"' in finding["message"]
    result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                 "templates/named.html.j2", "--subject", "Nieuws", "--where", "infix is set")
    assert result.exit_code == 0, result.output
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 2
    texts = [BytesParser(policy=policy.default).parsebytes(p.read_bytes())
             .get_body(("plain",)).get_content() for p in (project / "outbox" / "new").iterdir()]
    assert any("Beste Jan van der Berg (van der)," in t for t in texts), texts

"""`mailer templates check` and `mailer preview` on a real project."""

from __future__ import annotations

import json
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest

from mailer.content.dkim import load_key, txt_record
from mailer.tokens import Purpose, Signer

BAD = """{% extends "layout.html.j2" %}
{% block content %}
<link rel="stylesheet" href="https://cdn.example.com/x.css">
<script>track()</script>
<p>{{ subscriber.frist_name }} {{ subscriber.first_name }}</p>
<img src="https://www.example.be/x.png">
{% endblock %}
"""


def test_the_shipped_newsletter_passes_the_check(run):
    result = run("templates", "check", "templates/newsletter.html.j2")
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_check_reports_every_problem_and_exits_1(run, project):
    (project / "templates" / "bad.html.j2").write_text(BAD)
    result = run("templates", "check", "templates/bad.html.j2", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    messages = [f["message"] for f in report["findings"] if f["level"] == "error"]
    assert any("subscriber.frist_name (bad.html.j2, line 5) is undefined" in m
               for m in messages)
    assert any("alt text" in m and "x.png" in m for m in messages)
    assert any("stylesheet https://cdn.example.com/x.css" in m for m in messages)
    assert any("<script>" in m for m in messages)
    warnings = [f["message"] for f in report["findings"] if f["level"] == "warning"]
    assert any(m.startswith("subscriber.first_name (bad.html.j2, line 5) has no | default")
               for m in warnings)
    assert not report["ok"]


def test_check_wants_a_visible_unsubscribe_link_and_an_html_part_gmail_does_not_clip(
        run, project):
    (project / "templates" / "plain.html.j2").write_text("<p>Hallo</p>")
    result = run("templates", "check", "templates/plain.html.j2")
    assert result.exit_code == 1 and "No visible unsubscribe link" in result.output
    (project / "templates" / "huge.html.j2").write_text(
        '<a href="{{ urls.unsubscribe }}">weg</a>' + "<p>" + "x" * 110_000 + "</p>")
    result = run("templates", "check", "templates/huge.html.j2")
    assert result.exit_code == 1 and "Gmail clips" in result.output


def test_a_broken_template_is_one_line_and_exit_1(run, project):
    (project / "templates" / "broken.html.j2").write_text("<p>{% if %}</p>")
    result = run("templates", "check", "templates/broken.html.j2")
    assert result.exit_code == 1
    assert "broken.html.j2" in result.output and "Traceback" not in result.output
    result = run("templates", "check", "templates/missing.html.j2")
    assert result.exit_code == 1 and "not found" in result.output


def test_preview_writes_the_exact_message_for_a_subscriber(run, project, monkeypatch):
    assert run("subscribers", "add", "an@example.be", "--list", "nieuwsbrief",
               "--first-name", "Anneke", "--language", "en", "--consent", "test",
               "--confirmed").exit_code == 0
    key = project / "dkim" / "k.pem"
    assert run("dkim", "keygen", "--domain", "example.be", "--selector", "s1",
               "--algorithm", "ed25519", "--out", str(key)).exit_code == 0
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEY", str(key))
    monkeypatch.setenv("MAILER_SENDING__DKIM_SELECTOR", "s1")
    monkeypatch.setenv("MAILER_SENDING__BOUNCE_DOMAIN", "bounce.example.be")
    result = run("preview", "--template", "templates/newsletter.html.j2", "--subscriber",
                 "an@example.be", "--out", "preview", "--subject",
                 "{{ subscriber.first_name }}, our news", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    eml = Path(summary["files"]["eml"]).read_bytes()
    msg = BytesParser(policy=policy.default).parsebytes(eml)
    assert msg["To"] == "Anneke <an@example.be>" and msg["Subject"] == "Anneke, our news"
    html = Path(summary["files"]["html"]).read_text()
    text = Path(summary["files"]["text"]).read_text()
    assert "Dear Anneke" in html and "Kind regards" in text  # the subscriber's language
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    record = txt_record(load_key(key)).encode()
    assert dkim.verify(eml, dnsfunc=lambda name, timeout=5: record)
    assert summary["signed"] is True
    local = summary["envelope_from"].split("@")[0].removeprefix("bounces+")
    assert summary["envelope_from"].endswith("@bounce.example.be")
    secret = (project / "secrets.toml").read_text().split('secret_key = "')[1].split('"')[0]
    assert Signer(secret.encode()).read(local, Purpose.MESSAGE).list_id > 0


def test_preview_of_an_unknown_subscriber_is_a_clear_error(run):
    result = run("preview", "--template", "templates/newsletter.html.j2", "--subscriber",
                 "nobody@example.be", "--out", "p")
    assert result.exit_code == 1 and "No subscriber" in result.output
    assert not Path("p").exists()


# -- one set of rules: `templates check`, `campaign create`, `test` and `send` (issue 12, 2)

GREETING = """{% extends "layout.html.j2" %}
{% block content %}
<p>Dag {{ subscriber.first_name }},</p>
{% endblock %}
"""


def _members(run, project, rows: str) -> None:  # noqa: ANN001
    csv = project / "members.csv"
    csv.write_text("email,first_name\n" + rows)
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output


def _sent(project: Path) -> list[str]:
    """Subject and first lines of the messages the maildir transport wrote."""
    return [BytesParser(policy=policy.default).parsebytes(p.read_bytes())
            .get_body(("plain",)).get_content()
            for p in (project / "outbox" / "new").iterdir()]


def test_a_field_every_recipient_has_passes_and_test_and_send_use_real_data(run, project):
    (project / "templates" / "greeting.html.j2").write_text(GREETING)
    _members(run, project, "a@example.be,Anneke\nb@example.be,Bart\n")
    result = run("templates", "check", "templates/greeting.html.j2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["findings"] == [] and report["recipients"] == 2
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/greeting.html.j2", "--subject",
               "{{ subscriber.first_name }}, ons nieuws").exit_code == 0
    # a test address that is nobody's: rendered with the sample's fields, not refused
    result = run("campaign", "test", "dec", "--to", "ik@example.org")
    assert result.exit_code == 0, result.output
    assert any("Dag An," in text for text in _sent(project))
    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 0, result.output
    texts = _sent(project)
    assert any("Dag Anneke," in t for t in texts) and any("Dag Bart," in t for t in texts)


def test_check_counts_who_lacks_a_field_and_send_refuses_with_that_count(run, project):
    (project / "templates" / "greeting.html.j2").write_text(GREETING)
    _members(run, project, "a@example.be,Anneke\nb@example.be,Bart\n")
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/greeting.html.j2", "--subject", "Ons nieuws").exit_code == 0
    _members(run, project, "c@example.be,\nd@example.be,\ne@example.be,Eva\n")
    result = run("templates", "check", "--campaign", "dec", "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["level"] == "error" and finding["field"] == "subscriber.first_name"
    assert finding["lacking"] == 2
    assert "missing for 2 of 5 recipients" in finding["message"]
    assert "greeting.html.j2, line 3" in finding["message"]
    for args in (("test", "dec", "--to", "ik@example.org"), ("send", "dec", "--yes")):
        result = run("campaign", *args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "missing for 2 of 5 recipients" in result.output
        assert '| default("…")' in result.output and '--where "first_name is set"' \
            in result.output
        assert "templates check --campaign dec" in result.output
    assert not (project / "outbox" / "new").exists() or not _sent(project)
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
    assert shown["state"] == "draft" and shown["total"] == 0  # nothing was queued
    # the fix the message gives works: leave them out
    assert run("campaign", "create", "jan", "--list", "nieuwsbrief", "--template",
               "templates/greeting.html.j2", "--subject", "Ons nieuws", "--where",
               "first_name is set").exit_code == 0
    result = run("campaign", "send", "jan", "--yes", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["sent"] == 3


def test_create_refuses_what_the_check_calls_an_error(run, project):
    _members(run, project, "a@example.be,Anneke\n")
    (project / "templates" / "broken.html.j2").write_text("<p>{% if %}</p>")
    (project / "templates" / "script.html.j2").write_text(
        GREETING.replace("</p>", "</p><script>track()</script>"))
    for template, said in (("broken.html.j2", "broken.html.j2, line 1"),
                           ("script.html.j2", "<script>")):
        result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                     f"templates/{template}", "--subject", "Nieuws")
        assert result.exit_code == 1 and said in result.output, result.output
        assert "Traceback" not in result.output
        assert run("templates", "check", f"templates/{template}").exit_code == 1
    assert json.loads(run("campaign", "ls", "--json").stdout) == []


def test_a_campaign_whose_template_changed_is_refused_at_send(run, project):
    """The check runs again at send: a <script> added after `campaign create` is not
    sent."""
    _members(run, project, "a@example.be,Anneke\n")
    template = project / "templates" / "greeting.html.j2"
    template.write_text(GREETING)
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/greeting.html.j2", "--subject", "Nieuws").exit_code == 0
    template.write_text(GREETING.replace("</p>", "</p><script>track()</script>"))
    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 1 and "<script>" in result.output
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["total"] == 0


def test_errors_name_the_users_file_and_line_never_an_internal_name(run, project):
    (project / "templates" / "partials" / "groet.html.j2").write_text(
        "<p>\n  {{ subscriber.attributes.Gemeente }}\n</p>\n")
    (project / "templates" / "typo.html.j2").write_text(
        GREETING.replace("<p>Dag", '{% include "partials/groet.html.j2" %}\n<p>Dag'))
    _members(run, project, "a@example.be,Anneke\n")
    result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                 "templates/typo.html.j2", "--subject", "{{ subscriber.frist_name }}")
    assert result.exit_code == 1
    assert "subscriber.frist_name (the subject)" in result.output
    result = run("templates", "check", "templates/typo.html.j2", "--subject",
                 "{{ subscriber.frist_name }}")
    assert result.exit_code == 1
    assert "subscriber.frist_name (the subject) is missing for 1 of 1" in result.output
    assert "(partials/groet.html.j2, line 2)" in result.output
    for internal in ("text.txt.j2", "subject.txt.j2"):
        assert internal not in result.output


def test_a_failure_at_send_time_names_the_users_file_and_line(run, project):
    """A field read only in a branch that depends on a value passes the check (the first
    member of the group does not take the branch) and fails for the member who does:
    that delivery fails, naming the user's file and line (not the prepared template's),
    and the others are sent."""
    (project / "templates" / "wijk.html.j2").write_text(GREETING.replace(
        "<p>Dag", '{% if subscriber.attributes.Gemeente == "Gent" %}<p>{{ '
                  'subscriber.attributes.wijk }}</p>{% endif %}\n<p>Dag'))
    csv = project / "members.csv"
    csv.write_text("email,first_name,Gemeente\na@example.be,Anneke,Antwerpen\n"
                   "b@example.be,Bart,Gent\n")
    assert run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed").exit_code == 0
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/wijk.html.j2", "--subject", "Nieuws").exit_code == 0
    assert run("campaign", "send", "dec", "--yes").exit_code == 0
    rows = {r["email"]: r for r in json.loads(run("campaign", "deliveries", "dec",
                                                  "--json").stdout)}
    assert rows["a@example.be"]["state"] == "sent"
    assert rows["b@example.be"]["state"] == "failed"
    assert rows["b@example.be"]["last_reply"].startswith(
        "template: wijk.html.j2, line 3: ")
    assert "wijk" in rows["b@example.be"]["last_reply"]


def _imports(module: Path, package: str) -> set[str]:
    """The modules of `package` that `module` imports, at any depth (in a function too)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith(package + ".")}
    return found


def test_the_template_modules_import_each_other_without_a_circle():
    """The rules (lint) and the renderer (mailing) both ask where a name is read: that is
    locate.py, which neither of them imports the other for (it was a lazy import back)."""
    import mailer.content

    folder = Path(mailer.content.__file__).parent
    graph = {f"mailer.content.{f.stem}": _imports(f, "mailer.content")
             for f in folder.glob("*.py") if f.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and n in graph
                                 and reaches(n, goal, seen | {n}))
                   for n in graph.get(start, ()))

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == []


@pytest.mark.parametrize(("field", "kept"), [("name", 3), ("family_name", 2)])
def test_the_way_out_for_a_derived_name_is_a_where_that_works_verbatim(run, project, field,
                                                                        kept):
    """`subscriber.name` ("Jan van der Berg") and `subscriber.family_name` ("Van der
    Berg") are made from first name, infix and last name: `--where` does not know them
    (it would read an attribute of that name, which nobody has). The way out the check
    gives names a condition on the fields they come from, and that condition, pasted as
    it stands, makes the check pass and the send reach everyone it keeps."""
    (project / "templates" / "named.html.j2").write_text(
        GREETING.replace("subscriber.first_name", f"subscriber.{field}"))
    csv = project / "members.csv"  # name: 3 of 5 have one; family_name: 2 of 5
    csv.write_text("email,first_name,tussenvoegsel,last_name\n"
                   "jan@example.nl,Jan,van der,Berg\nan@example.nl,An,,\n"
                   "vries@example.nl,,de,Vries\nx@example.nl,,,\ny@example.nl,,,\n")
    assert run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed").exit_code == 0
    result = run("templates", "check", "templates/named.html.j2", "--json")
    assert result.exit_code == 1, result.output
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["field"] == f"subscriber.{field}" and finding["lacking"] == 5 - kept
    where = re.search(r'--where "([^"]+)"', finding["message"])
    assert where, finding["message"]
    result = run("templates", "check", "templates/named.html.j2", "--where", where[1],
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recipients"] > 0
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/named.html.j2", "--subject", "Nieuws", "--where",
               where[1]).exit_code == 0
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    sent = json.loads(result.stdout)["sent"]
    also = re.search(r"it also leaves out (\d+) who have it", finding["message"])
    assert sent + (int(also[1]) if also else 0) == kept
    greeted = {re.search(r"Dag ([^,]*),", text)[1] for text in _sent(project)}
    assert "" not in greeted and greeted <= {"Jan van der Berg", "An", "Van der Berg",
                                             "De Vries"}


def test_the_audience_counted_in_groups_by_the_database_is_the_audience_read_one_by_one(
        run, project):
    """campaigns.audience_groups (the database's GROUP BY) gives the template check the
    same groups and counts as reading every member: languages, names there or not (an
    empty one counts as missing), attributes in any order, a member of two lists once."""
    from mailer.content.lint import group_audience, shape
    from mailer.delivery.campaigns import get_campaign
    from mailer.messages import _grouped_audience, audience
    from mailer.project import Project

    csv = project / "mixed.csv"
    rows = ["email,first_name,infix,last_name,language,plan,city"]
    for i in range(60):
        rows.append(",".join((
            f"p{i}@example.be", "" if i % 3 == 0 else f"Naam{i}", "de" if i % 4 == 0 else "",
            "" if i % 5 == 0 else f"Achter{i}", ("nl", "en", "")[i % 3],
            "" if i % 2 else "gold", "" if i % 7 else "Gent")))
    csv.write_text("\n".join(rows) + "\n")
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/newsletter.html.j2", "--subject", "Nieuws").exit_code == 0
    loaded = Project.load()
    from mailer.db import session_scope

    with session_scope(loaded.engine) as session:
        campaign = get_campaign(session, "dec")
        one_by_one = group_audience(audience(session, campaign))
        grouped = _grouped_audience(session, campaign)
        assert grouped.total == one_by_one.total == 60
        counts = {key: count for key, (count, _) in one_by_one.groups.items()}
        assert len(counts) > 8  # the data has many shapes
        assert {key: count for key, (count, _) in grouped.groups.items()} == counts
        assert all(shape(person) == key for key, (_, person) in grouped.groups.items())

"""Lists as files: sync is idempotent, updates, refuses bad files; ls counts per status."""

from __future__ import annotations

import json


def test_sync_is_idempotent_and_updates_changed_lists(run, project):
    # The fixture already synced once.
    again = json.loads(run("lists", "sync", "--json").stdout)
    assert again == {"created": [], "updated": [], "unchanged": ["nieuwsbrief"], "missing": [],
                     "sequences": [], "dry_run": False}
    path = project / "lists" / "nieuwsbrief.toml"
    path.write_text(path.read_text().replace('name = "Nieuwsbrief"', 'name = "Het nieuws"'))
    (project / "lists" / "events.toml").write_text(
        'name = "Events"\nlanguage = "en"\noptin = "single"\nfrom_name = "Events"\n'
        'from_address = "Events@Example.be"\n')
    result = json.loads(run("lists", "sync", "--json").stdout)
    assert result["created"] == ["events"] and result["updated"] == ["nieuwsbrief"]
    rows = {r["slug"]: r for r in json.loads(run("lists", "ls", "--json").stdout)}
    assert rows["nieuwsbrief"]["name"] == "Het nieuws"
    assert rows["events"]["from"] == "Events <events@example.be>"
    (project / "lists" / "events.toml").unlink()
    assert json.loads(run("lists", "sync", "--json").stdout)["missing"] == ["events"]
    assert len(json.loads(run("lists", "ls", "--json").stdout)) == 2  # kept


def test_bad_list_file_is_refused_with_file_and_field(run, project):
    (project / "lists" / "bad.toml").write_text(
        'name = "Bad"\nfrom_name = "X\\nBcc: y@example.be"\nfrom_address = "x@example.be"\n')
    result = run("lists", "sync")
    assert result.exit_code == 1
    assert "bad.toml" in result.stderr and "from_name" in result.stderr
    (project / "lists" / "bad.toml").write_text('name = "Bad"\nfrom_name = "X"\n'
                                                'from_address = "nope"\ncolour = 1\n')
    result = run("lists", "sync")
    assert result.exit_code == 1 and "bad.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_ls_counts_members_per_status(run, project):
    for address in ("a@example.be", "b@example.be"):
        run("subscribers", "add", address, "--list", "nieuwsbrief", "--consent", "v1")
    run("subscribers", "add", "c@example.be", "--list", "nieuwsbrief", "--consent", "v1",
        "--confirmed")
    run("subscribers", "remove", "a@example.be", "--list", "nieuwsbrief")
    (row,) = json.loads(run("lists", "ls", "--json").stdout)
    assert (row["pending"], row["confirmed"], row["unsubscribed"]) == (1, 1, 1)
    table = run("lists", "ls").stdout
    assert "nieuwsbrief" in table

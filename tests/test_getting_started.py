"""docs/getting-started.md works: every `sh` block is run, in order, in a new folder, by
a shell with this checkout's `mailer` on its PATH (real processes, a real SQLite file, the
web app on a free port); every `toml` block parses.

A block may say, in an HTML comment just above it, `<!-- doc-test: skip … -->` (not run)
or `<!-- doc-test: exit N … -->` (it ends with exit status N: the doctor, before any
record is published). `cd` carries over from one block to the next, as in a terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.webserver import free_port

DOC = Path(__file__).resolve().parent.parent / "docs" / "getting-started.md"
BLOCK = re.compile(r"(?:<!-- doc-test: (?P<note>[^>]*?) -->\n)?```(?P<kind>\w*)\n(?P<body>.*?)```",
                   re.S)


def blocks(kind: str) -> list[tuple[str, str]]:
    """(note, body) of each block of that kind, in order."""
    return [(m["note"] or "", m["body"]) for m in BLOCK.finditer(DOC.read_text())
            if m["kind"] == kind]


def test_every_toml_block_parses():
    for _, body in blocks("toml"):
        tomllib.loads(body)


def test_every_command_of_the_walk_works_in_order(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(tmp_path)
    port = str(free_port())  # the page's 8080 may be taken on a shared machine
    cwd, state = tmp_path, tmp_path / ".cwd"
    ran = 0
    for note, body in blocks("sh"):
        if note.startswith("skip"):
            continue
        expected = int(note.split()[1]) if note.startswith("exit") else 0
        script = body.replace("8080", port)
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", f'{script}\npwd > "{state}"'],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert "Traceback" not in done.stderr, done.stderr
        if expected == 0:
            assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
            cwd = Path(state.read_text().strip())
        else:
            assert done.returncode == expected, f"{body}\n{done.stdout}\n{done.stderr}"
        ran += 1
    project = tmp_path / "groen-nieuws"
    sent = list((project / "outbox" / "new").iterdir())
    assert len(sent) >= 2  # the test message and the campaign's
    assert all(b"From: Groenbuurt vzw <nieuws@groenbuurt.nl>" in p.read_bytes() for p in sent)
    assert ran >= 8


README = DOC.parent.parent / "README.md"


def test_the_readme_import_asks_the_people_of_a_double_opt_in_list(tmp_path):
    """README's "Using it", run as written up to its import, on a list of one: the list
    `mailer init` makes is double opt-in, so the import must ask the people (issue 12,
    3), never leave them pending with nobody asking."""
    block = README.read_text().split("## Using it", 1)[1].split("```sh\n", 1)[1]
    lines = re.sub(r"\\\n\s*", " ", block.split("```", 1)[0]).splitlines()
    at = next(i for i, line in enumerate(lines) if "subscribers import" in line)
    assert "people.csv" in lines[at]
    script = "\n".join([*lines[:at], "printf 'email\\nan@example.be\\n' > people.csv",
                        lines[at]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(tmp_path)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    optin = tomllib.loads(next((tmp_path).glob("*/lists/nieuwsbrief.toml")).read_text())
    assert optin["optin"] == "double"
    assert "1 confirmation mails queued" in done.stderr, done.stderr
    assert "nobody has asked them" not in done.stderr

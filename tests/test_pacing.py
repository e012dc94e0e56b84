"""The pace of a real send, counted at the receiving server (tests/support/smtpserver.py),
on SQLite and PostgreSQL: a domain with a limit of its own never holds up the others
(issue 13: no head-of-line blocking). The figure (the total rate with a limited domain,
within 2 % of the global rate) is bench/pacing_bench.py's, in docs/performance.md."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from mailer.db import make_engine
from tests.support.members import import_members
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.test_delivery import alive, configure, create, mailer, outbox_states

SLOW = "example0.com"


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


@pytest.fixture
def database(project):  # noqa: ANN001, ANN201
    engine = make_engine(os.environ["MAILER_DATABASE_URL"])
    yield engine
    engine.dispose()


def limit_domain(project: Path, domain: str, rate: float, burst: int) -> None:
    config = project / "mailer.toml"
    config.write_text(config.read_text().replace(
        "[delivery]\n", f'[delivery]\nper_domain = {{ "{domain}" = [{rate}, {burst}] }}\n'))


def mixed_people(run, project: Path, n: int, every: int) -> list[str]:  # noqa: ANN001
    """n confirmed members of nieuwsbrief, every `every`-th at SLOW, in import (and so
    outbox) order, the others at example.be."""
    addresses = [f"p{i}@{SLOW if i % every == 0 else 'example.be'}" for i in range(n)]
    import_members(run, project, addresses)
    return addresses


def test_a_throttled_domain_does_not_hold_up_the_others(run, project, smtp, monkeypatch,
                                                        database):
    """One recipient in five at example0.com, which may have one message every 5 s; 4
    connections. Before the fix each connection soon held a message to example0.com,
    waiting for its turn, and everybody else waited with them (~1 message a second in
    all: the 160 others took over 2 minutes). Now the others all arrive while
    example0.com still has most of its messages to go, and pausing leaves those queued,
    none sent twice."""
    configure(monkeypatch, smtp, rate=100, connections=4)
    limit_domain(project, SLOW, 0.2, 1)
    addresses = mixed_people(run, project, 200, every=5)
    others = [a for a in addresses if not a.endswith("@" + SLOW)]
    create(run)
    sender = mailer("campaign", "send", "dec", "--yes", "--json")

    def arrived() -> Counter[str]:
        return Counter(r for m in smtp.messages() for r in m.recipients)

    wait_for(lambda: alive(sender) and all(arrived()[a] for a in others),
             "every recipient outside example0.com at the server",
             state=lambda: f"{sum(arrived()[a] > 0 for a in others)} of {len(others)} "
                           f"others, {sum(arrived().values())} in all")
    assert run("campaign", "pause", "dec").exit_code == 0
    out, err = sender.communicate(timeout=300)
    assert sender.returncode == 0, err.decode(errors="replace")
    got = arrived()
    slow = [r for r in got if r.endswith("@" + SLOW)]
    assert set(got.values()) == {1} and set(got) == set(others) | set(slow)
    assert len(slow) < 40  # example0.com at its own pace: most of its 40 still to go
    assert outbox_states(database) == {"sent": 160 + len(slow), "queued": 40 - len(slow)}
    assert json.loads(out)["sent"] == 160 + len(slow)

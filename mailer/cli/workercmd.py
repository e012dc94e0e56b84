"""`mailer worker`: a sender that works beside others (issue 17, point 4)."""

from __future__ import annotations

import click

from mailer.cli import State, pass_state

__all__ = ["worker"]


@click.command("worker")
@click.option("--max-seconds", type=float,
              help="Stop starting new messages after this long (default: when there is "
                   "no work left).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when there was nothing to do.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def worker(state: State, max_seconds: float | None, quiet: bool, as_json: bool) -> None:
    """Send what is due, beside other workers: the confirmation, welcome and export mails
    and sequence steps first, then every sending campaign, round after round, until
    nothing is left or --max-seconds is up. It starts nothing: `mailer run` (cron)
    starts the scheduled campaigns.

    On PostgreSQL any number of workers, on any number of machines, share the work: each
    claims batches of deliveries, under a lease it renews while it lives
    ([delivery] lease_seconds); when one dies, the others take its unsent deliveries
    after the lease (a worker on the same machine at once), and its messages in flight
    become "unknown" (never resent silently). On SQLite one sender works at a time: a
    second one says so and exits 1. SIGTERM (systemd) or Ctrl-C: the messages in
    flight finish, the claims are handed back, exit 130 with one line; a second signal
    stops at once. `mailer campaign show` lists the workers sending a campaign. See
    docs/scale-out.md.

    \b
    Example:
        mailer worker --max-seconds 3600
        MAILER_DATABASE_URL=postgresql+psycopg://mailer@db/news mailer worker -q
    """
    from mailer.delivery.stopping import Interrupt, stop_signals

    signals = Interrupt("mailer worker", at_once="Interrupted ({name}): nothing done; "
                                                 "`mailer worker` continues.")
    click.get_current_context().with_resource(stop_signals(signals))
    project = state.project
    from mailer.delivery.runner import run_due

    # SQLite: a second sender fails here with one line (LockBusy, lock.py), exit 1
    result = run_due(project, max_seconds=max_seconds, signals=signals,
                     housekeeping=False, until_done=True)
    from mailer.cli.runcmd import _report

    _report(project, result, quiet, as_json, command="mailer worker")

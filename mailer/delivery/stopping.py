"""Stopping on a signal (issue 12, point 1): SIGINT (Ctrl-C) and SIGTERM (systemd, a
shutdown) for the whole of `campaign send` and `mailer run`, from the moment the command
starts, so a signal at any moment ends it with exit 130 and one line.

`Interrupt` is the command's handler, installed with `stop_signals` first thing:

- while nothing is under way that a signal should let finish (the command starting,
  reading, asking, taking a snapshot: `at_once` holds the line to say), the first signal
  stops at once: the transaction in progress rolls back, nothing is half-written;
- after that, the first signal is noted and the command stops at its next check, after
  the unit of work in progress (the sender, while it runs, takes the signals over through
  its event loop and is told of one noted before: sender.py);
- a second stops at once: `… continues` says which command goes on from there.

Light on purpose (the standard library only): `mailer run` installs it before it knows
whether anything is due.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["STOP_SIGNALS", "Interrupt", "interrupted_line", "stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals(handler: Callable[[str], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM call `handler(name)` while the block lasts, then the previous
    handlers come back: through `loop` when given (the sender: the handler runs in the
    loop), else as a plain signal handler (the commands, `mailer run` between its
    phases). Only in the main thread: elsewhere a process's signals are not ours."""
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        try:
            if loop is not None:
                loop.add_signal_handler(sig, handler, sig.name)
            else:
                signal.signal(sig, lambda _n, _f, name=sig.name: handler(name))
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in installed:
            if loop is not None:
                loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)


def interrupted_line(name: str, sent: int, waiting: int, unknown: int, command: str) -> str:
    """What a send stopped by a signal says: how many went, how many wait, how many were
    cut off in flight, and the command that continues."""
    cut = (f", {unknown:,} cut off in flight (unknown: they may have arrived, see "
           "`campaign deliveries --state unknown`)") if unknown else ""
    return (f"Interrupted ({name}): {sent:,} sent, {waiting:,} waiting{cut}; "
            f"`{command}` continues.")


class Interrupt:
    """A command's SIGINT and SIGTERM (see the module): `name` is the first signal
    noted; `at_once`, while set, the line to stop with at once ("{name}" in it is the
    signal's)."""

    def __init__(self, command: str, *, at_once: str | None = None) -> None:
        self.command = command  # the command that goes on after a second signal
        self.name: str | None = None
        self.at_once = at_once

    def __call__(self, name: str) -> None:
        if self.at_once is not None:
            self.name = self.name or name
            sys.stderr.write(self.at_once.format(name=name) + "\n")
            raise SystemExit(130)
        if self.name is None:
            self.name = name
            return
        sys.stderr.write(f"Interrupted again ({name}): stopped at once; `{self.command}` "
                         "continues.\n")
        raise SystemExit(130)

"""Helper processes that end with the process that started them.

A render helper (mailer/delivery/rendering.py) holds a campaign's templates and keys,
~80 MB. When the sender ends normally it shuts its helpers down; when it is killed
(SIGKILL, an OOM kill, a crash) nobody does, and they would live on, orphaned. So each
helper watches its parent: a daemon thread that checks every `INTERVAL` seconds whether
the parent is still the one it started with (an orphan is adopted by init or a
subreaper, so its parent id changes) and ends the helper at once when it is not.

(Linux's prctl(PR_SET_PDEATHSIG) is not used: it fires when the *thread* that started
the child ends, not the process, which would kill helpers started from a short-lived
thread of a healthy sender.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["INTERVAL", "exit_with_parent"]

INTERVAL = 0.5  # seconds between two looks at the parent


def exit_with_parent(parent: int) -> None:
    """In a child process: end it (exit code 1, no clean-up) once `parent` is gone, and
    not before: SIGINT and SIGTERM are ignored. Ctrl-C at a terminal reaches the whole
    process group, systemd's SIGTERM the whole unit; the parent stops its send in order
    (mailer/delivery/sender.py), still using its helpers, and shuts them down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if os.getppid() != parent:  # gone before we looked
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(INTERVAL)
        os._exit(1)

    threading.Thread(target=watch, name="mailer-parent-watch", daemon=True).start()

"""Personal data at rest: files only their owner can read, and no password on the screen.

Every file the engine writes that holds personal data (previews, maildir and file
transport output, import rejects, exports, backups, returned messages set aside) is
created 0600 before a byte is written to it, and the folders it creates for them 0700,
whatever the umask. A folder that already exists keeps its mode: it is the user's.

`mask_password` hides the password in a URL (`postgresql://user:****@host/db`), for
`config show` and for any message that names a database or a relay.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["mask_password", "open_private", "private_dir", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents as 0700; existing folders stay as they are."""
    missing = []
    node = path
    while not node.exists():
        missing.append(node)
        if node.parent == node:
            break
        node = node.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def open_private(path: Path, *, exclusive: bool = False) -> int:
    """A descriptor to write `path`, created 0600. An existing file is truncated and made
    0600 too (unless `exclusive`: then it must not exist, FileExistsError)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode otherwise
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write `data` (text as UTF-8) to `path` as a 0600 file."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    with os.fdopen(open_private(path, exclusive=exclusive), "wb") as fh:
        fh.write(body)


# scheme://user:password@ -> scheme://user:****@ ; the password runs to the last "@" of
# the word, so a stray "@" in it does not leave its tail visible.
_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]*):\S*@")


def mask_password(text: str) -> str:
    """`text` with the password of every URL in it replaced by ****."""
    return _PASSWORD.sub(r"\1:****@", text)

"""Where a project's mailer.toml is, without pydantic (issue 17, point 5: an idle `mailer
run` finds it before it knows whether it needs the settings at all). config.py reads it."""

from __future__ import annotations

import os
from pathlib import Path

from mailer.errors import ConfigError

__all__ = ["CONFIG_NAME", "ENV_PREFIX", "find_config"]

CONFIG_NAME = "mailer.toml"
ENV_PREFIX = "MAILER_"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Locate mailer.toml: explicit path, then $MAILER_CONFIG, then the current folder."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        return path.resolve()
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path} (from {ENV_PREFIX}CONFIG)")
        return path.resolve()
    path = Path.cwd() / CONFIG_NAME
    return path.resolve() if path.is_file() else None

"""A project: its settings and its database, opened once per command."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from mailer.config import Settings, load_settings
from mailer.db import check_schema, make_engine
from mailer.tokens import Signer

__all__ = ["Project"]


class Project:
    """Settings plus a lazily created engine. `engine` checks the schema is current."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def load(cls, config: str | None = None) -> Project:
        return cls(load_settings(config))

    @cached_property
    def raw_engine(self) -> Engine:
        """The engine without the schema check (for `mailer db`)."""
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def engine(self) -> Engine:
        """The engine, after checking the database is migrated to the code's version."""
        check_schema(self.raw_engine)
        return self.raw_engine

    @cached_property
    def hash_key(self) -> bytes:
        return self.settings.secrets.require("hash_key")

    @cached_property
    def signer(self) -> Signer:
        """Makes and reads the tokens in links and bounce addresses."""
        current, previous = self.settings.secrets.signer_keys()
        return Signer(current, previous)

    def close(self) -> None:
        if "raw_engine" in self.__dict__:
            self.raw_engine.dispose()

"""Driver-level bulk statements for the hot paths (imports, later outbox fills).

SQLAlchemy Core spends ~20 us per row building and type-processing parameters, and
renders an expanding IN list anew on every call. These helpers send plain SQL and plain
tuples straight to the driver, using the columns' own bind processors for values that
need converting, so what is stored is exactly what the ORM would store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from sqlalchemy import Connection

__all__ = ["Insert", "SelectIn", "processor"]


def _pieces(values: list[Any], largest: int) -> Iterator[list[Any]]:
    """Split a list into pieces of `largest` items, then powers of two.

    SQLite compiles each distinct statement text once and keeps it in a cache; a statement
    for every possible batch length would fill it with megabytes of near-duplicates. With
    these sizes there are only a dozen texts per statement.
    """
    start, left = 0, len(values)
    while left:
        size = largest if left >= largest else 1 << (left.bit_length() - 1)
        yield values[start:start + size]
        start, left = start + size, left - size


class Insert:
    """A batch of rows written in one go, straight to the driver.

    SQLite: one `INSERT … VALUES (…), (…), …`. PostgreSQL: `COPY … FROM STDIN`, the
    fastest way in, or, when rows must come back (`ON CONFLICT … RETURNING`), one
    `INSERT … SELECT * FROM unnest(…)` with an array per column. With `serial`, the new
    ids are returned: SQLite by `RETURNING`, PostgreSQL by drawing them from the sequence
    first and copying them in with the rows.
    This replaces SQLAlchemy's per-row parameter processing (~20 us a row): constant
    values such as timestamps are converted once per batch by the column's own bind
    processor (`processor`), so what is stored is what the ORM would store.
    """

    ROWS = 512  # rows per SQLite statement (its limit is 32,766 bound parameters)

    def __init__(self, conn: Connection, table: Any, columns: tuple[str, ...], *,
                 suffix: str = "", serial: str | None = None,
                 pg_types: tuple[str, ...] | None = None) -> None:
        self.name = table if isinstance(table, str) else table.name
        self.conn, self.columns, self.serial = conn, columns, serial
        self.returns = "RETURNING" in suffix
        self.sqlite = conn.dialect.name == "sqlite"
        if self.sqlite:
            self.suffix = suffix + (f" RETURNING {serial}" if serial else "")
            self.head = f"INSERT INTO {self.name} ({', '.join(columns)}) VALUES "
            self.group = f"({', '.join('?' * len(columns))})"
        elif self.returns:
            types = pg_types or tuple(table.c[c].type.compile(dialect=conn.dialect)
                                      for c in columns)
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            self.sql = (f"INSERT INTO {self.name} ({', '.join(columns)}) "
                        f"SELECT * FROM unnest({arrays}){suffix}")
        else:
            copied = ((serial,) if serial else ()) + columns
            self.copy_sql = f"COPY {self.name} ({', '.join(copied)}) FROM STDIN"

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if not rows:
            return []
        if self.sqlite:
            return self._values(rows)
        if self.returns:
            columns = tuple(map(list, zip(*rows, strict=True)))
            return self.conn.exec_driver_sql(self.sql, columns).all()
        ids: list[int] = []
        if self.serial:
            ids = [i for (i,) in self.conn.exec_driver_sql(
                f"SELECT nextval(pg_get_serial_sequence('{self.name}', '{self.serial}')) "
                "FROM generate_series(1, %s)", (len(rows),))]
            rows = [(i, *row) for i, row in zip(ids, rows, strict=True)]
        raw = self.conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(self.copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
        return [(i,) for i in ids]

    def _values(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        out: list[Any] = []
        for chunk in _pieces(rows, self.ROWS):
            sql = self.head + ", ".join([self.group] * len(chunk)) + self.suffix
            result = self.conn.exec_driver_sql(sql, tuple(chain.from_iterable(chunk)))
            if self.returns or self.serial:
                out.extend(result.all())
        return out


class SelectIn:
    """SELECT … WHERE column IN (many values), sent straight to the driver.

    SQLAlchemy renders an expanding IN list anew on every call (~7 us per value); here the
    SQL is a format string with `{IN}` where the list goes: `IN (?, ?, …)` on SQLite,
    `= ANY(%s)` with one array parameter on PostgreSQL. Fixed parameters come first.
    """

    def __init__(self, conn: Connection, sql: str) -> None:
        self.conn, self.sql = conn, sql
        self.sqlite = conn.dialect.paramstyle == "qmark"
        if not self.sqlite:
            self.sql = sql.replace("?", "%s")

    def __call__(self, values: list[Any], *fixed: Any) -> list[Any]:
        if not values:
            return []
        if not self.sqlite:
            return self.conn.exec_driver_sql(self.sql.format(IN="= ANY(%s)"),
                                             (*fixed, list(values))).all()
        out: list[Any] = []
        for part in _pieces(values, 4096):
            sql = self.sql.format(IN=f"IN ({','.join('?' * len(part))})")
            out.extend(self.conn.exec_driver_sql(sql, (*fixed, *part)).all())
        return out


def processor(conn: Connection, column: Any) -> Callable[[Any], Any]:
    """The column type's conversion of a Python value to what the driver is given."""
    process = column.type._cached_bind_processor(conn.dialect)
    return process if process is not None else (lambda value: value)

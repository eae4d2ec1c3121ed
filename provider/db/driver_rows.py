"""INSERT statements run on the database driver, with the rows SQLAlchemy would have written.

For the few writes on a SOAP call's path (see
:meth:`provider.db.session.Database.driver_transaction`): SQLAlchemy's cost per executed
statement (compiling from its cache, processing each parameter, building a result) is
larger than SQLite's own for these small inserts. :class:`DriverInsert` does that work
once: the statement's text for the dialect, and for each column the conversion its type
applies before the driver sees a value (a JSON column's ``json.dumps`` text, ``None`` as
JSON ``null`` or SQL ``NULL`` as the type says; a :class:`~provider.db.base.UTCDateTime` as the
dialect stores it). A row inserted here reads back through the ORM exactly as one inserted
by a Core ``insert()`` of the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table
from sqlalchemy.engine import Dialect


def to_driver(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """What ``column``'s type does to a value before the driver sees it, for ``dialect``
    (the identity when nothing)."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


class DriverInsert:
    """``INSERT INTO table (columns) VALUES (...)`` for one dialect, and its driver rows.

    Raises KeyError at construction for a column the table does not have. Only the table's and
    columns' names go into :attr:`sql`; values are always bound.
    """

    def __init__(
        self, table: Table, columns: Sequence[str], dialect: Dialect, *, returning: str | None = None
    ) -> None:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        chosen = [table.c[name] for name in columns]
        self.columns = tuple(columns)
        #: the statement's text: the names of the table and columns, and placeholders
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(c.name for c in chosen)}) "  # noqa: S608
            f"VALUES ({', '.join([mark] * len(chosen))})"
        )
        if returning is not None:
            self.sql += f" RETURNING {table.c[returning].name}"
        self._processors: tuple[Callable[[Any], Any], ...] = tuple(to_driver(c, dialect) for c in chosen)

    def row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """``values`` (by column name: every column of the statement and no other) as the
        driver's parameters.

        Raises KeyError for a missing or an extra column (a value the statement would silently
        leave out), and what the column's type raises for a value it cannot store (TypeError,
        ValueError)."""
        if len(values) != len(self.columns):
            extra = sorted(set(values) - set(self.columns))
            raise KeyError(f"not columns of this insert: {extra}" if extra else "a column is missing")
        return tuple(
            process(value)
            for process, value in zip(self._processors, (values[name] for name in self.columns), strict=True)
        )

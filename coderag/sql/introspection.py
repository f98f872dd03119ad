"""A database's schema as CodeRAG indexes it: tables, columns, types, keys, sample values.

:class:`DatabaseSchema` is what :meth:`coderag.sql.databases.Database.introspect` returns. Its
:meth:`~DatabaseSchema.snippets` are one ``CREATE TABLE`` per table in the database's own dialect (sample
values as ``--`` comment lines), and its :meth:`~DatabaseSchema.fingerprint` changes exactly when those
snippets would, so an index built from it knows when it is stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlglot import exp


@dataclass(frozen=True)
class ColumnSchema:
    """One column: name, declared type (in the database's dialect), nullability, sample values."""

    name: str
    type: str
    nullable: bool = True
    samples: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForeignKey:
    """``columns`` of this table reference ``ref_columns`` of ``ref_table``."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableSchema:
    """A table's columns, primary key and foreign keys."""

    name: str
    columns: tuple[ColumnSchema, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()

    def create_table(self, dialect: str) -> str:
        """The table as one ``CREATE TABLE`` in ``dialect``; sample values follow as ``--`` comment lines."""
        def quote(name: str) -> str:  # quoted only where the dialect needs it
            return exp.to_identifier(name).sql(dialect=dialect)

        lines = [f"  {quote(c.name)} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        if self.primary_key:
            lines.append(f"  PRIMARY KEY ({', '.join(quote(c) for c in self.primary_key)})")
        for fk in self.foreign_keys:
            lines.append(f"  FOREIGN KEY ({', '.join(quote(c) for c in fk.columns)}) REFERENCES "
                         f"{quote(fk.ref_table)} ({', '.join(quote(c) for c in fk.ref_columns)})")
        text = f"CREATE TABLE {quote(self.name)} (\n" + ",\n".join(lines) + "\n);"
        samples = [f"-- {c.name}: {', '.join(c.samples)}" for c in self.columns if c.samples]
        return "\n".join([text, *samples])


@dataclass(frozen=True)
class DatabaseSchema:
    """What :meth:`Database.introspect` read: the tables (sorted by name), the dialect and the source."""

    tables: tuple[TableSchema, ...]
    dialect: str
    source: str
    database: str = ""
    sample_values: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def snippets(self) -> list[str]:
        """One ``CREATE TABLE`` snippet per table, in table-name order (what the index embeds)."""
        return [t.create_table(self.dialect) for t in self.tables]

    def fingerprint(self) -> str:
        """SHA-256 over the dialect and every table's columns, types, keys and samples.

        It changes exactly when the indexed snippets would, so an unchanged fingerprint means re-indexing
        would write the same index.
        """
        payload = {"dialect": self.dialect, "tables": [asdict(t) for t in self.tables]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def to_manifest(self) -> dict[str, Any]:
        """The ``source`` entry of an index manifest built from this schema (no password, ever)."""
        return {"kind": "database", "url": self.source, "dialect": self.dialect, "database": self.database,
                "tables": len(self.tables), "sample_values": self.sample_values,
                "schema_fingerprint": self.fingerprint()}


def sample_text(value: Any, max_chars: int = 40) -> str:
    """A sample value as one short line for a snippet (bytes as their length, long text cut)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    text = " ".join(str(value).split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

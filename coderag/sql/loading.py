"""Copy SQLite databases into PostgreSQL or MariaDB/MySQL (Spider's dev databases, for EX on a real server).

SQLite types are declarations, not constraints, so each column's type is mapped by SQLite's affinity
rules and then checked against the values it actually holds:

==============================  =====================  ==========================  ==========================
SQLite declaration (affinity)   values                 PostgreSQL                  MariaDB/MySQL
==============================  =====================  ==========================  ==========================
``INT`` in the name             all integers           ``BIGINT``                  ``BIGINT``
``REAL``/``FLOA``/``DOUB``      all numbers            ``DOUBLE PRECISION``        ``DOUBLE``
``NUMERIC``/``DECIMAL``/        integers / numbers     ``BIGINT`` / ``DOUBLE``     ``BIGINT`` / ``DOUBLE``
``BOOL``/``DATE``... (numeric)  anything else          text                        text
``CHAR``/``CLOB``/``TEXT``      anything               ``TEXT COLLATE "C"``        ``VARCHAR(n)`` / ``TEXT``,
                                                                                   ``utf8mb4_bin``
``BLOB`` or none                bytes / mixed          ``BYTEA`` / text            ``LONGBLOB`` / text
==============================  =====================  ==========================  ==========================

A column whose values do not fit its mapped type (``''`` in an ``INT`` column) falls back to ``DOUBLE``
or text, and the fallback is reported. Text compares and sorts byte-wise (``"C"`` / ``utf8mb4_bin``), as
SQLite's default ``BINARY`` collation does. Table and column names are lower-cased, because both servers
fold (PostgreSQL) or match (MariaDB on Linux) unquoted names so. Primary keys are kept when their values
are unique and not null; foreign keys are not created (Spider's data breaks some of them) and are counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderag.sql.databases import DatabaseError, parse_database_url
from coderag.sql.execution import open_sqlite_readonly

_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class CopyReport:
    """What :func:`copy_sqlite_database` did: tables and rows copied, type fallbacks, keys left out."""

    source: str
    target: str
    tables: int = 0
    rows: int = 0
    fallbacks: list[str] = field(default_factory=list)
    primary_keys_dropped: list[str] = field(default_factory=list)
    foreign_keys_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _affinity(declared: str) -> str:
    """SQLite's type affinity of a declared type (https://sqlite.org/datatype3.html, section 3.1)."""
    text = (declared or "").upper()
    if "INT" in text:
        return "integer"
    if any(word in text for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in text or not text:
        return "blob"
    if any(word in text for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _kind_of(declared: str, values: list[Any]) -> str:
    """``integer``, ``real``, ``text`` or ``blob``: the narrowest server type that holds every value."""
    present = [v for v in values if v is not None]
    affinity = _affinity(declared)
    if affinity == "text":
        return "text"
    if present and all(_is_int(v) for v in present) and affinity in ("integer", "numeric", "blob"):
        return "integer"
    if present and all(_is_int(v) or isinstance(v, float) for v in present) and affinity != "blob":
        return "real"
    if not present:
        return {"integer": "integer", "real": "real", "numeric": "real"}.get(affinity, "text")
    if affinity == "blob" and all(isinstance(v, bytes) for v in present):
        return "blob"
    return "text"


def _column_type(kind: str, backend: str, values: list[Any]):
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql

    if kind == "integer":
        return sa.BigInteger()
    if kind == "real":
        return postgresql.DOUBLE_PRECISION() if backend == "postgresql" else mysql.DOUBLE()
    if kind == "blob":
        return postgresql.BYTEA() if backend == "postgresql" else mysql.LONGBLOB()
    if backend == "postgresql":
        return sa.Text(collation="C")
    longest = max((len(v) for v in values if isinstance(v, str)), default=0)
    if longest <= 255:
        return mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin")
    return mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin")


def _server_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "text":
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, float) and value.is_integer():
            value = repr(value)
        return str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    if kind == "real":
        return float(value)
    return value


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def copy_sqlite_database(sqlite_path: str | Path, target_url: str, *, schema: str | None = None,
                         batch_rows: int = 1000) -> CopyReport:
    """Copy every table and row of a SQLite file into a server database, replacing what was there.

    Args:
        sqlite_path: the SQLite file (opened read-only).
        target_url: PostgreSQL or MariaDB/MySQL SQLAlchemy URL of the target database (must exist).
        schema: PostgreSQL only: the schema to (re)create and fill (lower-case letters, digits, ``_``);
            MariaDB/MySQL: ignored, the URL's database is emptied and filled.
        batch_rows: rows per INSERT batch.

    Returns:
        A :class:`CopyReport`.

    Raises:
        DatabaseError: the URL is not PostgreSQL or MariaDB/MySQL, the schema name is unsafe, two names
            collide once lower-cased, or the server refuses.

    Example:
        >>> copy_sqlite_database("database/singer/singer.sqlite", "postgresql:///spider", schema="singer")  # doctest: +SKIP
        CopyReport(source='singer.sqlite', target='postgresql:///spider', tables=2, rows=14, ...)
    """
    import sqlalchemy as sa

    url = parse_database_url(target_url)
    backend = url.get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb"):
        raise DatabaseError("copy_sqlite_database copies into PostgreSQL or MariaDB/MySQL, not SQLite")
    if backend == "postgresql" and (schema is None or not _SAFE_NAME.match(schema)):
        raise DatabaseError(f"PostgreSQL schema name {schema!r} must be lower-case letters, digits and _")
    source = open_sqlite_readonly(sqlite_path)
    source.text_factory = _lenient_text  # some Spider databases hold bytes that are not UTF-8
    report = CopyReport(source=Path(sqlite_path).name, target=url.render_as_string(hide_password=True))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        tables = [name for (name,) in source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        lowered = [t.lower() for t in tables]
        if len(set(lowered)) != len(lowered):
            raise DatabaseError(f"{report.source} has tables whose names differ only in case: cannot copy")
        metadata = sa.MetaData(schema=schema if backend == "postgresql" else None)
        contents = []
        for table in tables:
            info = source.execute(f'PRAGMA table_info("{table}")').fetchall()  # cid, name, type, notnull, dflt, pk
            rows = source.execute(f'SELECT * FROM "{table}"').fetchall()
            names = [column[1].lower() for column in info]
            if len(set(names)) != len(names):
                raise DatabaseError(f"{report.source}: table {table} has columns that differ only in case")
            kinds, columns = [], []
            pk_columns = [c[1].lower() for c in sorted(info, key=lambda c: c[5]) if c[5]]
            pk_ok = bool(pk_columns) and len({tuple(r[names.index(c)] for c in pk_columns) for r in rows}) == len(rows) \
                and all(r[names.index(c)] is not None for r in rows for c in pk_columns)
            if pk_columns and not pk_ok:
                report.primary_keys_dropped.append(f"{table}({', '.join(pk_columns)})")
            for i, column in enumerate(info):
                values = [row[i] for row in rows]
                kind = _kind_of(column[2], values)
                if _affinity(column[2]) == "integer" and kind != "integer" and any(v is not None for v in values):
                    report.fallbacks.append(f"{table}.{column[1]} {column[2] or '(none)'} -> {kind}")
                elif _affinity(column[2]) == "real" and kind == "text":
                    report.fallbacks.append(f"{table}.{column[1]} {column[2]} -> text")
                kinds.append(kind)
                column_type = _column_type(kind, backend, values)
                if kind == "text" and pk_ok and names[i] in pk_columns and backend != "postgresql":
                    column_type = _column_type("text", backend, [""])  # a key must be a VARCHAR in MariaDB
                columns.append(sa.Column(names[i], column_type, primary_key=pk_ok and names[i] in pk_columns,
                                         autoincrement=False))
            report.foreign_keys_skipped += len(source.execute(f'PRAGMA foreign_key_list("{table}")').fetchall())
            table_obj = sa.Table(table.lower(), metadata, *columns)
            contents.append((table_obj, [dict(zip(names, (_server_value(v, k) for v, k in zip(row, kinds))))
                                         for row in rows]))
        with engine.begin() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            else:
                for table_obj, _ in contents:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table_obj.name}`")
            metadata.create_all(conn)
            for table_obj, rows in contents:
                for start in range(0, len(rows), batch_rows):
                    conn.execute(table_obj.insert(), rows[start : start + batch_rows])
                report.tables += 1
                report.rows += len(rows)
    except sa.exc.SQLAlchemyError as exc:
        reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseError(f"copying {report.source} into {report.target} failed: {reason}") from None
    finally:
        source.close()
        engine.dispose()
    return report


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` when it is missing; its URL is returned.

    Args:
        server_url: any PostgreSQL or MariaDB/MySQL URL on that server (its database is only used to connect).
        name: the database to create (lower-case letters, digits, ``_``).

    Returns:
        ``server_url`` with its database set to ``name``.

    Example:
        >>> ensure_database("postgresql:///postgres", "spider")  # doctest: +SKIP
        'postgresql:///spider'
    """
    import sqlalchemy as sa

    if not _SAFE_NAME.match(name):
        raise DatabaseError(f"database name {name!r} must be lower-case letters, digits and _")
    url = parse_database_url(server_url)
    backend = url.get_backend_name()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                exists = conn.exec_driver_sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").first()
                if exists is None:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 "
                                     "COLLATE utf8mb4_bin")
    except sa.exc.SQLAlchemyError as exc:
        reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseError(f"cannot create database {name} ({reason})") from None
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)

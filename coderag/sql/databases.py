"""Databases by SQLAlchemy URL: SQLite files, PostgreSQL and MariaDB/MySQL, read-only at the database.

A :class:`Database` wraps one URL (``sqlite:///file.sqlite``, ``postgresql://user@host/db``,
``mysql+pymysql://user@host/db``) and runs one query at a time with the database itself refusing writes,
so a query that slipped past :func:`coderag.sql.guard.sql_guard` still cannot change anything:

=============  ==============================================  =========================================
database       read-only                                       per-statement time limit
=============  ==============================================  =========================================
SQLite         file opened ``mode=ro`` + a read-only authorizer progress-handler deadline
PostgreSQL     ``SET TRANSACTION READ ONLY``, always rolled     ``SET LOCAL statement_timeout``
               back; the statement is sent as a prepared
               statement, so ``COMMIT; INSERT ...`` is refused
MariaDB/MySQL  ``SET SESSION TRANSACTION READ ONLY`` then       ``max_statement_time`` (MariaDB) /
               ``START TRANSACTION READ ONLY``, rolled back;    ``MAX_EXECUTION_TIME`` (MySQL)
               one statement per call (no multi-statements)
=============  ==============================================  =========================================

Every call also caps the rows and bytes it reads back, and server connections come from a bounded pool
(``pool_size`` + ``max_overflow``, ``pool_timeout_s`` to wait for one). In production connect as a
read-only role as well (README: "Real databases"); the transaction settings above are the second line.

:meth:`Database.introspect` reads tables, columns, types, primary and foreign keys (and optionally a few
sample values per column) into a :class:`~coderag.sql.introspection.DatabaseSchema` (one
``CREATE TABLE`` snippet per table and a schema fingerprint: :mod:`coderag.sql.introspection`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from coderag.errors import CodeRAGError, ConfigError
from coderag.sql.execution import QueryTimeout, SqlExecutionError, open_sqlite_readonly, run_query
from coderag.sql.introspection import ColumnSchema, DatabaseSchema, ForeignKey, TableSchema, sample_text

log = logging.getLogger(__name__)

# SQLAlchemy backend name -> (sqlglot dialect, how a person names it).
DIALECTS: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "SQLite"),
    "postgresql": ("postgres", "PostgreSQL"),
    "mysql": ("mysql", "MySQL"),
    "mariadb": ("mysql", "MariaDB"),
}
# sqlglot dialect -> how the prompt names it (for callers that only know the sqlglot name).
DIALECT_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MySQL"}
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_POSTGRES_TIMEOUT = "57014"  # query_canceled
_MYSQL_TIMEOUTS = {1969, 3024}  # MariaDB max_statement_time, MySQL MAX_EXECUTION_TIME
_URL_HINT = "sqlite:///file.sqlite, postgresql://user@host/db or mysql+pymysql://user@host/db"


class DatabaseError(CodeRAGError):
    """A database URL is malformed, names an unsupported backend, or the database cannot be reached."""


def parse_database_url(url: Any):
    """``url`` as a :class:`sqlalchemy.engine.URL`, or :class:`DatabaseError` saying what is wrong.

    Args:
        url: an SQLAlchemy URL string (``sqlite:///file``, ``postgresql://...``, ``mysql+pymysql://...``).

    Returns:
        The parsed URL.

    Raises:
        DatabaseError: not a string, not a URL, or a backend other than SQLite, PostgreSQL, MariaDB/MySQL.

    Example:
        >>> parse_database_url("postgresql://reader@db.internal/shop").get_backend_name()
        'postgresql'
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or not url.strip():
        raise DatabaseError(f"the database URL is empty: pass an SQLAlchemy URL such as {_URL_HINT}")
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise DatabaseError(f"{url.split('://')[0]!r}... is not a database URL: use {_URL_HINT}") from None
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise DatabaseError(f"database backend {backend!r} is not supported: use {_URL_HINT}")
    if backend == "sqlite" and not parsed.database:
        raise DatabaseError("a sqlite URL needs a file (sqlite:///path/to/file.sqlite); in-memory databases "
                            "hold nothing to query")
    return parsed


def transpile_sql(sql: str, target: str, source: str = "sqlite") -> str:
    """``sql`` rewritten from ``source`` into the ``target`` sqlglot dialect (unchanged when they agree).

    Args:
        sql: one query.
        target: the sqlglot dialect of the database it will run on (``postgres``, ``mysql``, ``sqlite``).
        source: the dialect it was written in.

    Returns:
        The transpiled query.

    Raises:
        SqlExecutionError: sqlglot cannot read or write it (the message names the dialects).

    Example:
        >>> transpile_sql("SELECT name FROM singer ORDER BY age LIMIT 3", "postgres")
        'SELECT name FROM singer ORDER BY age NULLS FIRST LIMIT 3'
    """
    if target == source:
        return sql
    try:
        out = sqlglot.transpile(sql, read=source, write=target, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqlExecutionError(f"cannot transpile the SQL from {source} to {target}: {first}") from exc
    if len(out) != 1:
        raise SqlExecutionError(f"cannot transpile the SQL from {source} to {target}: expected one statement, "
                                f"found {len(out)}")
    return out[0]


def _value_bytes(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(bytes(value))
    if isinstance(value, str):
        return len(value.encode("utf-8", errors="replace"))
    return 8


class Database:
    """One database reached by SQLAlchemy URL; every query runs read-only with a time, row and byte cap.

    Args:
        url: SQLAlchemy URL (``sqlite:///file.sqlite``, ``postgresql://...``, ``mysql+pymysql://...``).
        name: a label for messages (default: the URL without its password).
        pool_size: server connections kept open.
        max_overflow: extra connections allowed under load, closed when returned.
        pool_timeout_s: how long a caller waits for a free connection before failing.
        connect_timeout_s: how long opening a connection may take.
        show_reasons: put the driver's reason for a failed connection in the error; a service turns it
            off, because the reason names hosts and ports (it is logged instead).

    Raises:
        DatabaseError: the URL is malformed or its backend is unsupported, or the driver is missing.

    Example:
        >>> db = Database("sqlite:///concert_singer.sqlite")  # doctest: +SKIP
        >>> db.run_query("SELECT count(*) FROM singer")  # doctest: +SKIP
        [(6,)]
    """

    def __init__(self, url: str, *, name: str | None = None, pool_size: int = 4, max_overflow: int = 4,
                 pool_timeout_s: float = 10.0, connect_timeout_s: float = 10.0, show_reasons: bool = True) -> None:
        self.url = parse_database_url(url)
        self.backend = self.url.get_backend_name()
        self.dialect, self._label = DIALECTS[self.backend]
        self.source = self.url.render_as_string(hide_password=True)
        self.name = name or self.source
        self._engine = None
        self._engine_lock = threading.Lock()
        self._pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s}
        self._connect_timeout_s = connect_timeout_s
        self._show_reasons = show_reasons
        if self.backend == "sqlite":
            self.path = Path(self.url.database)

    def __repr__(self) -> str:
        return f"Database({self.source!r})"

    @property
    def engine(self):
        """The SQLAlchemy engine (created on first use; for SQLite it opens the file read-only)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self):
        import sqlalchemy as sa

        if self.backend == "sqlite":
            return sa.create_engine("sqlite://", creator=lambda: open_sqlite_readonly(self.path),
                                    poolclass=sa.pool.NullPool)
        connect_args: dict[str, Any] = {"connect_timeout": int(max(1, self._connect_timeout_s))}
        try:
            return sa.create_engine(self.url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args,
                                    **self._pool)
        except ModuleNotFoundError as exc:
            raise DatabaseError(f"the driver for {self.label} is not installed ({exc.name}): "
                                "`pip install psycopg[binary] pymysql` (scripts/install.sh does)") from None

    @property
    def is_mariadb(self) -> bool:
        """True for a MariaDB server (a ``mysql://`` URL does not say: the first connection tells)."""
        if self.backend == "mariadb":
            return True
        if self.backend != "mysql":
            return False
        if getattr(self.engine.dialect, "server_version_info", None) is None:
            try:
                self.check()
            except CodeRAGError:
                return False
        return bool(getattr(self.engine.dialect, "is_mariadb", False))

    @property
    def label(self) -> str:
        """How a person (and the prompt) names the database: SQLite, PostgreSQL, MariaDB or MySQL."""
        return "MariaDB" if self.is_mariadb else self._label

    def close(self) -> None:
        """Close every pooled connection."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _raw_connection(self):
        try:
            return self.engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 - drivers raise their own errors
            reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("cannot connect to database %s: %s", self.name, reason)
            shown = f" ({reason})" if self._show_reasons else ""
            raise DatabaseError(f"cannot connect to {self._label} database {self.name}{shown}: check that it "
                                "runs and that the URL's host, database and user are right") from None

    def check(self) -> None:
        """Connect once (and run ``SELECT 1``); :class:`DatabaseError` with the reason when that fails."""
        self.run_query("SELECT 1", timeout_s=self._connect_timeout_s)

    def run_query(self, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10_000,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> list[tuple]:
        """All rows ``sql`` returns, read-only at the database, within ``timeout_s`` seconds.

        The statement runs in a read-only transaction that is always rolled back (SQLite: a read-only
        file under a read-only authorizer), so a write is refused by the database even when the guard
        was bypassed. Only one statement is accepted.

        Args:
            sql: one SQL statement in this database's dialect.
            timeout_s: per-statement time limit, enforced by the server (must be positive).
            max_rows: most rows accepted.
            max_bytes: most bytes of values accepted (text as UTF-8, numbers as 8).

        Returns:
            The result rows as tuples.

        Raises:
            QueryTimeout: the statement ran past ``timeout_s``.
            SqlExecutionError: the database refused or failed the statement, or too many rows/bytes.
            DatabaseError: no connection could be opened.
            ValueError: ``timeout_s`` is not positive.

        Example:
            >>> Database("postgresql:///test").run_query("SELECT 1 + 1")  # doctest: +SKIP
            [(2,)]
        """
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if self.backend == "sqlite":
            conn = open_sqlite_readonly(self.path)
            try:
                rows = run_query(conn, sql, timeout_s=timeout_s, max_rows=max_rows)
            finally:
                conn.close()
            self._check_bytes(rows, max_bytes)
            return rows
        raw = self._raw_connection()
        try:
            cursor = raw.cursor()
            try:
                self._begin_read_only(cursor, timeout_s)
                if self.backend == "postgresql":
                    # A prepared statement holds exactly one command: "COMMIT; INSERT ..." cannot escape.
                    cursor.execute(sql, prepare=True)
                else:
                    cursor.execute(sql)  # no parameters: the text is sent as it is ('%' needs no escaping)
                rows = self._fetch(cursor, max_rows, max_bytes)
            finally:
                cursor.close()
            return rows
        except (QueryTimeout, SqlExecutionError):
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error becomes one sentence
            raise self._execution_error(exc, timeout_s) from exc
        finally:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - a broken connection is dropped by the pool
                raw.invalidate()
            raw.close()

    def _begin_read_only(self, cursor, timeout_s: float) -> None:
        if self.backend == "postgresql":
            # psycopg opens the transaction implicitly; READ ONLY must be its first statement.
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            return
        # The session default matters too: DDL implicitly commits the transaction in MySQL/MariaDB and
        # would run in a fresh one; with the session READ ONLY it is refused as well.
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        if self.is_mariadb:
            cursor.execute(f"SET SESSION max_statement_time = {timeout_s:.3f}")
        else:
            cursor.execute(f"SET SESSION MAX_EXECUTION_TIME = {max(1, int(timeout_s * 1000))}")
        cursor.execute("START TRANSACTION READ ONLY")

    def _fetch(self, cursor, max_rows: int, max_bytes: int) -> list[tuple]:
        if cursor.description is None:
            return []  # a statement without a result (SET, a refused write never gets here)
        rows: list[tuple] = []
        size = 0
        while True:
            chunk = cursor.fetchmany(500)
            if not chunk:
                return rows
            for row in chunk:
                rows.append(tuple(row))
                size += sum(_value_bytes(v) for v in row)
                if len(rows) > max_rows:
                    raise SqlExecutionError(f"the query returned more than {max_rows} rows: add a LIMIT or a "
                                            "filter.")
                if size > max_bytes:
                    raise SqlExecutionError(f"the query returned more than {max_bytes} bytes: select fewer "
                                            "columns or add a LIMIT.")

    @staticmethod
    def _check_bytes(rows: list[tuple], max_bytes: int) -> None:
        if sum(_value_bytes(v) for row in rows for v in row) > max_bytes:
            raise SqlExecutionError(f"the query returned more than {max_bytes} bytes: select fewer columns or "
                                    "add a LIMIT.")

    def _execution_error(self, exc: Exception, timeout_s: float) -> SqlExecutionError:
        label = self.label
        sqlstate = getattr(exc, "sqlstate", None)
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if sqlstate == _POSTGRES_TIMEOUT or code in _MYSQL_TIMEOUTS:
            return QueryTimeout(f"the query ran longer than {timeout_s:g} s and was stopped.")
        if code is not None and len(exc.args) > 1:
            message = f"({code}) {exc.args[1]}"
        else:
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return SqlExecutionError(f"{label} error: {message}")

    def introspect(self, sample_values: int = 0, *, timeout_s: float = 30.0) -> DatabaseSchema:
        """Tables, columns, types, primary and foreign keys of the default schema, optionally with samples.

        Args:
            sample_values: distinct non-null values to read per column (0: none). Samples go into the
                snippets (as comments) and so into the fingerprint.
            timeout_s: time limit of each sample query.

        Returns:
            A :class:`DatabaseSchema` (tables sorted by name, columns in table order).

        Raises:
            DatabaseError: the database cannot be reached or holds no table.

        Example:
            >>> schema = Database("postgresql:///test").introspect(sample_values=3)  # doctest: +SKIP
            >>> print(schema.snippets()[0])  # doctest: +SKIP
        """
        import sqlalchemy as sa
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(sample_values, bool) or not isinstance(sample_values, int) or sample_values < 0:
            raise ConfigError(f"sample values per column must be a whole number >= 0, got {sample_values!r}")
        try:
            inspector = sa.inspect(self.engine)
            names = sorted(inspector.get_table_names())
            tables = []
            for table in names:
                pk = tuple(inspector.get_pk_constraint(table).get("constrained_columns") or ())
                fks = tuple(ForeignKey(tuple(fk["constrained_columns"]), fk["referred_table"],
                                       tuple(fk["referred_columns"])) for fk in inspector.get_foreign_keys(table))
                columns = []
                for column in inspector.get_columns(table):
                    try:
                        type_text = column["type"].compile(dialect=self.engine.dialect)
                    except Exception:  # noqa: BLE001 - a type SQLAlchemy cannot render keeps its name
                        type_text = str(type(column["type"]).__name__).upper()
                    samples = self._samples(table, column["name"], sample_values, timeout_s) if sample_values else ()
                    columns.append(ColumnSchema(column["name"], type_text, bool(column.get("nullable", True)),
                                                samples))
                tables.append(TableSchema(table, tuple(columns), pk, fks))
            database = self.url.database or ""
            if self.backend == "postgresql":
                database = f"{database}.{inspector.default_schema_name}"
        except SQLAlchemyError as exc:
            reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseError(f"cannot read the schema of {self.label} database {self.name} ({reason}): "
                                "check the URL and that the user may read the catalog") from None
        if not tables:
            raise DatabaseError(f"{self.label} database {self.name} holds no tables: nothing to index")
        return DatabaseSchema(tuple(tables), self.dialect, self.source, database=Path(database).stem
                              if self.backend == "sqlite" else database, sample_values=sample_values)

    def _samples(self, table: str, column: str, n: int, timeout_s: float) -> tuple[str, ...]:
        table_q, column_q = quote_identifiers([table, column], self.dialect)
        sql = (f"SELECT DISTINCT {column_q} FROM {table_q} WHERE {column_q} IS NOT NULL "
               f"ORDER BY 1 LIMIT {int(n)}")
        try:
            rows = self.run_query(sql, timeout_s=timeout_s, max_rows=n)
        except SqlExecutionError as exc:  # e.g. a type without ordering: index the column without samples
            log.warning("no sample values for %s.%s (%s)", table, column, exc)
            return ()
        return tuple(sample_text(row[0]) for row in rows)


def open_database(target: str | Path, **options: Any) -> Database:
    """A :class:`Database` from a URL, or from a SQLite file path (what ``--db`` took before URLs).

    Args:
        target: an SQLAlchemy URL (``postgresql://...``) or the path of an existing SQLite file.
        **options: passed to :class:`Database`.

    Returns:
        The database (nothing is connected yet, except that a SQLite file must exist).

    Raises:
        DatabaseError: the URL is not supported, or the SQLite file does not exist.

    Example:
        >>> open_database("postgresql:///test").dialect
        'postgres'
    """
    text = str(target)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise DatabaseError(f"SQLite database {path} does not exist: pass an existing file or a URL "
                                f"({_URL_HINT})")
        return Database(f"sqlite:///{path.resolve()}", name=str(path), **options)
    database = Database(text, **options)
    if database.backend == "sqlite" and not database.path.is_file():
        raise DatabaseError(f"SQLite database {database.path} does not exist: check the sqlite:/// URL")
    return database


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


class DatabaseRegistry:
    """Databases by name for a service: the names a request may use, the URLs (secrets) only here.

    Args:
        urls: name -> SQLAlchemy URL. Names are letters, digits, ``_`` and ``-``.
        **options: passed to every :class:`Database` (pool sizes, timeouts).

    Raises:
        ConfigError: a name is malformed or a URL is not a supported database URL (the URL is not echoed).

    Example:
        >>> registry = DatabaseRegistry({"shop": "postgresql://reader@db/shop"})
        >>> registry.names()
        ['shop']
    """

    def __init__(self, urls: Mapping[str, str], **options: Any) -> None:
        self._databases: dict[str, Database] = {}
        for name, url in dict(urls).items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(f"database name {name!r} is not allowed: use letters, digits, _ and - "
                                  "(at most 63, starting with a letter)")
            try:
                self._databases[name] = Database(url, name=name, **options)
            except DatabaseError as exc:
                # The URL may hold a password: name the entry, not the URL.
                message = str(exc).split(":")[0]
                raise ConfigError(f"database {name!r}: {message}; check its URL in the databases setting") from None

    @classmethod
    def from_json(cls, text: str | None, **options: Any) -> DatabaseRegistry:
        """A registry from a JSON object ``{"name": "url", ...}`` (empty or None: no databases)."""
        if text is None or not text.strip():
            return cls({}, **options)
        try:
            urls = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError('the databases setting is not JSON: write {"name": "postgresql://..."}') from None
        if not isinstance(urls, dict) or not all(isinstance(v, str) for v in urls.values()):
            raise ConfigError('the databases setting must be a JSON object of name -> URL strings')
        return cls(urls, **options)

    @classmethod
    def parse(cls, text: str | None, **options: Any) -> DatabaseRegistry:
        """A registry from a setting: a JSON object, or ``NAME=URL[,NAME=URL...]`` where a bare path is a
        SQLite file; every SQLite entry's file must exist.

        Raises:
            ConfigError: an entry is not ``NAME=URL``, a URL is unsupported, or a SQLite file is missing.

        Example:
            >>> DatabaseRegistry.parse("shop=postgresql://reader@db/shop").names()
            ['shop']
        """
        text = (text or "").strip()
        if text and not text.startswith("{"):
            pairs = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                name, sep, url = item.partition("=")
                if not sep or not name.strip() or not url.strip():
                    raise ConfigError(f"invalid setting databases: {name.strip() or item!r} is not NAME=URL")
                url = url.strip()
                pairs[name.strip()] = url if "://" in url else f"sqlite:///{Path(url).absolute()}"
            text = json.dumps(pairs)
        registry = cls.from_json(text, **options)
        for name in registry.names():
            database = registry.get(name)
            if database.backend == "sqlite" and not database.path.is_file():
                raise ConfigError(f"invalid setting databases: database {name!r} is not a file")
        return registry

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._databases)

    def get(self, name: str) -> Database:
        """The database called ``name``; :class:`ConfigError` listing the known names otherwise."""
        database = self._databases.get(name) if isinstance(name, str) else None
        if database is None:
            known = ", ".join(self.names()) or "none are configured"
            raise ConfigError(f"unknown database {name!r}: use one of the registered names ({known})")
        return database

    def close(self) -> None:
        """Close every database's pool."""
        for database in self._databases.values():
            database.close()


def dialect_label(dialect: str) -> str:
    """How a prompt names a sqlglot dialect (``postgres`` -> ``PostgreSQL``); unknown names pass through."""
    return DIALECT_LABELS.get(dialect, dialect)


def quote_identifiers(names: Sequence[str], dialect: str) -> list[str]:
    """``names`` quoted for ``dialect`` (used by the Spider loader's DDL)."""
    return [exp.to_identifier(n, quoted=True).sql(dialect=dialect) for n in names]

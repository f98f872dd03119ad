"""Running SQL on SQLite safely: in-memory databases from a record's context, read-only files, limits.

Queries run under an SQLite authorizer that only lets reads through (defence in depth behind
:func:`coderag.sql.guard.sql_guard`) and a progress-handler deadline, so a runaway query (an unbounded
recursive CTE, a huge cross join) is interrupted instead of hanging the caller.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.request import pathname2url

from coderag.errors import CodeRAGError
from coderag.sql.guard import FORBIDDEN_FUNCTIONS


class SqlContextError(CodeRAGError):
    """A record's ``sql_context`` (CREATE TABLE + INSERT statements) does not build a database."""


class SqlExecutionError(CodeRAGError):
    """A query failed on SQLite, was denied by the authorizer, or returned too many rows."""


class QueryTimeout(SqlExecutionError):
    """A query ran past its time limit and was interrupted."""


# sqlite3 authorizer action codes that only read (see https://sqlite.org/c3ref/c_alter_table.html).
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
# How many SQLite VM instructions run between two deadline checks: cheap, yet well under a millisecond.
_PROGRESS_STEPS = 1000


def _calls_forbidden_function(action: int, arg2) -> bool:
    # For SQLITE_FUNCTION, arg2 is the function's name.
    return action == sqlite3.SQLITE_FUNCTION and str(arg2 or "").lower() in FORBIDDEN_FUNCTIONS


def _read_only_authorizer(action: int, arg1, arg2, _db_name, _trigger) -> int:
    if action not in _READ_ACTIONS or _calls_forbidden_function(action, arg2):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _context_authorizer(action: int, _arg1, arg2, _db_name, _trigger) -> int:
    """A context may build tables and rows in its own database, never reach a file or an extension."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) or _calls_forbidden_function(action, arg2):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _set_deadline(conn: sqlite3.Connection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    # A non-zero return from the handler makes SQLite abort the statement with "interrupted".
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)


def sqlite_from_context(sql_context: str, *, timeout_s: float = 10.0) -> sqlite3.Connection:
    """A fresh in-memory SQLite database holding the tables and rows that ``sql_context`` creates.

    The context is often untrusted (a request's body), so it stays inside that in-memory database: no
    ATTACH, no ``VACUUM INTO`` a file (attached databases are limited to 0), no forbidden functions.
    Raises :class:`SqlContextError` naming SQLite's complaint when the context is empty or broken.

    Args:
        sql_context: CREATE TABLE (and INSERT) statements.
        timeout_s: time limit for building the database, in seconds.

    Returns:
        An open ``sqlite3.Connection`` (the caller closes it).

    Raises:
        SqlContextError: the context is empty, fails on SQLite, runs past ``timeout_s`` or tries ATTACH.

    Example:
        >>> conn = sqlite_from_context("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
        >>> run_query(conn, "SELECT count(*) FROM t")
        [(2,)]
    """
    if not isinstance(sql_context, str) or not sql_context.strip():
        raise SqlContextError("the sql_context is empty: it must hold CREATE TABLE (and INSERT) statements.")
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_context_authorizer)
    _set_deadline(conn, timeout_s)
    try:
        conn.executescript(sql_context)
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:  # ValueError: NUL or unencodable text
        conn.close()
        message = str(exc)
        if "interrupted" in message:
            reason = f"ran longer than {timeout_s:g} s"
        elif "attached databases" in message or "not authorized" in message or "authorization denied" in message:
            reason = "it may only create tables and insert rows; ATTACH, DETACH and VACUUM INTO are refused"
        elif isinstance(exc, ValueError):
            reason = "it holds a NUL character or text that is not valid Unicode"
        else:
            reason = message
        raise SqlContextError(f"the sql_context does not build an SQLite database ({reason}): fix its "
                              "CREATE TABLE / INSERT statements.") from exc
    conn.set_progress_handler(None, 0)
    conn.set_authorizer(None)
    return conn


def open_sqlite_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an existing SQLite file read-only (URI ``mode=ro``); :class:`SqlContextError` if absent.

    Args:
        path: the ``.sqlite`` file.

    Returns:
        A read-only ``sqlite3.Connection`` (the caller closes it).

    Raises:
        SqlContextError: the file does not exist or cannot be opened.

    Example:
        >>> conn = open_sqlite_readonly("database/concert_singer/concert_singer.sqlite")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise SqlContextError(f"SQLite database {path} does not exist: check the dataset's database folder.")
    try:
        return sqlite3.connect(f"file:{pathname2url(str(path.resolve()))}?mode=ro", uri=True,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise SqlContextError(f"SQLite database {path} cannot be opened read-only ({exc}).") from exc


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = 5.0, max_rows: int = 10_000,
              *, read_only: bool = True) -> list[tuple]:
    """All rows ``sql`` returns on ``conn``, within ``timeout_s`` seconds.

    With ``read_only`` (the default) an authorizer denies anything but reads. Raises
    :class:`QueryTimeout` past the limit and :class:`SqlExecutionError` on an SQLite error, a denied
    action, or more than ``max_rows`` rows. ``read_only=False`` is for trusted SQL only (e.g. gold DML
    checked on a throw-away database).

    Args:
        conn: an open SQLite connection.
        sql: one SQL statement.
        timeout_s: time limit in seconds (must be positive).
        max_rows: the most rows accepted.
        read_only: deny every action but reads.

    Returns:
        The result rows as tuples.

    Raises:
        QueryTimeout: the query ran past ``timeout_s``.
        SqlExecutionError: SQLite failed, the authorizer denied an action, or too many rows came back.
        ValueError: ``timeout_s`` is not positive.

    Example:
        >>> conn = sqlite_from_context("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
        >>> run_query(conn, "SELECT a FROM t ORDER BY a")
        [(1,), (2,)]
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if read_only:
        conn.set_authorizer(_read_only_authorizer)
    _set_deadline(conn, timeout_s)
    try:
        cursor = conn.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            raise SqlExecutionError(f"the query returned more than {max_rows} rows: add a LIMIT or a filter.")
        if not read_only:
            conn.commit()
        return rows
    except (sqlite3.Error, sqlite3.Warning) as exc:
        message = str(exc)
        if "interrupted" in message:
            raise QueryTimeout(f"the query ran longer than {timeout_s:g} s and was stopped.") from exc
        if "not authorized" in message:
            raise SqlExecutionError(f"the read-only authorizer denied the query ({message}).") from exc
        raise SqlExecutionError(f"SQLite error: {message}") from exc
    finally:
        conn.set_progress_handler(None, 0)
        if read_only:
            conn.set_authorizer(None)

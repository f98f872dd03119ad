"""Real SQLite: databases from a record's context, the read-only authorizer, the time limit."""

from __future__ import annotations

import sqlite3

import pytest

from coderag.sql.execution import (
    QueryTimeout,
    SqlContextError,
    SqlExecutionError,
    open_sqlite_readonly,
    run_query,
    sqlite_from_context,
)

CONTEXT = ("CREATE TABLE orders (order_id INTEGER, customer TEXT, total REAL);"
           "INSERT INTO orders VALUES (1, 'ann', 10.5), (2, 'bob', 20.0), (3, 'ann', 4.5);")


@pytest.fixture()
def conn():
    connection = sqlite_from_context(CONTEXT)
    yield connection
    connection.close()


def test_context_builds_a_database_with_rows(conn):
    assert run_query(conn, "SELECT customer, SUM(total) FROM orders GROUP BY customer ORDER BY customer") == [
        ("ann", 15.0), ("bob", 20.0)]


@pytest.mark.parametrize("context", ["", "   ", "CREATE TABLE t (a INT", "INSERT INTO missing VALUES (1)"])
def test_broken_context_is_a_clear_error(context):
    with pytest.raises(SqlContextError, match="sql_context"):
        sqlite_from_context(context)


@pytest.mark.parametrize("context, reason", [
    ("ATTACH DATABASE '{f}' AS p; CREATE TABLE p.t (x INT);", "ATTACH, DETACH and VACUUM INTO are refused"),
    ("CREATE TABLE t (x INT); VACUUM INTO '{f}';", "ATTACH, DETACH and VACUUM INTO are refused"),
    ("CREATE TABLE t (x INT);\x00 INSERT INTO t VALUES (1);", "NUL character or text that is not valid Unicode"),
    ("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('\ud800');", "NUL character or text that is not valid Unicode"),
])
def test_context_cannot_reach_files_or_smuggle_bad_text(tmp_path, context, reason):
    """A request's sql_context stays in its in-memory database: it never creates or touches a file."""
    target = tmp_path / "escaped.db"
    with pytest.raises(SqlContextError, match=reason):
        sqlite_from_context(context.format(f=target))
    assert not target.exists()


@pytest.mark.parametrize("sql", [
    "DELETE FROM orders",
    "INSERT INTO orders VALUES (4, 'cy', 1.0)",
    "UPDATE orders SET total = 0",
    "DROP TABLE orders",
    "CREATE TABLE x (a INT)",
    "CREATE TEMP TABLE x (a INT)",
    "PRAGMA table_info(orders)",
    "ATTACH DATABASE ':memory:' AS other",
    "BEGIN",
    "SELECT load_extension('/tmp/evil.so')",
])
def test_authorizer_blocks_writes_even_without_the_guard(conn, sql):
    with pytest.raises(SqlExecutionError):
        run_query(conn, sql)
    # Nothing changed, and the connection still answers reads afterwards.
    assert run_query(conn, "SELECT COUNT(*), SUM(total) FROM orders") == [(3, 35.0)]


def test_authorizer_denies_outside_reaching_functions_even_when_registered(conn):
    """A connection that has a ``readfile`` (an extension, or a host's own function) still may not call it."""
    conn.create_function("readfile", 1, lambda path: "contents of " + path)
    with pytest.raises(SqlExecutionError, match=r"authorizer denied the query \(not authorized to use function: readfile\)"):
        run_query(conn, "SELECT readfile('/etc/passwd')")
    assert run_query(conn, "SELECT COUNT(*) FROM orders") == [(3,)]


def test_only_one_statement_runs(conn):
    with pytest.raises(SqlExecutionError):
        run_query(conn, "SELECT 1; DELETE FROM orders")
    assert run_query(conn, "SELECT COUNT(*) FROM orders") == [(3,)]


def test_runaway_recursive_cte_is_stopped(conn):
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    with pytest.raises(QueryTimeout, match="longer than"):
        run_query(conn, endless, timeout_s=0.3)
    # The deadline is per call: the next query gets its own full budget.
    assert run_query(conn, "SELECT COUNT(*) FROM orders", timeout_s=0.3) == [(3,)]


def test_max_rows_is_enforced(conn):
    many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n"
    assert len(run_query(conn, many, max_rows=50)) == 50
    with pytest.raises(SqlExecutionError, match="more than 10 rows"):
        run_query(conn, many, max_rows=10)


def test_sql_errors_name_the_problem(conn):
    with pytest.raises(SqlExecutionError, match="no such column"):
        run_query(conn, "SELECT nope FROM orders")


def test_trusted_writes_need_read_only_false(conn):
    run_query(conn, "DELETE FROM orders WHERE customer = 'bob'", read_only=False)
    assert run_query(conn, "SELECT COUNT(*) FROM orders") == [(2,)]


def test_sqlite_file_opens_read_only(tmp_path):
    path = tmp_path / "my db.sqlite"  # a space: the URI must be quoted
    with sqlite3.connect(path) as setup:
        setup.executescript(CONTEXT)
    setup.close()
    conn = open_sqlite_readonly(path)
    assert run_query(conn, "SELECT COUNT(*) FROM orders") == [(3,)]
    with pytest.raises(SqlExecutionError):
        run_query(conn, "DELETE FROM orders", read_only=False)  # the file itself is opened mode=ro
    conn.close()
    with pytest.raises(SqlContextError, match="does not exist"):
        open_sqlite_readonly(tmp_path / "missing.sqlite")

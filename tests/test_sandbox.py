"""The SQL sandbox: real worker processes, real SQLite, real rlimits; each limit with its exact message."""

from __future__ import annotations

import sqlite3
import time

import pytest

from coderag.sql.sandbox import SandboxContextError, SandboxError, SandboxLimits, SandboxQueryError, SqlSandbox

CONTEXT = "CREATE TABLE t (a); INSERT INTO t VALUES (1), (x'ff00'), ('text'), (2.5), (NULL);"


@pytest.fixture(scope="module")
def sandbox():
    return SqlSandbox(SandboxLimits(max_result_bytes=100_000, max_rows=50, max_sessions=2))


def _session(sandbox, seconds: float = 10.0, **source):
    return sandbox.session(deadline=time.monotonic() + seconds).open(**source)


def test_rows_are_json_ready_and_blobs_are_hex(sandbox):
    with _session(sandbox, sql_context=CONTEXT) as session:
        assert session.run("SELECT a FROM t") == [[1], ["\\xff00"], ["text"], [2.5], [None]]
        assert session.run("SELECT count(*) FROM t") == [[5]]  # the context was built once, queried twice


@pytest.mark.parametrize("context, reason", [
    ("PRAGMA hard_heap_limit = 200000", "PRAGMA statements are refused in a context"),
    ("PRAGMA temp_store_directory = '/tmp'", "PRAGMA statements are refused in a context"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "it may only create tables and insert rows; ATTACH, DETACH and VACUUM "
                                         "INTO are refused"),
    ("CREATE TABLE z (b); INSERT INTO z VALUES (zeroblob(100000000));",
     "it builds a string or BLOB larger than 8388608 bytes"),
    ("CREATE TABLE z (x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
     "INSERT INTO z SELECT randomblob(64) FROM c;", "it builds a database larger than 67108864 bytes"),
    ("CREATE TABLE (", 'near "(": syntax error'),
    ("SELECT load_extension('x')", "the function load_extension() is refused"),
])
def test_contexts_that_are_refused(sandbox, context, reason):
    with pytest.raises(SandboxContextError) as info:
        _session(sandbox, sql_context=context)
    assert str(info.value) == reason


@pytest.mark.parametrize("sql, message", [
    ("DELETE FROM t", "the read-only authorizer denied the query (not authorized)."),
    ("PRAGMA writable_schema = 1", "the read-only authorizer denied the query (not authorized)."),
    ("SELECT hex(zeroblob(50000000))", "SQLite error: a value is larger than 8388608 bytes (string or blob too big)."),
    ("SELECT printf('%.60000c', 'a') FROM t", "the result is larger than 100000 bytes: select fewer columns or add a "
                                               "LIMIT."),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 60) SELECT x FROM c",
     "the query returned more than 50 rows: add a LIMIT or a filter."),
    ("SELECT nme FROM t", "SQLite error: no such column: nme"),
])
def test_queries_that_fail_keep_the_session_usable(sandbox, sql, message):
    with _session(sandbox, sql_context=CONTEXT) as session:
        with pytest.raises(SandboxQueryError) as info:
            session.run(sql)
        assert str(info.value) == message
        assert session.run("SELECT count(*) FROM t") == [[5]]


def test_a_query_is_stopped_at_its_timeout(sandbox):
    with _session(sandbox, sql_context=CONTEXT) as session:
        with pytest.raises(SandboxQueryError) as info:
            session.run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
                        timeout_s=0.5)
        assert str(info.value) == "the query ran longer than 0.5 s and was stopped."


def test_one_deadline_covers_the_whole_session(sandbox):
    session = _session(sandbox, seconds=1.0, sql_context=CONTEXT)
    with pytest.raises(SandboxQueryError, match="^the query ran past the request's deadline and was stopped.$"):
        session.run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
                    timeout_s=30)
    with pytest.raises(SandboxQueryError) as info:
        session.run("SELECT 1")
    assert str(info.value) in ("the sandbox session is closed (its deadline passed).",
                               "the request's deadline passed before the query could run.")
    session.close()


def test_memory_limit_stops_the_query_not_the_caller():
    sandbox = SqlSandbox(SandboxLimits(memory_bytes=256 * 2**20, heap_bytes=64 * 2**20))
    with _session(sandbox, sql_context=CONTEXT) as session:
        with pytest.raises(SandboxQueryError) as info:
            session.run("SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                        "LIMIT 2000000) SELECT randomblob(100) AS b FROM c ORDER BY b)")
        assert str(info.value) == "the query needs more memory than the sandbox allows."
        assert session.run("SELECT 1") == [[1]]


def test_registered_database_is_read_only(sandbox, tmp_path):
    path = tmp_path / "demo.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE t (a); INSERT INTO t VALUES (7);")
    conn.close()
    with _session(sandbox, db_path=path) as session:
        assert session.run("SELECT a FROM t") == [[7]]
        with pytest.raises(SandboxQueryError):
            session.run("DELETE FROM t")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    conn.close()


def test_sessions_beyond_the_limit_wait_then_refuse():
    sandbox = SqlSandbox(SandboxLimits(max_sessions=1))
    with _session(sandbox, sql_context=CONTEXT):
        with pytest.raises(SandboxError) as info:
            _session(sandbox, seconds=0.3, sql_context=CONTEXT)
        assert str(info.value) == "the SQL sandbox is busy with other requests: retry shortly"
    with _session(sandbox, sql_context=CONTEXT) as session:  # the slot came back
        assert session.run("SELECT count(*) FROM t") == [[5]]

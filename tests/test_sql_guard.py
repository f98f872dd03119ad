"""The guard allows exactly one read-only query and refuses everything else with a reason."""

from __future__ import annotations

import pytest

from coderag.sql.guard import sql_guard

ALLOWED = [
    ("SELECT 1", "SELECT"),
    ("select a, b from t where c = 2", "SELECT"),
    ("SELECT a FROM t;", "SELECT"),
    ("SELECT name FROM t WHERE name = 'x; DROP TABLE t'", "SELECT"),
    ("SELECT 1 /* ; DROP TABLE x */", "SELECT"),
    ("SELECT 1 -- ; DROP TABLE x", "SELECT"),
    ("WITH c AS (SELECT a FROM t) SELECT COUNT(*) FROM c", "WITH"),
    ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT i FROM n", "WITH"),
    ("SELECT a FROM t UNION SELECT a FROM u ORDER BY 1", "SELECT"),
    ("SELECT a FROM t EXCEPT SELECT a FROM u", "SELECT"),
    ("(SELECT a FROM t)", "SELECT"),
    ("SELECT * FROM t WHERE x IN (SELECT y FROM u) AND EXISTS (SELECT 1 FROM v)", "SELECT"),
    ("SELECT d.name, COUNT(*) FROM t JOIN d ON t.id = d.id GROUP BY 1 HAVING COUNT(*) > 1 LIMIT 3", "SELECT"),
]

REFUSED = [
    ("SELECT 1; DROP TABLE x", "2 statements"),
    ("SELECT 1 --\n; DROP TABLE x", "2 statements"),
    ("SELECT a FROM t; SELECT b FROM u", "2 statements"),
    ("INSERT INTO t VALUES (1)", "INSERT"),
    ("insert into t select * from u", "INSERT"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("delete from t where a = 1", "DELETE"),
    ("/* harmless */ DELETE FROM t", "DELETE"),
    ("DROP TABLE t", "DROP"),
    ("ALTER TABLE t ADD COLUMN b INT", "ALTER"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("CREATE TEMP VIEW v AS SELECT 1", "CREATE"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH"),
    ("DETACH DATABASE x", "DETACH"),
    ("PRAGMA table_info(t)", "PRAGMA"),
    ("pragma writable_schema = 1", "PRAGMA"),
    ("VACUUM", "VACUUM"),
    ("REINDEX", "REINDEX"),
    ("REPLACE INTO t VALUES (1)", "REPLACE"),
    ("TRUNCATE TABLE t", "TRUNCATE"),
    ("GRANT SELECT ON t TO bob", "GRANT"),
    ("BEGIN TRANSACTION", "BEGIN"),
    ("EXPLAIN SELECT 1", "EXPLAIN"),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", "INSERT inside a WITH clause"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "inside a WITH clause"),
    ("SELECT a INTO t2 FROM t", "INTO"),
    ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
    ("VALUES (1)", "VALUES"),
    ("", "no SQL"),
    ("SELECT FROM WHERE ((", "does not parse"),
]


@pytest.mark.parametrize(("sql", "kind"), ALLOWED)
def test_read_only_queries_are_allowed(sql, kind):
    verdict = sql_guard(sql)
    assert verdict.allowed, verdict.reason
    assert verdict.statement_type == kind
    assert verdict.reason.startswith("allowed")


@pytest.mark.parametrize(("sql", "why"), REFUSED)
def test_everything_else_is_refused_with_a_reason(sql, why):
    verdict = sql_guard(sql)
    assert not verdict.allowed
    assert verdict.reason.startswith("refused")
    assert why.lower() in verdict.reason.lower()


def test_verdict_is_json_ready():
    assert sql_guard("DROP TABLE t").to_dict() == {
        "allowed": False, "reason": sql_guard("DROP TABLE t").reason, "statement_type": "DROP"}

"""SQL extraction from LLM replies, parsing and Exact Match normalisation."""

from __future__ import annotations

import pytest

from coderag.sql.text import SqlParseError, extract_sql, normalize_sql, parse_sql, split_statements


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t"),
        ("```SQL\nSELECT a FROM t\n```", "SELECT a FROM t"),
        ("```sqlite\nSELECT a FROM t\n```", "SELECT a FROM t"),
        ("Here you go:\n\n```sql\nSELECT a\nFROM t\nWHERE b = 1;\n```\nThis selects a.",
         "SELECT a\nFROM t\nWHERE b = 1"),
        ("```\nSELECT a FROM t\n```", "SELECT a FROM t"),
        ("```SELECT a FROM t```", "SELECT a FROM t"),
        ("```python\nprint(1)\n```\n```sql\nSELECT 2\n```", "SELECT 2"),
        ("SQL: SELECT a FROM t;", "SELECT a FROM t"),
        ("```sql\nSQL: SELECT a FROM t\n```", "SELECT a FROM t"),
        ("To answer, run SELECT COUNT(*) FROM t WHERE x > 2;\n\nIt counts the rows.",
         "SELECT COUNT(*) FROM t WHERE x > 2"),
        ("SELECT a FROM t\n\nThis query returns a.", "SELECT a FROM t"),
        # Every statement is kept, never only the first: the guard refuses more than one.
        ("```sql\nSELECT 1;\nDROP TABLE x;\n```", "SELECT 1; DROP TABLE x"),
        ("```sql\nDELETE FROM t;\nSELECT a FROM t;\n```", "DELETE FROM t; SELECT a FROM t"),
        ("SELECT count(*) FROM t; DROP TABLE t", "SELECT count(*) FROM t; DROP TABLE t"),
        ("INSERT INTO t VALUES (1); SELECT a FROM t", "INSERT INTO t VALUES (1); SELECT a FROM t"),
        ("```sql\nWITH c AS (SELECT 1 AS n) SELECT n FROM c;;\n```", "WITH c AS (SELECT 1 AS n) SELECT n FROM c"),
        ("```sql\nSELECT name FROM t WHERE name = 'a;b'\n```", "SELECT name FROM t WHERE name = 'a;b'"),
        ("```sql\nSELECT a FROM t WHERE b > 1", "SELECT a FROM t WHERE b > 1"),  # truncated, fence never closed
        ("```sql\nDROP TABLE t;\n```", "DROP TABLE t"),  # extraction does not judge: the guard does
        ("I do not know.", ""),
        ("", ""),
    ],
)
def test_extract_sql(reply, expected):
    assert extract_sql(reply) == expected


def test_split_statements_respects_quotes_and_comments():
    assert split_statements("SELECT ';' -- a;b\n; SELECT /* ; */ 2;") == ["SELECT ';' -- a;b", "SELECT /* ; */ 2"]


def test_parse_sql_returns_one_tree_and_rejects_bad_input():
    assert parse_sql("SELECT a FROM t").key == "select"
    for bad in ("", "   ", "SELECT FROM WHERE (", "SELECT 1; SELECT 2"):
        with pytest.raises(SqlParseError):
            parse_sql(bad)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SELECT a, b FROM t WHERE x = 1", "select a,b\n  from T where X=1;"),
        ('SELECT "name" FROM "Orders"', "SELECT name FROM orders"),
        ("SELECT COUNT(*) FROM t t1", "select count( * ) from t as t1"),
        ("SELECT a FROM t WHERE b != 2", "SELECT a FROM t WHERE b <> 2"),
        ("SELECT broken ((", "select   BROKEN (("),  # unparseable: whitespace/case fallback
    ],
)
def test_normalize_sql_equates_formatting(left, right):
    assert normalize_sql(left) == normalize_sql(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SELECT a FROM t WHERE name = 'Bob'", "SELECT a FROM t WHERE name = 'bob'"),  # literals keep case
        ("SELECT a FROM t", "SELECT b FROM t"),
        ("SELECT a FROM t ORDER BY a", "SELECT a FROM t ORDER BY a DESC"),
    ],
)
def test_normalize_sql_keeps_real_differences(left, right):
    assert normalize_sql(left) != normalize_sql(right)

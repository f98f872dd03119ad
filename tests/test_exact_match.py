"""Exact Match: normalised text (today's EM) and semantic EM through sqlglot's optimizer."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlglot.errors import OptimizeError
from tooling import require_shared

from coderag.evaluation.exact_match import (
    canonical_sql,
    normalized_em,
    schema_from_sql_context,
    schema_from_sqlite,
    semantic_em,
)
from coderag.evaluation.sql_metrics import exact_match
from coderag.sql.execution import SqlContextError
from coderag.sql.text import SqlParseError

CONTEXT = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country VARCHAR(20), age INT, note);
CREATE TABLE concert (concert_id INTEGER, singer_id INTEGER REFERENCES singer (singer_id), year INTEGER);
INSERT INTO singer VALUES (1, 'Ann', 'France', 30, NULL);
"""
SCHEMA = schema_from_sql_context(CONTEXT)


def test_normalized_em_is_todays_exact_match():
    pairs = [("select  NAME from Singer;", "SELECT name FROM singer"),
             ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE 20 < age"),
             ("", "")]
    for pred, gold in pairs:
        assert normalized_em(pred, gold) == exact_match(pred, gold)
    assert normalized_em(*pairs[0]) and not normalized_em(*pairs[1]) and not normalized_em(*pairs[2])
    assert normalized_em("SELECT `a` FROM t", "select a from T", dialect="mysql")


def test_schema_from_sql_context_reads_create_tables_only():
    assert SCHEMA == {
        "singer": {"singer_id": "INTEGER", "name": "TEXT", "country": "TEXT(20)", "age": "INTEGER",
                   "note": "UNKNOWN"},
        "concert": {"concert_id": "INTEGER", "singer_id": "INTEGER", "year": "INTEGER"},
    }
    assert schema_from_sql_context("INSERT INTO t VALUES (1); SELECT 1") == {}
    with pytest.raises(SqlParseError, match="CREATE TABLE"):
        schema_from_sql_context("CREATE TABLE broken (a INT,, b")


def test_schema_from_sqlite_matches_the_context(tmp_path):
    path = tmp_path / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(CONTEXT)
    conn.close()
    schema = schema_from_sqlite(path)
    assert list(schema) == ["singer", "concert"]
    assert schema == SCHEMA
    with pytest.raises(SqlContextError):
        schema_from_sqlite(tmp_path / "absent.sqlite")


@pytest.mark.parametrize(("pred", "gold"), [
    # name vs t.name (the schema ties the bare column to its table)
    ("SELECT name FROM singer WHERE age > 20", "SELECT singer.name FROM singer WHERE singer.age > 20"),
    # swapped AND terms
    ("SELECT name FROM singer WHERE country = 'France' AND age > 20",
     "SELECT name FROM singer WHERE age > 20 AND country = 'France'"),
    # added table aliases, in a join too
    ("SELECT T1.name FROM singer AS T1 WHERE T1.age > 20", "SELECT name FROM singer WHERE age > 20"),
    ("SELECT s.name FROM singer s JOIN concert c ON s.singer_id = c.singer_id WHERE c.year = 2014",
     "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014"),
    # all three at once, plus a flipped comparison and Spider's double-quoted string
    ('SELECT T1.name FROM singer AS T1 WHERE 20 < T1.age AND T1.country = "France"',
     "SELECT name FROM singer WHERE country = 'France' AND age > 20"),
    # the same aliases reused inside a subquery
    ("SELECT T1.name FROM singer AS T1 WHERE T1.singer_id IN (SELECT T1.singer_id FROM concert AS T1)",
     "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert)"),
], ids=["qualified-column", "swapped-and", "alias", "alias-join", "combined", "alias-subquery"])
def test_semantic_em_equates_rewritings(pred, gold):
    assert not normalized_em(pred, gold)
    assert semantic_em(pred, gold, SCHEMA)


@pytest.mark.parametrize(("pred", "gold"), [
    ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age >= 20"),
    ("SELECT name FROM singer WHERE age > 20 AND country = 'France'",
     "SELECT name FROM singer WHERE age > 20 OR country = 'France'"),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "SELECT name FROM singer ORDER BY age LIMIT 1"),
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),
    ("SELECT T2.name FROM concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014"),
])
def test_semantic_em_keeps_different_queries_apart(pred, gold):
    assert not semantic_em(pred, gold, SCHEMA)


def test_without_a_schema_only_what_can_be_proved_is_equated():
    assert semantic_em("SELECT T1.name FROM singer AS T1 WHERE T1.b = 1 AND T1.a = 2",
                       "SELECT s.name FROM singer s WHERE s.a = 2 AND s.b = 1", None)
    # A bare column cannot be tied to its table without the schema.
    assert not semantic_em("SELECT name FROM singer", "SELECT t.name FROM singer t", None)


def test_optimizer_failures_fall_back_to_normalized_em():
    unknown_column = "SELECT nope FROM singer"
    with pytest.raises(OptimizeError):  # the column is not in the schema
        canonical_sql(unknown_column, SCHEMA)
    assert semantic_em(unknown_column, "select NOPE from singer;", SCHEMA)  # same text: EM holds anyway
    assert not semantic_em(unknown_column, "SELECT name FROM singer", SCHEMA)
    assert semantic_em("SELEC broken", "selec   BROKEN", SCHEMA) == normalized_em("SELEC broken", "selec   BROKEN")
    assert not semantic_em("", "", SCHEMA)


def test_canonical_sql_names_aliases_by_position():
    assert canonical_sql("SELECT T1.name FROM singer AS T1", SCHEMA) == 'SELECT "_0"."name" AS "name" FROM "singer" AS "_0"'


def test_every_spider_dev_gold_canonicalises_with_its_database_schema():
    spider = require_shared("datasets/spider", "dev.json")
    questions = [q for q in json.loads((spider / "dev.json").read_text(encoding="utf-8"))
                 if q["db_id"] in ("concert_singer", "world_1")]
    schemas = {db_id: schema_from_sqlite(spider / "database" / db_id / f"{db_id}.sqlite")
               for db_id in ("concert_singer", "world_1")}
    for question in questions:
        canonical_sql(question["query"], schemas[question["db_id"]])  # no optimizer error, no fallback
    assert semantic_em("SELECT T1.Name FROM singer AS T1 WHERE T1.Age > 30 AND T1.Country = 'France'",
                       "SELECT name FROM singer WHERE country = \"France\" AND age > 30", schemas["concert_singer"])

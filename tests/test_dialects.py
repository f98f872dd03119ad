"""Spider on a real server: copying SQLite databases in, gold SQL per dialect, gold parity, EX there."""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest
from test_databases import MARIADB_SERVER, PG_SERVER, _admin, needs_mariadb, needs_postgres

from coderag.cli import main
from coderag.evaluation.dialects import comparable, gold_for_dialect, server_databases
from coderag.sql.databases import Database, DatabaseError
from coderag.sql.loading import copy_sqlite_database, ensure_database

SCHEMA = {"singer": {"name": "TEXT", "country": "TEXT", "age": "INT"}, "concert": {"year": "TEXT"}}


def test_gold_for_dialect_turns_sqlite_habits_into_the_target_dialect():
    gold = 'SELECT T1.Name FROM singer AS T1 WHERE T1.Country  =  "France" AND t1.age ! = 3 ORDER BY T1.Age LIMIT 1'
    assert gold_for_dialect(gold, "postgres", SCHEMA) == (
        "SELECT t1.name FROM singer AS t1 WHERE t1.country = 'France' AND t1.age <> 3 ORDER BY t1.age NULLS FIRST LIMIT 1")
    assert gold_for_dialect(gold, "mysql", SCHEMA) == (
        "SELECT t1.name FROM singer AS t1 WHERE t1.country = 'France' AND t1.age <> 3 ORDER BY t1.age LIMIT 1")
    assert gold_for_dialect(gold, "sqlite", SCHEMA) == gold


def test_comparable_rows_treat_server_decimals_like_sqlite_doubles():
    from decimal import Decimal

    assert comparable([(Decimal("2.5000"), 1.0, "a"), (Decimal("0.33333333333333333333"), None, 2)]) == [
        (2.5, 1, "a"), (0.333333, None, 2)]


def test_copy_refuses_sqlite_targets_and_unsafe_schema_names(tmp_path):
    source = tmp_path / "odd.sqlite"
    conn = sqlite3.connect(source)
    conn.executescript(
        'CREATE TABLE "People" (id INTEGER PRIMARY KEY, "Name" varchar(20), age INT, score number, born datetime, '
        "dup INT);"
        "INSERT INTO People VALUES (1, 'ann', 30, 1.5, '2001-01-02', 1), (2, 'bob', '', 2, NULL, 1);")
    conn.close()
    with pytest.raises(DatabaseError, match="copies into PostgreSQL or MariaDB/MySQL, not SQLite"):
        copy_sqlite_database(source, f"sqlite:///{source}")
    with pytest.raises(DatabaseError, match="schema name 'Bad Name' must be lower-case"):
        copy_sqlite_database(source, PG_SERVER, schema="Bad Name")


@pytest.fixture(params=[pytest.param("postgresql", marks=needs_postgres), pytest.param("mariadb", marks=needs_mariadb)])
def server(request):
    """(kind, prefix): databases are loaded as <prefix><db_id>; everything is dropped afterwards."""
    prefix = f"coderag_t_{uuid.uuid4().hex[:8]}_"
    created: list[str] = []
    yield request.param, prefix, created
    if request.param == "postgresql":
        _admin(PG_SERVER, [f"DROP SCHEMA IF EXISTS {name} CASCADE" for name in created])
    else:
        _admin(MARIADB_SERVER, [f"DROP DATABASE IF EXISTS {name}" for name in created])


def _load(kind: str, prefix: str, created: list[str], sqlite_path, db_id: str):
    name = f"{prefix}{db_id.lower()}"
    created.append(name)
    if kind == "postgresql":
        report = copy_sqlite_database(sqlite_path, PG_SERVER, schema=name)
        return report, f"{PG_SERVER}?options=-csearch_path%3D{prefix}{{db_id}}"
    url = ensure_database(MARIADB_SERVER, name)
    return copy_sqlite_database(sqlite_path, url), f"mysql+pymysql://root@127.0.0.1/{prefix}{{db_id}}"


def test_a_copy_keeps_rows_and_falls_back_where_values_do_not_fit(server, tmp_path):
    kind, prefix, created = server
    source = tmp_path / "odd.sqlite"
    conn = sqlite3.connect(source)
    conn.executescript(
        'CREATE TABLE "People" (id INTEGER PRIMARY KEY, "Name" varchar(20), age INT, score number, born datetime, '
        "code INT, photo BLOB);"
        "INSERT INTO People VALUES (1, 'ann', 30, 1.5, '2001-01-02', 7, x'00ff'), (2, 'Bob', '', 2, NULL, 8, NULL);")
    conn.close()
    report, template = _load(kind, prefix, created, source, "odd")
    assert (report.tables, report.rows) == (1, 2)
    assert report.fallbacks == ["People.age INT -> text"]
    assert report.primary_keys_dropped == [] and report.foreign_keys_skipped == 0
    database = server_databases(template)("odd")
    try:
        rows = database.run_query("SELECT id, name, age, score, born, code, photo FROM people ORDER BY id")
        assert [tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row) for row in rows] == [
            (1, "ann", "30", 1.5, "2001-01-02", 7, b"\x00\xff"), (2, "Bob", "", 2.0, None, 8, None)]
        # Text sorts byte-wise, as in SQLite: 'Bob' before 'ann'.
        assert database.run_query("SELECT name FROM people ORDER BY name") == [("Bob",), ("ann",)]
        assert [c.name for c in database.introspect().tables[0].columns] == [
            "id", "name", "age", "score", "born", "code", "photo"]
        assert database.introspect().tables[0].primary_key == ("id",)
    finally:
        database.close()


QUESTIONS = [
    ("SELECT count(*) FROM singer", "How many singers are there?"),
    ("SELECT count(*) FROM concert WHERE YEAR  =  2014 OR YEAR  =  2015", "How many concerts in 2014 or 2015?"),
    ("select avg(capacity) ,  max(capacity) from stadium", "Average and maximum stadium capacity?"),
    ('SELECT name FROM singer WHERE country  =  "France" ORDER BY age', "Singers from France by age?"),
]
# Where the transpiled gold does not run or does not agree, per server (the dialect gaps this reports).
EXPECTED = {
    "postgresql": {"statuses": {"agree": 3, "server_failure": 1},
                   "failure": "PostgreSQL error: operator does not exist: text = integer"},
    "mariadb": {"statuses": {"agree": 3, "disagree": 1}, "failure": "values differ"},
}


def test_gold_parity_and_ex_on_the_server(server, spider_dir, tmp_path, capsys):
    kind, prefix, created = server
    _, template = _load(kind, prefix, created, spider_dir / "database" / "concert_singer" / "concert_singer.sqlite",
                        "concert_singer")
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps([{"db_id": "concert_singer", "query": q, "question": text}
                                     for q, text in QUESTIONS]))
    out = tmp_path / "ev"
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--questions-file", str(questions), "--db", template,
                 "--gold-parity", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    parity = json.loads((out / "gold_parity.json").read_text())
    assert parity["summary"]["n"] == 4 and parity["summary"]["statuses"] == EXPECTED[kind]["statuses"]
    failed = [r for r in parity["rows"] if r["status"] != "agree"]
    assert [r["index"] for r in failed] == [1 if kind == "postgresql" else 2]
    assert failed[0]["reason"] == EXPECTED[kind]["failure"]
    assert f"{EXPECTED[kind]['failure']}" in printed and "gold executable" in printed

    # EX on the server: the gold queries, written for SQLite, as predictions (--transpile).
    predictions = tmp_path / "pred.sql"
    predictions.write_text("\n".join(q for q, _ in QUESTIONS) + "\n")
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--questions-file", str(questions), "--db", template,
                 "--transpile", "--predictions", str(predictions), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    if kind == "postgresql":
        assert summary["statuses"] == {"ok": 3, "gold_failure": 1} and summary["dialect"] == "postgres"
        assert summary["ex"] == 0.75
    else:
        assert summary["statuses"] == {"ok": 4} and summary["dialect"] == "mysql" and summary["ex"] == 1.0


def test_evaluate_db_needs_a_db_id_placeholder_and_a_spider_dir(spider_dir, capsys):
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--db", "postgresql:///spider"]) == 2
    assert "needs {db_id} in the URL" in capsys.readouterr().err
    assert main(["evaluate", "--db", "postgresql:///spider", "--predictions", "x"]) == 2
    assert "--db needs --spider-dir" in capsys.readouterr().err
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--transpile", "--predictions", "x"]) == 2
    assert "--transpile needs --db URL" in capsys.readouterr().err


def test_server_databases_lower_case_the_db_id():
    databases = server_databases("mysql+pymysql://root:pw@127.0.0.1/spider_{db_id}")
    assert databases("cre_Doc_Template_Mgt").url.database == "spider_cre_doc_template_mgt"
    assert isinstance(databases("x"), Database) and databases.template == "mysql+pymysql://root:***@127.0.0.1/spider_{db_id}"

"""coderag.sql.databases against the real PostgreSQL and MariaDB on loopback (and SQLite files).

Each test works in its own schema (PostgreSQL, inside database ``test``) or database (MariaDB) with a
unique name, dropped afterwards, so nothing is left behind in the shared servers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid

import pytest
from tooling import needs_server

from coderag.cli import main
from coderag.errors import ConfigError
from coderag.sql.databases import Database, DatabaseError, DatabaseRegistry, open_database, transpile_sql
from coderag.sql.execution import QueryTimeout, SqlExecutionError

PG_SERVER = "postgresql:///test"
MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1/test"
needs_postgres = needs_server(PG_SERVER, "PostgreSQL on the socket / 127.0.0.1:5432, database test")
needs_mariadb = needs_server(MARIADB_SERVER, "MariaDB on 127.0.0.1:3306, user root")

_TABLES = [
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, city VARCHAR(40))",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT REFERENCES customers (id), total DECIMAL(10,2))",
    "INSERT INTO customers VALUES (1, 'ann', 'oslo'), (2, 'bob', 'rome')",
    "INSERT INTO orders VALUES (1, 1, 10.5), (2, 1, 3), (3, 2, 7)",
]
_MARIADB_ORDERS = ("CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2), "
                   "FOREIGN KEY (customer_id) REFERENCES customers (id))")


def _admin(url: str, statements: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(params=[pytest.param("postgresql", marks=needs_postgres), pytest.param("mariadb", marks=needs_mariadb)])
def shop(request):
    """A URL to a fresh shop schema (customers, orders) on PostgreSQL or MariaDB; dropped afterwards."""
    name = f"coderag_t_{uuid.uuid4().hex[:10]}"
    if request.param == "postgresql":
        _admin(PG_SERVER, [f"CREATE SCHEMA {name}", f"SET search_path TO {name}", *_TABLES])
        url = f"{PG_SERVER}?options=-csearch_path%3D{name}"
        drop = [f"DROP SCHEMA IF EXISTS {name} CASCADE"]
        admin = f"{PG_SERVER}?options=-csearch_path%3D{name}"
    else:
        _admin(MARIADB_SERVER, [f"CREATE DATABASE {name}", f"USE {name}", _TABLES[0], _MARIADB_ORDERS, *_TABLES[2:]])
        url = f"mysql+pymysql://root@127.0.0.1/{name}"
        drop = [f"DROP DATABASE IF EXISTS {name}"]
        admin = url
    yield request.param, url, admin
    _admin(PG_SERVER if request.param == "postgresql" else MARIADB_SERVER, drop)


EXPECTED_SNIPPETS = {
    "postgresql": [
        "CREATE TABLE customers (\n  id INTEGER NOT NULL,\n  name VARCHAR(40) NOT NULL,\n  city VARCHAR(40),\n"
        "  PRIMARY KEY (id)\n);\n-- id: 1, 2\n-- name: ann, bob\n-- city: oslo, rome",
        "CREATE TABLE orders (\n  id INTEGER NOT NULL,\n  customer_id INTEGER,\n  total NUMERIC(10, 2),\n  PRIMARY KEY (id),\n"
        "  FOREIGN KEY (customer_id) REFERENCES customers (id)\n);\n-- id: 1, 2\n-- customer_id: 1, 2\n-- total: 3.00, 7.00",
    ],
    "mariadb": [
        "CREATE TABLE customers (\n  id INTEGER(11) NOT NULL,\n  name VARCHAR(40) NOT NULL,\n  city VARCHAR(40),\n"
        "  PRIMARY KEY (id)\n);\n-- id: 1, 2\n-- name: ann, bob\n-- city: oslo, rome",
        "CREATE TABLE orders (\n  id INTEGER(11) NOT NULL,\n  customer_id INTEGER(11),\n  total DECIMAL(10, 2),\n"
        "  PRIMARY KEY (id),\n  FOREIGN KEY (customer_id) REFERENCES customers (id)\n);\n-- id: 1, 2\n-- customer_id: 1, 2\n"
        "-- total: 3.00, 7.00",
    ],
}


def test_introspection_reads_tables_columns_types_keys_and_samples(shop):
    kind, url, _ = shop
    database = Database(url)
    try:
        schema = database.introspect(sample_values=2)
        assert [t.name for t in schema.tables] == ["customers", "orders"]
        assert schema.tables[1].primary_key == ("id",)
        assert schema.snippets() == EXPECTED_SNIPPETS[kind]
        assert schema.dialect == ("postgres" if kind == "postgresql" else "mysql")
        manifest = schema.to_manifest()
        assert manifest["tables"] == 2 and manifest["schema_fingerprint"] == schema.fingerprint()
        # Without samples the snippets carry no comment lines, and the fingerprint differs.
        bare = database.introspect()
        assert "--" not in "".join(bare.snippets()) and bare.fingerprint() != schema.fingerprint()
    finally:
        database.close()


def test_rows_come_back_with_percent_signs_and_decimals(shop):
    _, url, _ = shop
    database = Database(url)
    try:
        rows = database.run_query("SELECT c.name, SUM(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id "
                                  "WHERE c.name LIKE '%n%' GROUP BY c.name")
        assert [(name, float(total)) for name, total in rows] == [("ann", 13.5)]
    finally:
        database.close()


WRITES = {
    "postgresql": [
        ("INSERT INTO customers VALUES (3, 'cy', 'bern')",
         "PostgreSQL error: cannot execute INSERT in a read-only transaction"),
        ("DROP TABLE orders", "PostgreSQL error: cannot execute DROP TABLE in a read-only transaction"),
        ("CREATE TABLE evil (a INT)", "PostgreSQL error: cannot execute CREATE TABLE in a read-only transaction"),
        ("COMMIT; DELETE FROM customers", "PostgreSQL error: cannot insert multiple commands into a prepared statement"),
        ("WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
         "PostgreSQL error: cannot execute SELECT in a read-only transaction"),
    ],
    "mariadb": [
        ("INSERT INTO customers VALUES (3, 'cy', 'bern')",
         "MariaDB error: (1792) Cannot execute statement in a READ ONLY transaction"),
        ("DROP TABLE orders", "MariaDB error: (1792) Cannot execute statement in a READ ONLY transaction"),
        ("CREATE TABLE evil (a INT)", "MariaDB error: (1792) Cannot execute statement in a READ ONLY transaction"),
        ("UPDATE customers SET city = 'x'", "MariaDB error: (1792) Cannot execute statement in a READ ONLY transaction"),
    ],
}


def test_a_write_sent_straight_to_the_execution_layer_is_refused_by_the_database(shop):
    """No guard here: the statements go to Database.run_query as they are."""
    kind, url, _ = shop
    database = Database(url, pool_size=1, max_overflow=0)
    try:
        for sql, message in WRITES[kind]:
            with pytest.raises(SqlExecutionError) as caught:
                database.run_query(sql)
            assert str(caught.value) == message, sql
        # The one pooled connection is told READ WRITE, yet the next write is refused all the same.
        if kind == "mariadb":
            assert database.run_query("SET SESSION TRANSACTION READ WRITE") == []
            with pytest.raises(SqlExecutionError, match=r"^MariaDB error: \(1792\)"):
                database.run_query("DELETE FROM customers")
            with pytest.raises(SqlExecutionError, match=r"^MariaDB error: \(1064\)"):
                database.run_query("SELECT 1; DELETE FROM customers")
        else:
            assert database.run_query("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE") == []
            assert database.run_query("SET TRANSACTION READ WRITE") == []
            with pytest.raises(SqlExecutionError, match="cannot execute DELETE in a read-only transaction"):
                database.run_query("DELETE FROM customers")
        assert database.run_query("SELECT count(*) FROM customers") == [(2,)]
        assert [t.name for t in database.introspect().tables] == ["customers", "orders"]
    finally:
        database.close()


def test_a_slow_statement_is_stopped_by_the_server_and_the_pool_recovers(shop):
    kind, url, _ = shop
    database = Database(url, pool_size=1, max_overflow=0)
    sleep = "SELECT pg_sleep(3)" if kind == "postgresql" else "SELECT SLEEP(3)"
    try:
        with pytest.raises(QueryTimeout) as caught:
            database.run_query(sleep, timeout_s=0.3)
        assert str(caught.value) == "the query ran longer than 0.3 s and was stopped."
        assert database.run_query("SELECT count(*) FROM orders") == [(3,)]
    finally:
        database.close()


def test_row_and_byte_caps(shop):
    _, url, _ = shop
    database = Database(url)
    try:
        with pytest.raises(SqlExecutionError) as caught:
            database.run_query("SELECT id FROM orders", max_rows=2)
        assert str(caught.value) == "the query returned more than 2 rows: add a LIMIT or a filter."
        with pytest.raises(SqlExecutionError) as caught:
            database.run_query("SELECT name, city FROM customers", max_bytes=10)
        assert str(caught.value) == "the query returned more than 10 bytes: select fewer columns or add a LIMIT."
        assert database.run_query("SELECT id FROM orders ORDER BY id", max_rows=3) == [(1,), (2,), (3,)]
    finally:
        database.close()


def test_the_pool_is_bounded(shop):
    _, url, _ = shop
    database = Database(url, pool_size=1, max_overflow=0, pool_timeout_s=0.3)
    held = database._raw_connection()
    try:
        with pytest.raises(DatabaseError) as caught:
            database.run_query("SELECT 1")
        assert "cannot connect to" in str(caught.value) and "QueuePool limit of size 1 overflow 0" in str(caught.value)
    finally:
        held.close()
    try:
        # Returned to the pool: concurrent callers now take turns on the one connection.
        results = []
        threads = [threading.Thread(target=lambda: results.append(database.run_query("SELECT 7"))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [[(7,)]] * 4
    finally:
        database.close()


class ScriptedReply:
    def __init__(self, replies):
        self.replies = iter(replies)
        self.prompts = []

    def complete(self, messages, *, max_tokens=128, temperature=0.0):
        self.prompts.append(messages)
        return next(self.replies)


def test_index_build_and_ask_on_a_live_database_then_reindex_after_a_schema_change(shop, tmp_path, capsys,
                                                                                  monkeypatch):
    import coderag.cli.run as run_cli

    kind, url, admin = shop
    index_dir = tmp_path / "index"
    assert main(["index", "build", "--db", url, "--out", str(index_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "indexed 2 tables of" in out and "(first build;" in out
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "database" and manifest["source"]["tables"] == 2
    assert manifest["source"]["url"] == url
    before = (index_dir / "manifest.json").read_bytes()

    # Unchanged schema: a no-op that leaves the index's files exactly as they were.
    assert main(["index", "build", "--db", url, "--out", str(index_dir), "--no-progress"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert (index_dir / "manifest.json").read_bytes() == before

    generator = ScriptedReply(["```sql\nSELECT c.name, SUM(o.total) FROM customers c JOIN orders o "
                               "ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name\n```",
                               "```sql\nDELETE FROM orders\n```"])
    monkeypatch.setattr(run_cli, "make_generator", lambda s: generator)
    questions = tmp_path / "q.txt"
    questions.write_text("What did each customer spend?\nDelete every order\n")
    assert main(["ask", "--index", str(index_dir), "--db", url, "--questions-file", str(questions), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "rows (2):\nann\t13.50\nbob\t7.00" in out
    assert "SQL (refused:" in out
    label = "PostgreSQL" if kind == "postgresql" else "MariaDB"
    assert generator.prompts[0][0]["content"].startswith(f"You write {label} queries.")
    assert "CREATE TABLE orders" in generator.prompts[0][-1]["content"]

    # A changed schema is picked up: the new column is in the rebuilt index, written atomically.
    _admin(admin, ["ALTER TABLE customers ADD COLUMN email VARCHAR(80)"])
    assert main(["index", "build", "--db", url, "--out", str(index_dir), "--no-progress"]) == 0
    assert "(schema changed;" in capsys.readouterr().out
    snippets = json.loads((index_dir / "corpus_map.json").read_text())["snippets"]
    assert "email" in snippets[0] and sorted(p.name for p in index_dir.iterdir()) == [
        "corpus_map.json", "manifest.json", "sql_rag_faiss_index.bin"]
    assert json.loads((index_dir / "manifest.json").read_text())["source"]["schema_fingerprint"] != \
        manifest["source"]["schema_fingerprint"]


def test_ask_transpiles_sqlite_style_sql_into_the_database_dialect(shop, tmp_path, capsys, monkeypatch):
    import coderag.cli.run as run_cli

    _, url, _ = shop
    index_dir = tmp_path / "index"
    assert main(["index", "build", "--db", url, "--out", str(index_dir), "--no-progress"]) == 0
    sql = "```sql\nSELECT name, IFNULL(city, 'none') FROM customers WHERE id = 1\n```"
    generator = ScriptedReply([sql])
    monkeypatch.setattr(run_cli, "make_generator", lambda s: generator)
    capsys.readouterr()
    assert main(["ask", "Where does customer 1 live?", "--index", str(index_dir), "--db", url, "--transpile",
                 "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["rows"] == [["ann", "oslo"]] and answer["execution_error"] is None
    assert answer["sql"] == "SELECT name, COALESCE(city, 'none') FROM customers WHERE id = 1"
    # The model is asked for SQLite, which sqlglot then rewrites.
    assert generator.prompts[0][0]["content"].startswith("You write SQLite queries.")


@needs_postgres
def test_ask_reports_an_unreachable_database_in_one_line(tmp_path, capsys):
    index_dir = tmp_path / "index"
    assert main(["ask", "q?", "--index", str(index_dir), "--db", "postgresql://nobody@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coderag: error: cannot connect to PostgreSQL database postgresql://nobody@127.0.0.1:1/x")
    assert err.count("\n") == 1


def test_sqlite_files_by_path_or_url_are_read_only_too(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t VALUES (1, 'x');")
    conn.close()
    for database in (open_database(path), open_database(f"sqlite:///{path}")):
        assert database.dialect == "sqlite" and database.run_query("SELECT b FROM t") == [("x",)]
        with pytest.raises(SqlExecutionError, match="the read-only authorizer denied the query"):
            database.run_query("DELETE FROM t")
        assert database.introspect().snippets() == ["CREATE TABLE t (\n  a INTEGER,\n  b TEXT,\n  PRIMARY KEY (a)\n);"]
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(tmp_path / "absent.sqlite")


def test_the_databases_setting_takes_json_or_name_url_pairs_and_checks_sqlite_files(tmp_path):
    """The services' setting: JSON or NAME=URL pairs, a bare path is a SQLite file that must exist."""
    demo = tmp_path / "demo.sqlite"
    sqlite3.connect(demo).close()
    registry = DatabaseRegistry.parse(f"shop=postgresql://reader:s3cret@db/shop, demo={demo}")
    assert registry.names() == ["demo", "shop"]
    assert (registry.get("demo").backend, registry.get("demo").path) == ("sqlite", demo)
    assert DatabaseRegistry.parse('{"shop": "postgresql:///shop"}').names() == ["shop"]
    assert DatabaseRegistry.parse("  ").names() == []
    with pytest.raises(ConfigError) as caught:
        DatabaseRegistry.parse("shop")
    assert str(caught.value) == "invalid setting databases: 'shop' is not NAME=URL"
    with pytest.raises(ConfigError) as caught:
        DatabaseRegistry.parse(f"gone={tmp_path / 'missing.sqlite'}")
    assert str(caught.value) == "invalid setting databases: database 'gone' is not a file"


def test_urls_are_validated_and_passwords_never_echoed():
    with pytest.raises(DatabaseError, match="database backend 'oracle' is not supported"):
        Database("oracle://scott:tiger@db/x")
    with pytest.raises(DatabaseError, match="is not a database URL"):
        Database("not a url://")
    assert Database("postgresql://reader:s3cret@db.internal/shop").source == "postgresql://reader:***@db.internal/shop"
    registry = DatabaseRegistry.from_json('{"shop": "postgresql://reader:s3cret@db/shop"}')
    assert registry.names() == ["shop"] and registry.get("shop").name == "shop"
    with pytest.raises(ConfigError) as caught:
        registry.get("other")
    assert str(caught.value) == "unknown database 'other': use one of the registered names (shop)"
    with pytest.raises(ConfigError) as caught:
        DatabaseRegistry.from_json('{"bad": "oracle://u:s3cret@h/x"}')
    assert "s3cret" not in str(caught.value) and str(caught.value).startswith("database 'bad': ")
    with pytest.raises(ConfigError, match="is not allowed"):
        DatabaseRegistry({"no spaces": "postgresql:///x"})
    assert DatabaseRegistry.from_json("").names() == []
    # The CLI's --db may hold a password: the settings line logged at start-up masks it.
    from coderag.config import JobSettings

    assert JobSettings.from_flags(db="postgresql://reader:s3cret@db/shop").describe()["db"] == \
        "postgresql://reader:***@db/shop"


def test_transpile_sql_rewrites_sqlite_functions():
    assert transpile_sql("SELECT IFNULL(a, 0) FROM t", "postgres") == "SELECT COALESCE(a, 0) FROM t"
    assert transpile_sql("SELECT a FROM t ORDER BY a LIMIT 2", "mysql") == "SELECT a FROM t ORDER BY a LIMIT 2"
    with pytest.raises(SqlExecutionError, match="cannot transpile the SQL from sqlite to postgres"):
        transpile_sql("SELECT FROM WHERE (", "postgres")


@needs_postgres
def test_index_build_on_an_empty_schema_says_so_in_one_line(tmp_path, capsys):
    name = f"coderag_t_{uuid.uuid4().hex[:10]}"
    _admin(PG_SERVER, [f"CREATE SCHEMA {name}"])
    try:
        url = f"{PG_SERVER}?options=-csearch_path%3D{name}"
        assert main(["index", "build", "--db", url, "--out", str(tmp_path / "index"), "--no-progress"]) == 2
        assert capsys.readouterr().err == f"coderag: error: PostgreSQL database {url} holds no tables: nothing to index\n"
        assert not (tmp_path / "index").exists()
    finally:
        _admin(PG_SERVER, [f"DROP SCHEMA {name}"])

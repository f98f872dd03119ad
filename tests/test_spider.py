"""Spider from ../shared (skipped when absent): rendered schemas parse and build, gold SQL executes."""

from __future__ import annotations

import sqlite3

import pytest
import sqlglot
from sqlglot import exp

from coderag.corpus import GRETEL_COLUMNS, dedupe_schemas
from coderag.corpus.spider import load_spider, quote_identifier, render_schema, sql_complexity
from coderag.errors import CorpusError


@pytest.fixture(scope="module")
def spider(spider_dir):
    return load_spider(spider_dir)


def test_dev_questions_become_gretel_records(spider):
    assert len(spider.records) == 493
    assert len(spider.schemas) == 166 and len(spider.all_schemas) == 166
    assert all(tuple(r) == GRETEL_COLUMNS for r in spider.records)
    dev_dbs = {r["domain"] for r in spider.records}
    assert dev_dbs <= set(spider.db_paths)
    assert all(r["sql_context"] == spider.schemas[r["domain"]] for r in spider.records)
    corpus = dedupe_schemas(spider.records)
    assert len(corpus.snippets) == len(dev_dbs)


def test_rendered_schemas_parse_and_build_in_sqlite(spider):
    for db_id, text in spider.schemas.items():
        statements = sqlglot.parse(text, read="sqlite")
        assert statements and all(isinstance(s, exp.Create) for s in statements), db_id
        sqlite3.connect(":memory:").executescript(text)


def test_rendered_tables_match_the_sqlite_files(spider):
    for db_id in {r["domain"] for r in spider.records}:
        conn = sqlite3.connect(f"file:{spider.db_paths[db_id]}?mode=ro", uri=True)
        on_disk = {n.lower() for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                   if not n.startswith("sqlite_")}
        rendered = {s.this.this.name.lower() for s in sqlglot.parse(spider.schemas[db_id], read="sqlite")}
        assert rendered == on_disk, db_id


def test_dev_gold_queries_execute_on_their_databases(spider):
    non_empty = 0
    for record in spider.records:
        conn = sqlite3.connect(f"file:{spider.db_paths[record['domain']]}?mode=ro", uri=True)
        non_empty += bool(conn.execute(record["sql"]).fetchall())
    assert non_empty > 0.9 * len(spider.records)


def test_render_quotes_odd_identifiers_and_keys():
    db = {"table_names_original": ["people", "order"],
          "column_names_original": [[-1, "*"], [0, "id"], [0, "Home Town"], [1, "id"], [1, "person"], [1, "line"]],
          "column_types": ["text", "number", "text", "number", "number", "number"],
          "primary_keys": [1, 3, 5], "foreign_keys": [[4, 1]]}
    text = render_schema(db)
    assert text == ('CREATE TABLE people (id NUMERIC PRIMARY KEY, "Home Town" TEXT);\n'
                    'CREATE TABLE "order" (id NUMERIC, person NUMERIC, line NUMERIC, PRIMARY KEY (id, line), '
                    'FOREIGN KEY (person) REFERENCES people(id));')
    sqlite3.connect(":memory:").executescript(text)
    assert quote_identifier("Year") == "Year" and quote_identifier("%_Change") == '"%_Change"'
    assert sql_complexity("SELECT a FROM t WHERE b IN (SELECT b FROM u)") == "subqueries"
    assert sql_complexity("SELECT count(*) FROM t JOIN u ON t.a = u.a") == "single join"


def test_missing_spider_dir_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="tables.json"):
        load_spider(tmp_path)

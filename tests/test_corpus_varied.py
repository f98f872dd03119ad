"""The builtin-varied generator: more domains, wide multi-table schemas, Spider-like naming, synonym wording.

Real generator output on real SQLite: every gold query runs on its own context and returns rows, the
output is a function of the seed, and each feature changes what it says it changes.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import sqlglot
from expected import gold_rows
from sqlglot import exp

from coderag.corpus import dedupe_schemas, generate_corpus, load_corpus
from coderag.corpus.domains import DOMAINS
from coderag.corpus.generator import VARIED, available_domains
from coderag.corpus.more_domains import MORE_DOMAINS
from coderag.corpus.naming import NamingStyle, alias_tables
from coderag.corpus.schemas import quote_identifier
from coderag.corpus.shapes import build_schema
from coderag.corpus.synonyms import indirect_label
from coderag.errors import ConfigError


@pytest.fixture(scope="module")
def varied() -> list[dict]:
    return generate_corpus(1500, features=VARIED, seed=0)


def _tables(context: str) -> dict[str, list[str]]:
    out = {}
    for statement in sqlglot.parse(context, read="sqlite"):
        if isinstance(statement, exp.Create):
            schema = statement.this
            out[schema.this.name] = [c.name for c in schema.expressions if isinstance(c, exp.ColumnDef)]
    return out


def test_every_varied_gold_query_executes_on_its_own_context_with_rows(varied):
    for record, rows in zip(varied, gold_rows(varied), strict=True):
        assert any(v is not None for row in rows for v in row), record["sql"]


def test_varied_generation_is_deterministic_under_the_seed_and_leaves_the_classic_corpus_alone():
    assert generate_corpus(200, features=VARIED, seed=5) == generate_corpus(200, features=VARIED, seed=5)
    assert generate_corpus(200, features=VARIED, seed=5) != generate_corpus(200, features=VARIED, seed=6)
    assert generate_corpus(200, features=VARIED, seed=5) != generate_corpus(200, seed=5)
    # features only ever add draws after the classic ones are made: no features is the classic corpus
    assert generate_corpus(120, seed=2) == generate_corpus(120, seed=2, features=frozenset())
    assert load_corpus("builtin-varied", limit=50, seed=1) == generate_corpus(50, seed=1, features=VARIED)


def test_the_domains_feature_draws_every_domain_and_new_ones_are_distinct(varied):
    assert len(available_domains(VARIED)) == len(DOMAINS) + len(MORE_DOMAINS) >= 65
    names = [d.name for d in available_domains(VARIED)]
    assert len(names) == len(set(names))
    assert {r["domain"] for r in varied} == set(names)
    with pytest.raises(ConfigError, match="unknown corpus feature"):
        generate_corpus(10, features={"colour"})
    with pytest.raises(ConfigError, match="n_domains"):
        generate_corpus(10, n_domains=len(DOMAINS) + 1)


def test_shapes_give_more_tables_and_columns_than_the_classic_corpus(varied):
    def shape(records):
        tables = [t for s in dedupe_schemas(records).snippets for t in _tables(s).values()]
        per_schema = [len(_tables(s)) for s in dedupe_schemas(records).snippets]
        return sum(len(t) for t in tables) / len(tables), sum(n >= 3 for n in per_schema) / len(per_schema)

    classic_cols, classic_multi = shape(generate_corpus(1500, seed=0))
    varied_cols, varied_multi = shape(varied)
    assert varied_cols >= classic_cols + 2  # generic bookkeeping columns widen every table
    assert varied_multi > classic_multi     # mostly 3- and 4-table schemas
    assert max(len(cols) for s in dedupe_schemas(varied).snippets for cols in _tables(s).values()) >= 11


def test_naming_spells_siblings_differently_and_writes_t1_aliases(varied):
    names = [n for s in dedupe_schemas(varied).snippets for n in _tables(s)]
    assert any(re.fullmatch(r"[A-Z][a-z]+(_[A-Z][a-z]+)+", n) for n in names)   # Pascal_Snake
    assert any(re.fullmatch(r"[a-z]+[A-Z][A-Za-z]+", n) for n in names)        # camelCase
    assert any(re.fullmatch(r"[A-Z]+(_[A-Z]+)+", n) for n in names)            # UPPER_SNAKE
    assert all(quote_identifier(n) == n for n in names)                        # never needs quoting
    aliased = [r["sql"] for r in varied if " AS T1 " in r["sql"]]
    assert aliased and all("T2." in sql for sql in aliased)
    # siblings of one domain: several spellings of what is one entity in the classic corpus
    healthcare = {n for r in varied if r["domain"] == "healthcare" for n in _tables(r["sql_context"])}
    assert len({n.lower().replace("_", "") for n in healthcare}) < len(healthcare)


def test_naming_style_and_alias_rewrite():
    assert NamingStyle("pascal_snake").column("singer_id") == "Singer_ID"
    assert NamingStyle("upper", abbreviate=True).column("customer_name") == "CUST_NM"
    assert NamingStyle("upper").column("order") == "order"  # ORDER would need quoting: the plain name stays
    assert NamingStyle("pascal", table_prefix="tbl_").table("group") == "TblGroup"
    sql = "SELECT a.x, SUM(b.y) FROM a JOIN b ON a.id = b.a_id GROUP BY a.x;"
    assert alias_tables(sql) == "SELECT T1.x, SUM(T2.y) FROM a AS T1 JOIN b AS T2 ON T1.id = T2.a_id GROUP BY T1.x;"
    for unchanged in ("SELECT x FROM a;", "SELECT x FROM a WHERE id IN (SELECT a_id FROM b);",
                      "WITH t AS (SELECT 1 AS v) SELECT a.v FROM t JOIN a ON a.v = t.v;"):
        assert alias_tables(unchanged) == unchanged


def _gold_columns(sql: str) -> set[str]:
    return {c.name.lower() for c in sqlglot.parse_one(sql, read="sqlite").find_all(exp.Column)}


def test_synonym_questions_name_columns_indirectly_and_still_map_to_the_gold_sql():
    """Same seed, same draws: a schema with and without ``synonyms`` has the same SQL and rows, and some
    questions then no longer carry the column label's words."""
    changed = 0
    for i, domain in enumerate(available_domains(VARIED)):
        plain = build_schema(domain, random.Random(f"s{i}"), frozenset({"domains", "shapes"}))
        worded = build_schema(domain, random.Random(f"s{i}"), frozenset({"domains", "shapes", "synonyms"}))
        assert [t.create_statement() for t in plain.tables] == [t.create_statement() for t in worded.tables]
        assert [t.rows for t in plain.tables] == [t.rows for t in worded.tables]
        labels = [(p.label, w.label) for tp, tw in zip(plain.tables, worded.tables, strict=True)
                  for p, w in zip(tp.columns, tw.columns, strict=True)]
        changed += sum(p != w for p, w in labels)
    assert changed >= 60
    assert indirect_label("total cost", random.Random(1)) != "total cost"
    assert indirect_label("zebra stripes", random.Random(1)) == "zebra stripes"

    records = generate_corpus(600, features=VARIED, seed=3)
    indirect = 0
    for r, rows in zip(records, gold_rows(records), strict=True):
        assert rows
        words = set(re.findall(r"[a-z]+", r["sql_prompt"].lower()))
        measured = [c for c in _gold_columns(r["sql"]) if "_" in c and not c.endswith("id")]
        indirect += any(not set(c.split("_")) & words for c in measured)
    assert indirect >= len(records) // 5


def test_no_two_varied_contexts_share_one_schema():
    """Sibling variants differ in their CREATE statements, not only in their rows."""
    records = generate_corpus(800, features=VARIED, seed=0)
    per_domain = Counter(r["domain"] for r in {r["sql_context"]: r for r in records}.values())
    schemas = dedupe_schemas(records)
    assert len(schemas.snippets) == sum(per_domain.values())


def test_cli_builds_the_varied_corpus_by_its_source_name(tmp_path, capsys):
    import json

    from coderag.cli import main

    out = tmp_path / "varied.jsonl"
    assert main(["corpus", "build", "--corpus", "builtin-varied", "--n-records", "90", "--seed", "4",
                 "--out", str(out)]) == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == generate_corpus(90, seed=4, features=VARIED)
    capsys.readouterr()
    assert main(["corpus", "stats", "--corpus", "builtin-varied", "--n-records", "700", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["domains"] > 40

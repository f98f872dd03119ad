"""The builtin generator, corpus loading (real datasets files) and schema deduplication, on real SQLite."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import sqlglot
from expected import gold_rows
from sqlglot import exp

from coderag.cli import main
from coderag.corpus import (
    GRETEL_COLUMNS,
    dedupe_schemas,
    generate_corpus,
    load_corpus,
    normalize_schema,
    schema_only,
    split_statements,
)
from coderag.corpus.domains import DOMAINS
from coderag.errors import ConfigError, CorpusError


@pytest.fixture(scope="module")
def default_corpus() -> list[dict]:
    return generate_corpus()


def _record(context: str, **over) -> dict:
    base = {c: f"{c} text" for c in GRETEL_COLUMNS}
    base.update(id=1, sql_context=context, sql="SELECT 1;", domain="d")
    base.update(over)
    return base


def test_default_corpus_has_2000_records_over_40_domains(default_corpus):
    assert len(default_corpus) == 2000
    assert len({r["domain"] for r in default_corpus}) >= 40
    assert all(tuple(r) == GRETEL_COLUMNS for r in default_corpus)
    assert sorted(r["id"] for r in default_corpus) == list(range(1, 2001))
    complexities = Counter(r["sql_complexity"] for r in default_corpus)
    assert {"basic SQL", "aggregation", "single join", "multiple_joins", "subqueries", "window functions",
            "CTEs", "set operations"} <= set(complexities)
    assert set(r["sql_task_type"] for r in default_corpus) == {"analytics and reporting", "data retrieval"}
    assert all(r["sql_explanation"] and r["domain_description"] for r in default_corpus)


def test_generation_is_deterministic_under_seed():
    assert generate_corpus(300, seed=3) == generate_corpus(300, seed=3)
    assert generate_corpus(300, seed=3) != generate_corpus(300, seed=4)


def test_every_gold_sql_executes_with_rows(default_corpus):
    for record, rows in zip(default_corpus, gold_rows(default_corpus), strict=True):
        assert any(v is not None for row in rows for v in row), record


def test_schemas_and_gold_sql_parse_with_sqlglot(default_corpus):
    corpus = dedupe_schemas(default_corpus)
    for snippet in corpus.snippets:
        statements = sqlglot.parse(snippet, read="sqlite")
        assert 2 <= len(statements) <= 4 and all(isinstance(s, exp.Create) for s in statements)
    for record in default_corpus[::7]:
        assert sqlglot.parse_one(record["sql"], read="sqlite") is not None


def test_questions_name_their_domain_entities(default_corpus):
    words = {d.name: {w for e in (d.a, d.b, d.c, d.fact)
                      for w in (e.singular, e.plural, *(t.replace("_", " ") for t in e.tables))} for d in DOMAINS}
    for record in default_corpus:
        assert any(w in record["sql_prompt"].lower() for w in words[record["domain"]]), record["sql_prompt"]


def test_schemas_repeat_across_questions_and_differ_within_a_domain(default_corpus):
    corpus = dedupe_schemas(default_corpus)
    per_schema = Counter(corpus.record_to_snippet)
    assert 4 <= len(default_corpus) / len(corpus.snippets) <= 6
    assert max(per_schema.values()) <= 6
    per_domain = Counter(corpus.snippet_domains)
    assert all(n >= 5 for n in per_domain.values())  # siblings: retrieval must tell them apart


def test_dedupe_counts_and_mapping(default_corpus):
    corpus = dedupe_schemas(default_corpus)
    assert len(corpus.snippets) + corpus.duplicates_dropped == len(default_corpus)
    assert corpus.duplicates_dropped > 1000
    assert len(corpus.record_to_snippet) == len(default_corpus)
    assert len({normalize_schema(s) for s in corpus.snippets}) == len(corpus.snippets)
    for record, idx in zip(default_corpus, corpus.record_to_snippet):
        assert corpus.snippets[idx] == schema_only(record["sql_context"])
        assert corpus.snippet_domains[idx] == record["domain"]
    assert not any("INSERT" in s.upper() for s in corpus.snippets)


def test_dedupe_folds_case_whitespace_and_rows():
    records = [
        _record("CREATE TABLE a (x INT, y VARCHAR(5)); INSERT INTO a VALUES (1, 'p');"),
        _record("create  table A(\n  x int ,y varchar(5) ) ;;\nINSERT INTO a VALUES (2, 'q');"),
        _record("CREATE TABLE b (x INT);"),
        _record("CREATE TABLE a (x INT, y VARCHAR(5) DEFAULT 'P');"),
    ]
    corpus = dedupe_schemas(records)
    assert corpus.record_to_snippet == [0, 0, 1, 2]
    assert corpus.duplicates_dropped == 1
    assert corpus.snippets[0] == "CREATE TABLE a (x INT, y VARCHAR(5));"


def test_normalize_schema_keeps_literals_and_strips_semicolons():
    assert normalize_schema("CREATE  TABLE T (\n x INT DEFAULT 'Ab  C' ) ;  ") == "create table t(x int default 'Ab  C')"


def test_schema_only_ignores_semicolons_in_strings_and_comments():
    context = ("-- a note; with semicolon\nCREATE TABLE t (s TEXT DEFAULT ';');\n"
               "INSERT INTO t VALUES ('it''s; fine'); /* drop; */ CREATE VIEW v AS SELECT s FROM t;")
    assert len(split_statements(context)) == 3
    assert schema_only(context) == "CREATE TABLE t (s TEXT DEFAULT ';');\nCREATE VIEW v AS SELECT s FROM t;"
    assert schema_only("SELECT 1") == "SELECT 1"


def test_builtin_source_and_limits():
    records = load_corpus("builtin", limit=150, seed=2)
    assert len(records) == 150 and records == generate_corpus(150, seed=2)
    with pytest.raises(CorpusError, match="positive"):
        load_corpus("builtin", limit=0)
    with pytest.raises(ConfigError, match="n_domains"):
        generate_corpus(10, n_domains=len(DOMAINS) + 1)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_local_files_load_through_datasets(tmp_path, suffix):
    import datasets

    records = generate_corpus(60, seed=1)
    path = tmp_path / f"corpus.{suffix}"
    ds = datasets.Dataset.from_list(records)
    ds.to_json(str(path)) if suffix == "jsonl" else ds.to_parquet(str(path))
    assert load_corpus(str(path)) == records
    sample = load_corpus(str(path), limit=10, seed=5)
    assert len(sample) == 10 and sample == load_corpus(str(tmp_path), limit=10, seed=5)
    assert all(r in records for r in sample)


def test_missing_columns_name_columns_and_file(tmp_path):
    path = tmp_path / "partial.jsonl"
    row = {c: "x" for c in GRETEL_COLUMNS if c not in ("sql_context", "domain")}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(CorpusError) as info:
        load_corpus(str(path))
    message = str(info.value)
    assert "domain, sql_context" in message and str(path) in message


def test_missing_file_and_unreachable_hub_are_corpus_errors(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(str(tmp_path / "absent.parquet"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(CorpusError, match="hub"):
        load_corpus("no-such-owner/no-such-dataset")


def test_cli_build_writes_jsonl_and_counts(tmp_path, capsys):
    out = tmp_path / "out" / "corpus.jsonl"
    assert main(["corpus", "build", "--n-records", "120", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 120 and [json.loads(x) for x in lines] == generate_corpus(120, seed=1)
    corpus = dedupe_schemas(generate_corpus(120, seed=1))
    assert f"unique schemas={len(corpus.snippets)}" in printed
    assert f"duplicates dropped={corpus.duplicates_dropped}" in printed
    assert [p.name for p in out.parent.iterdir()] == ["corpus.jsonl"]


def test_cli_stats_reports_and_bad_file_is_one_line(tmp_path, capsys):
    assert main(["corpus", "stats", "--n-records", "100", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 100 and stats["unique_schemas"] + stats["duplicates_dropped"] == 100
    assert sum(stats["sql_complexity"].values()) == 100
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sql_prompt": "q"}) + "\n")
    assert main(["corpus", "build", "--corpus", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sql_context" in err[0]
    assert not (tmp_path / "o.jsonl").exists()

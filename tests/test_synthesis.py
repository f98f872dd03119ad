"""Synthesis: offline determinism, the quality filter, LLM retries and resumable runs."""

from __future__ import annotations

import json
import threading

import pytest
from datasets import Dataset

from coderag.errors import ConfigError, CorpusError, GenerationError
from coderag.training.synthesis import TASK_CATEGORIES, shard_path_for, synthesize_pairs
from coderag.training.synthesis_filter import Candidate, filter_candidates
from coderag.training.synthesis_offline import describe_sql, rewrite_sql


def _load(path) -> list[dict]:
    return Dataset.load_from_disk(str(path)).to_list()


def test_offline_synthesis_is_deterministic_and_covers_four_categories(training_records, tmp_path):
    first = synthesize_pairs(training_records, tmp_path / "a", seed=3, show_progress=False)
    synthesize_pairs(training_records, tmp_path / "b", seed=3, show_progress=False)
    rows_a, rows_b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert rows_a == rows_b and first["kept"] == len(rows_a) > 0
    assert {r["category"] for r in rows_a} == set(TASK_CATEGORIES)
    assert set(rows_a[0]) >= {"anchor", "positive", "category", "provenance", "domain", "backend"}
    assert json.loads((tmp_path / "a" / "synthesis_report.json").read_text())["kept"] == len(rows_a)
    # The retrieval pairs: the positive is the record's own schema (CREATE TABLE of its table).
    by_id = {str(r["id"]): r for r in training_records}
    schema_rows = [r for r in rows_a if r["task"].endswith("->schema")]
    assert len(schema_rows) >= len(training_records)
    for row in schema_rows:
        table = by_id[row["provenance"]]["sql"].split("FROM ")[1].split()[0].rstrip(";")
        assert f"CREATE TABLE {table}" in row["positive"]
        assert "INSERT" not in row["positive"].upper() or "INSERT" in by_id[row["provenance"]]["sql_context"]
    other_seed = synthesize_pairs(training_records, tmp_path / "c", seed=4, show_progress=False)
    assert other_seed["kept"] > 0 and _load(tmp_path / "c") != rows_a


def test_filter_drops_sql_that_does_not_execute(training_records, tmp_path):
    broken = dict(training_records[0], id=999, sql="SELECT missing_col FROM no_such_table;",
                  sql_prompt="A question whose gold SQL is broken?")
    report = synthesize_pairs(training_records + [broken], tmp_path / "p", show_progress=False)
    rows = _load(tmp_path / "p")
    assert report["dropped"].get("sql_failed", 0) >= 3
    assert not any("no_such_table" in (r["anchor"] + r["positive"]) for r in rows)


def test_filter_reasons_are_counted():
    ctx = "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1),(2);"
    cands = [
        Candidate("q1", "SELECT a FROM t", "code2code", "sql->rewrite", 0, "sql",
                  ("SELECT a FROM t WHERE a > 1",), equivalent_to="SELECT a FROM t"),
        Candidate("q2", "SELEC a FRM", "text2code", "paraphrase->sql", 0, "sql", ("SELEC a FRM",)),
        Candidate("q3", "CREATE TABLE other (b INTEGER);", "text2code", "question->schema", 0, "schema"),
        Candidate("  ", "CREATE TABLE t (a INTEGER);", "text2code", "question->schema", 0, "schema"),
        Candidate("q4", "CREATE TABLE t (a INTEGER);", "text2code", "question->schema", 0, "schema"),
        Candidate("Q4 ", "CREATE TABLE t (a INTEGER);", "text2code", "question->schema", 0, "schema"),
    ]
    result = filter_candidates(cands, [ctx], ["CREATE TABLE t (a INTEGER);"])
    assert dict(result.dropped) == {"not_equivalent": 1, "sql_unparseable": 1, "foreign_positive": 1,
                                    "empty_anchor": 1, "duplicate_anchor": 1}
    assert [c.anchor for c in result.kept] == ["q4"]


def test_offline_text_helpers():
    assert describe_sql("SELECT city, SUM(total) FROM orders WHERE total > 1 GROUP BY city").startswith(
        "Returns city, SUM(total) from orders, for rows where total > 1, grouped by city")
    rewritten = rewrite_sql("SELECT a FROM t WHERE a > 1", "CREATE TABLE t (a INTEGER);")
    assert rewritten and rewritten != "SELECT a FROM t WHERE a > 1"


class _Crash(BaseException):
    """Stands for the process being killed mid-run (not an ordinary, retryable error)."""


class _FakeLLM:
    """A deterministic generator: category-appropriate replies; can crash or fail on purpose."""

    def __init__(self, crash_after: int | None = None, fail_first: int = 0):
        self.calls = 0
        self.crash_after = crash_after
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def complete(self, messages, *, max_tokens=256, temperature=0.0) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.crash_after is not None and n > self.crash_after:
            raise _Crash()
        if n <= self.fail_first:
            raise GenerationError("endpoint returned 503")
        prompt = messages[-1]["content"]
        if "equivalent" in prompt:
            sql = prompt.split("SQL:\n")[-1].strip()
            return f"Here it is:\n```sql\n{sql.replace('SELECT', 'select')}\n```"
        if "Describe" in prompt:
            return f"Reads the table and reports figures (reply {n})."
        return f"Rewritten request number {n} about the data?"


def test_llm_backend_resumes_after_a_crash(training_records, tmp_path):
    out = tmp_path / "pairs"
    records = training_records[:6]
    crashing = _FakeLLM(crash_after=10)
    with pytest.raises(_Crash):
        synthesize_pairs(records, out, backend="llm", generator=crashing, concurrency=1,
                         show_progress=False)
    assert not out.exists()
    shard = shard_path_for(out)
    assert len(shard.read_text().splitlines()) == 10

    healthy = _FakeLLM()
    report = synthesize_pairs(records, out, backend="llm", generator=healthy, concurrency=3,
                              show_progress=False)
    items = len(records) * len(TASK_CATEGORIES)
    assert healthy.calls == items - 10
    assert report["resumed"] == 10 and report["generated"] == items - 10
    rows = _load(out)
    assert rows and {r["backend"] for r in rows} == {"llm"}
    assert any(r["task"] == "sql->rewrite" and r["positive"].startswith("select") for r in rows)
    assert not shard.exists()


def test_llm_failures_are_counted_not_retried_by_synthesis(training_records, tmp_path):
    # Transient failures are the client's to retry (OpenAI max_retries); synthesis calls once per item.
    flaky = _FakeLLM(fail_first=2)
    report = synthesize_pairs(training_records[:2], tmp_path / "p", backend="llm", generator=flaky,
                              concurrency=1, show_progress=False)
    assert report["generation_failed"] == 2 and report["generated"] == 2 * len(TASK_CATEGORIES) - 2

    dead = _FakeLLM(fail_first=10**6)
    report = synthesize_pairs(training_records[:2], tmp_path / "q", backend="llm", generator=dead,
                              concurrency=2, show_progress=False)
    assert report["generation_failed"] == 2 * len(TASK_CATEGORIES) and report["kept"] == 0
    assert dead.calls == 2 * len(TASK_CATEGORIES)


def test_bad_inputs_raise_clear_errors(training_records, tmp_path):
    with pytest.raises(ConfigError, match="categories"):
        synthesize_pairs(training_records, tmp_path / "x", categories=("text2sql",))
    with pytest.raises(ConfigError, match="backend"):
        synthesize_pairs(training_records, tmp_path / "x", backend="gpt")
    with pytest.raises(CorpusError, match="sql_context"):
        synthesize_pairs([{"id": 1, "domain": "d", "sql_prompt": "q", "sql": "SELECT 1"}], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_max_pairs_caps_output(training_records, tmp_path):
    report = synthesize_pairs(training_records, tmp_path / "p", max_pairs=7, show_progress=False)
    assert report["kept"] == 7 and len(_load(tmp_path / "p")) == 7


def test_cli_synth_writes_pairs_from_the_train_side_only(training_records, tmp_path, capsys):
    from coderag.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in training_records))
    out = tmp_path / "pairs"
    code = main(["synth", "--corpus", str(corpus), "--n-records", "24", "--eval-fraction", "0.34",
                 "--categories", "text2code,hybrid", "--output", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["held_out_records"] == 12 and report["records"] == 12
    assert {r["category"] for r in _load(out)} == {"text2code", "hybrid"}
    assert main(["synth", "--corpus", str(corpus), "--categories", "nope", "--output", str(out)]) == 2


class _HangingLLM:
    def __init__(self):
        self.calls = 0

    def complete(self, messages, *, max_tokens=256, temperature=0.0) -> str:
        self.calls += 1
        threading.Event().wait(2.0)
        return "too late"


def test_llm_requests_time_out(training_records, tmp_path):
    hanging = _HangingLLM()
    report = synthesize_pairs(training_records[:1], tmp_path / "p", backend="llm", generator=hanging,
                              categories=("code2text",), concurrency=1, timeout_s=0.05, show_progress=False)
    assert hanging.calls == 1 and report["generation_failed"] == 1 and report["kept"] == 0


def test_gold_dml_is_checked_but_generated_sql_runs_read_only():
    ctx = "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);"
    gold = "INSERT INTO t VALUES (2);"
    cands = [
        Candidate("add a row", gold, "text2code", "paraphrase->sql", 0, "sql", (gold,)),
        Candidate("drop it", "DELETE FROM t;", "code2code", "sql->rewrite", 0, "sql", (gold, "DELETE FROM t;")),
    ]
    result = filter_candidates(cands, [ctx], ["CREATE TABLE t (a INTEGER);"], trusted_sql=[gold])
    assert [c.anchor for c in result.kept] == ["add a row"] and result.dropped == {"sql_failed": 1}

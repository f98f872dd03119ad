"""Exact Match, Execution Accuracy on real SQLite, retrieval metrics and the evaluation loop."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from coderag.errors import GenerationError, GeneratorUnavailable
from coderag.evaluation.execution_match import execution_match as verdict_on
from coderag.evaluation.ranking import retrieval_metrics
from coderag.evaluation.report import format_table
from coderag.evaluation.sql_metrics import (
    evaluate_text_to_sql,
    exact_match,
    is_ordered,
)
from coderag.sql.execution import sqlite_from_context

CONTEXT = ("CREATE TABLE orders (order_id INTEGER, customer TEXT, total REAL);"
           "INSERT INTO orders VALUES (1, 'ann', 10.5), (2, 'bob', 20.0), (3, 'ann', 4.5), (4, 'cy', 20.0);")


def test_exact_match_ignores_formatting_only():
    assert exact_match("select CUSTOMER from Orders where total>10;", "SELECT customer FROM orders WHERE total > 10")
    assert not exact_match("SELECT customer FROM orders WHERE total > 11",
                           "SELECT customer FROM orders WHERE total > 10")
    assert not exact_match("", "SELECT 1")


def execution_match(pred: str, gold: str, context: str | None = None, *, conn_factory=None,
                    mode: str = "strict") -> bool:
    conn = conn_factory() if conn_factory is not None else sqlite_from_context(context)
    try:
        return verdict_on(conn, pred, gold, mode=mode).match
    finally:
        conn.close()


def test_execution_match_is_order_insensitive_without_order_by():
    gold = "SELECT customer FROM orders WHERE total > 5"
    assert execution_match("SELECT customer FROM orders WHERE total > 5 ORDER BY customer DESC", gold, CONTEXT)
    assert execution_match("SELECT customer FROM orders WHERE total >= 10.5", gold, CONTEXT)
    # A multiset, not a set: a missing duplicate row ('ann' twice) is a mismatch (unless DISTINCT is dropped).
    assert not execution_match("SELECT DISTINCT customer FROM orders", "SELECT customer FROM orders", CONTEXT)
    assert execution_match("SELECT DISTINCT customer FROM orders", "SELECT customer FROM orders", CONTEXT,
                           mode="test-suite")


def test_execution_match_respects_gold_order_by():
    gold = "SELECT order_id FROM orders ORDER BY total DESC, order_id"
    assert execution_match("SELECT order_id FROM orders ORDER BY total DESC, order_id ASC", gold, CONTEXT)
    assert not execution_match("SELECT order_id FROM orders ORDER BY total, order_id", gold, CONTEXT)
    assert is_ordered(gold) and not is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a)")


def test_strict_execution_match_rounds_floats():
    assert execution_match("SELECT SUM(total) / COUNT(*) FROM orders", "SELECT AVG(total) FROM orders", CONTEXT)
    assert execution_match("SELECT 0.1 + 0.2", "SELECT 0.3", CONTEXT)


@pytest.mark.parametrize(("pred", "reason"), [
    ("DELETE FROM orders", "refused"),
    ("SELECT 1; DROP TABLE orders", "refused"),
    ("SELECT nope FROM orders", "predicted SQL failed"),
    ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n", "longer than"),
    ("SELECT customer FROM orders", "different result"),
])
def test_failing_predictions_score_false_with_a_reason(pred, reason):
    outcome = verdict_on(sqlite_from_context(CONTEXT), pred, "SELECT COUNT(*) FROM orders", timeout_s=0.3)
    assert not outcome.match and reason in outcome.reason


def test_execution_match_on_a_database_file(tmp_path):
    path = tmp_path / "db.sqlite"
    setup = sqlite3.connect(path)
    setup.executescript(CONTEXT)
    setup.close()
    assert verdict_on(path, "SELECT COUNT(*) FROM orders", "SELECT COUNT(order_id) FROM orders").match
    outcome = verdict_on(path, "SELECT 1", "SELECT nope FROM orders")
    assert outcome.gold_error and not outcome.match


def test_retrieval_metrics_hand_computed():
    ranked = [[7, 1, 2], [3, 7, 9, 4, 5, 6, 8, 10, 11, 12, 0], [1, 2, 3], list(range(20, 31)) + [9]]
    gold = [7, 0, 3, 9]  # ranks 1, 11, 3, 12 (beyond 10 counts for nothing at @10)
    m = retrieval_metrics(ranked, gold)
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(2 / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert retrieval_metrics([[5]], [6]) == dict.fromkeys(("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"),
                                                          0.0)
    with pytest.raises(ValueError):
        retrieval_metrics([[1]], [1, 2])


class ScriptedGenerator:
    """Replies from a script, in order: the evaluation loop's bookkeeping is what is under test here."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def complete(self, messages, *, max_tokens=256, temperature=0.0):
        self.prompts.append(messages)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _records():
    questions = ["How many orders?", "Total per customer?", "Delete everything", "Nonsense", "Broken column",
                 "Failing backend"]
    golds = ["SELECT COUNT(*) FROM orders", "SELECT customer, SUM(total) FROM orders GROUP BY customer",
             "SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM orders", "SELECT total FROM orders",
             "SELECT 1"]
    return [{"id": i, "sql_prompt": q, "sql": g, "sql_context": CONTEXT}
            for i, (q, g) in enumerate(zip(questions, golds, strict=True))]


def test_evaluate_text_to_sql_counts_every_outcome():
    generator = ScriptedGenerator([
        "```sql\nselect count(*) from orders;\n```",  # EM and EX
        "Sure:\n```sql\nSELECT customer, SUM(total) AS s FROM orders GROUP BY 1\n```",  # EX, not EM
        "```sql\nDELETE FROM orders\n```",  # guard
        "I cannot help with that.",  # no SQL
        "```sql\nSELECT price FROM orders\n```",  # execution failure
        GenerationError("the model returned garbage"),
    ])
    schemas = [["CREATE TABLE orders (order_id INTEGER, customer TEXT, total REAL);"]] * 6
    result = evaluate_text_to_sql(_records(), generator, schemas, show_progress=False)
    agg = result["aggregate"]
    assert agg["n"] == 6
    assert agg["em"] == pytest.approx(1 / 6) and agg["ex"] == pytest.approx(2 / 6)
    failures = ("parse_failures", "guard_refusals", "execution_failures", "generation_failures")
    assert [agg[key] for key in failures] == [1, 1, 1, 1]
    assert [r["status"] for r in result["rows"]] == ["ok", "ok", "guard_refused", "parse_failure", "execution_failure",
                                                     "generation_failure"]
    assert "CREATE TABLE orders" in generator.prompts[0][-1]["content"]
    json.dumps(result)  # results are JSON-serialisable as they are


def test_no_retrieval_baseline_prompt_has_no_schema_and_retriever_callable_works():
    seen = []
    generator = ScriptedGenerator(["```sql\nSELECT COUNT(*) FROM orders\n```"] * 2)
    evaluate_text_to_sql(_records()[:1], generator, [[]], show_progress=False)
    assert generator.prompts[0][-1] == {"role": "user", "content": "Question: How many orders?"}
    assert "orders" not in json.dumps(generator.prompts[0][:-1])  # the fixed demonstration is gold-free
    evaluate_text_to_sql(_records()[:1], generator, lambda q: seen.append(q) or ["CREATE TABLE orders (x INT);"],
                         show_progress=False)
    assert seen == ["How many orders?"] and "CREATE TABLE orders (x INT);" in generator.prompts[1][-1]["content"]


def test_unreachable_generator_stops_the_evaluation():
    generator = ScriptedGenerator([GeneratorUnavailable("endpoint down")])
    with pytest.raises(GeneratorUnavailable):
        evaluate_text_to_sql(_records()[:2], generator, [[], []], show_progress=False)


def test_format_table_side_by_side():
    table = format_table({"with retrieval": {"n": 2, "em": 0.5, "ex": 1.0},
                          "no retrieval": {"aggregate": {"n": 2, "em": 0.0, "ex": 0.25}}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "with", "retrieval", "no", "retrieval"]
    assert lines[3].split() == ["em", "0.500", "0.000"]
    assert format_table({"recall@1": 0.25}).splitlines()[2].split() == ["recall@1", "0.250"]


# --- real outside data: Spider dev (skipped when ../shared is absent) -----------------------------------

@pytest.fixture(scope="module")
def spider(spider_dir):
    from coderag.corpus.spider import load_spider

    return load_spider(spider_dir)


def test_spider_gold_passes_guard_and_execution_match_on_its_sqlite(spider):
    """Every Spider dev gold query is allowed by the guard and matches itself under the read-only runner."""
    from coderag.sql.execution import open_sqlite_readonly
    from coderag.sql.guard import sql_guard

    refused = [r["sql"] for r in spider.records if not sql_guard(r["sql"]).allowed]
    assert not refused, refused[:3]
    mismatched = [r["sql"] for r in spider.records
                  if not execution_match(r["sql"], r["sql"], conn_factory=lambda r=r: open_sqlite_readonly(
                      spider.db_paths[r["domain"]]))]
    assert not mismatched, mismatched[:3]
    # A query over the right database but with a different answer does not match.
    record = next(r for r in spider.records if r["sql"].upper().startswith("SELECT COUNT(*) FROM"))
    assert not execution_match(record["sql"] + " WHERE 0", record["sql"],
                               conn_factory=lambda: open_sqlite_readonly(spider.db_paths[record["domain"]]))


def test_spider_evaluation_loop_runs_on_the_sqlite_files(spider):
    from coderag.sql.execution import open_sqlite_readonly

    records = spider.records[:6]
    echo = ScriptedGenerator([f"```sql\n{r['sql']}\n```" for r in records])
    result = evaluate_text_to_sql(records, echo, [[spider.schemas[r["domain"]]] for r in records],
                                  conn_factory=lambda r: open_sqlite_readonly(spider.db_paths[r["domain"]]),
                                  show_progress=False)
    assert result["aggregate"]["ex"] == 1.0 and result["aggregate"]["em"] == 1.0

"""Scores: Exact Match and Execution Accuracy of generated SQL, and ranking metrics of schema retrieval.

Execution Accuracy runs gold and predicted SQL on the same database (an in-memory SQLite built from the
record's ``sql_context``, or a connection a caller supplies, e.g. a Spider ``.sqlite`` file) and compares
result multisets: order-insensitive unless the gold query sorts at its top level.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlglot import exp
from tqdm.auto import tqdm

from coderag.errors import GenerationError, GeneratorUnavailable
from coderag.generation.prompting import build_messages
from coderag.sql.execution import run_query, sqlite_from_context
from coderag.sql.guard import sql_guard
from coderag.sql.text import SqlParseError, extract_sql, normalize_sql, parse_sql

log = logging.getLogger(__name__)

# Floats from AVG / division differ in the last bits between equivalent queries.
FLOAT_DIGITS = 6
ConnFactory = Callable[[], sqlite3.Connection]


def exact_match(pred: str, gold: str) -> bool:
    """True when both SQL strings have the same :func:`~coderag.sql.text.normalize_sql` form."""
    pred_norm = normalize_sql(pred)
    return bool(pred_norm) and pred_norm == normalize_sql(gold)


def is_ordered(sql: str) -> bool:
    """True when ``sql`` sorts its final result (a top-level ORDER BY), so row order is part of it."""
    try:
        tree = parse_sql(sql)
    except SqlParseError:
        return False
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    return tree.args.get("order") is not None


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        rounded = round(value, FLOAT_DIGITS)
        return int(rounded) if rounded.is_integer() else rounded
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    return value


def results_match(pred_rows: Sequence[tuple], gold_rows: Sequence[tuple], ordered: bool) -> bool:
    """Row lists compared as multisets (or as sequences when ``ordered``), floats rounded."""
    pred = [tuple(_canonical(v) for v in row) for row in pred_rows]
    gold = [tuple(_canonical(v) for v in row) for row in gold_rows]
    return pred == gold if ordered else Counter(pred) == Counter(gold)


@dataclass
class ExecutionOutcome:
    """Execution Accuracy of one prediction and, when it is False, why (guard, error, timeout, mismatch)."""

    match: bool
    reason: str = ""
    gold_failed: bool = False


def execution_outcome(pred_sql: str, gold_sql: str, *, sql_context: str | None = None,
                      conn_factory: ConnFactory | None = None, timeout_s: float = 5.0) -> ExecutionOutcome:
    """Run gold then (guarded) predicted SQL on one database and compare their results."""
    if (sql_context is None) == (conn_factory is None):
        raise ValueError("pass exactly one of sql_context or conn_factory")
    conn = sqlite_from_context(sql_context) if conn_factory is None else conn_factory()
    try:
        try:
            gold_rows = run_query(conn, gold_sql, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a broken gold query is recorded, not fatal
            return ExecutionOutcome(False, f"gold SQL failed: {exc}", gold_failed=True)
        verdict = sql_guard(pred_sql)
        if not verdict.allowed:
            return ExecutionOutcome(False, verdict.reason)
        try:
            pred_rows = run_query(conn, pred_sql, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure of predicted SQL scores 0
            return ExecutionOutcome(False, f"predicted SQL failed: {exc}")
    finally:
        conn.close()
    if results_match(pred_rows, gold_rows, ordered=is_ordered(gold_sql)):
        return ExecutionOutcome(True, "same result")
    return ExecutionOutcome(False, f"different result ({len(pred_rows)} rows vs gold {len(gold_rows)})")


def execution_match(pred_sql: str, gold_sql: str, sql_context: str | None = None, *,
                    conn_factory: ConnFactory | None = None, timeout_s: float = 5.0) -> bool:
    """Execution Accuracy of one prediction (see :func:`execution_outcome` for the reason)."""
    return execution_outcome(pred_sql, gold_sql, sql_context=sql_context, conn_factory=conn_factory,
                             timeout_s=timeout_s).match


@dataclass
class ExampleResult:
    """One scored question (JSON-serialisable through :meth:`to_dict`)."""

    id: Any
    question: str
    gold_sql: str
    pred_sql: str
    em: bool
    ex: bool
    status: str  # ok | mismatch | parse_failure | guard_refused | execution_failure | generation_failure | gold_failure
    reason: str
    n_schemas: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score_example(record: Mapping[str, Any], schemas: list[str], generator, *, max_tokens: int,
                   timeout_s: float, conn_factory: Callable[[Mapping[str, Any]], sqlite3.Connection] | None
                   ) -> ExampleResult:
    started = time.perf_counter()
    question, gold = str(record["sql_prompt"]), str(record["sql"])

    def result(pred: str, em: bool, ex: bool, status: str, reason: str) -> ExampleResult:
        return ExampleResult(record.get("id"), question, gold, pred, em, ex, status, reason, len(schemas),
                             round(time.perf_counter() - started, 3))

    try:
        reply = generator.complete(build_messages(question, schemas), max_tokens=max_tokens, temperature=0.0)
    except GeneratorUnavailable:
        raise  # the endpoint is down: every further question would fail the same way
    except GenerationError as exc:
        return result("", False, False, "generation_failure", str(exc))
    pred = extract_sql(reply)
    try:
        parse_sql(pred)
    except SqlParseError as exc:
        return result(pred, False, False, "parse_failure", str(exc))
    em = exact_match(pred, gold)
    verdict = sql_guard(pred)
    if not verdict.allowed:
        return result(pred, em, False, "guard_refused", verdict.reason)
    if conn_factory is not None:
        outcome = execution_outcome(pred, gold, conn_factory=lambda: conn_factory(record), timeout_s=timeout_s)
    else:
        outcome = execution_outcome(pred, gold, sql_context=str(record["sql_context"]), timeout_s=timeout_s)
    if outcome.match:
        return result(pred, em, True, "ok", outcome.reason)
    status = "gold_failure" if outcome.gold_failed else (
        "execution_failure" if outcome.reason.startswith("predicted SQL failed") else "mismatch")
    return result(pred, em, False, status, outcome.reason)


def aggregate(rows: Sequence[ExampleResult]) -> dict[str, Any]:
    """EM / EX rates and failure counts over scored examples."""
    n = len(rows)
    count = Counter(r.status for r in rows)
    return {
        "n": n,
        "em": sum(r.em for r in rows) / n if n else 0.0,
        "ex": sum(r.ex for r in rows) / n if n else 0.0,
        "parse_failures": count["parse_failure"],
        "guard_refusals": count["guard_refused"],
        "execution_failures": count["execution_failure"],
        "generation_failures": count["generation_failure"],
        "gold_failures": count["gold_failure"],
        "seconds_per_question": round(sum(r.seconds for r in rows) / n, 3) if n else 0.0,
    }


def evaluate_text_to_sql(examples: Sequence[Mapping[str, Any]], generator,
                         schemas: Sequence[Sequence[str]] | Callable[[str], Sequence[str]], *,
                         max_tokens: int = 256, timeout_s: float = 5.0,
                         conn_factory: Callable[[Mapping[str, Any]], sqlite3.Connection] | None = None,
                         desc: str = "text-to-SQL", show_progress: bool = True) -> dict[str, Any]:
    """Prompt, generate, extract, guard and score every example; ``{"aggregate": {...}, "rows": [...]}``.

    ``examples`` are gretel-format records (``sql_prompt``, ``sql``, ``sql_context``). ``schemas`` is one
    list of schema snippets per example, or a function question -> snippets (the retriever). Pass empty
    lists for the no-retrieval baseline. ``conn_factory(record)`` supplies the database when the context
    holds no rows (Spider: a read-only connection to the record's ``.sqlite`` file). A generator that is
    unreachable (:class:`GeneratorUnavailable`) stops the evaluation; other generation errors score 0.
    """
    if not callable(schemas) and len(schemas) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(schemas)} schema lists")
    rows: list[ExampleResult] = []
    for i, record in enumerate(tqdm(examples, desc=desc, disable=not show_progress, unit="q")):
        snippets = list(schemas(str(record["sql_prompt"])) if callable(schemas) else schemas[i])
        rows.append(_score_example(record, snippets, generator, max_tokens=max_tokens, timeout_s=timeout_s,
                                   conn_factory=conn_factory))
        log.debug("example %s: %s", record.get("id"), rows[-1].status)
    return {"aggregate": aggregate(rows), "rows": [r.to_dict() for r in rows]}

"""SQL metrics: normalised Exact Match, the strict result comparison, and scoring records with given schemas.

Execution Accuracy itself (test-suite semantics by default, ``strict`` on request) is
:func:`coderag.evaluation.execution_match.execution_match`; whole benchmarks are scored by
:mod:`coderag.evaluation.benchmark`.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlglot import exp

from coderag.sql.text import SqlParseError, normalize_sql, parse_sql

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


def evaluate_text_to_sql(examples: Sequence[Mapping[str, Any]], generator,
                         schemas: Sequence[Sequence[str]] | Callable[[str], Sequence[str]], *,
                         max_tokens: int = 256, timeout_s: float = 5.0,
                         conn_factory: Callable[[Mapping[str, Any]], sqlite3.Connection] | None = None,
                         ex_mode: str = "test-suite", show_progress: bool | None = None) -> dict[str, Any]:
    """Score ``generator`` on gretel-format ``examples`` with given schema snippets per example.

    The same scoring as :func:`coderag.evaluation.benchmark.evaluate_benchmark` (generation, extraction,
    guard, execution, test-suite EX, EM, hardness), for callers that choose each prompt's schemas
    themselves: ``schemas`` is one list per example, or a function question -> snippets (pass empty lists
    for the no-retrieval baseline). ``conn_factory(record)`` supplies the database when the context holds
    no rows (Spider: a read-only connection to the record's ``.sqlite`` file).

    Returns:
        ``{"aggregate": {n, em, ex, em_semantic, parse_failures, guard_refusals, execution_failures,
        generation_failures, gold_failures}, "rows": [per-question dicts]}``.
    """
    from coderag.evaluation.benchmark import evaluate_benchmark, load_gretel_benchmark

    if not callable(schemas) and len(schemas) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(schemas)} schema lists")
    prompt_schemas = [list(schemas(str(r["sql_prompt"])) if callable(schemas) else schemas[i])
                      for i, r in enumerate(examples)]
    benchmark = load_gretel_benchmark(list(examples), name="records")
    if conn_factory is not None:
        records = list(examples)
        benchmark.connect_fn = lambda question: conn_factory(records[int(question.index)])
    result = evaluate_benchmark(benchmark, generator=generator, prompt_schemas=prompt_schemas, ex_mode=ex_mode,
                                max_new_tokens=max_tokens, timeout_s=timeout_s, show_progress=show_progress)
    statuses = result.summary["statuses"]
    aggregate = {"n": result.summary["n"], "em": result.summary["em"], "ex": result.summary["ex"],
                 "em_semantic": result.summary["em_semantic"]}
    for status, key in (("parse_failure", "parse_failures"), ("guard_refused", "guard_refusals"),
                        ("execution_failure", "execution_failures"), ("generation_failure", "generation_failures"),
                        ("gold_failure", "gold_failures")):
        aggregate[key] = statuses.get(status, 0)
    return {"aggregate": aggregate, "rows": [r.to_dict() for r in result.rows]}

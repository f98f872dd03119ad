"""Quality filter for synthesized pairs, with every drop counted by reason.

A candidate pair is kept only when: its anchor is non-empty and not a duplicate (same task, same
normalized anchor); every SQL it carries parses (sqlglot) and executes on an SQLite database built
from its own record's ``sql_context``; an SQL rewrite returns the same rows as the record's gold SQL;
and a schema positive is the record's own schema snippet.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlglot

log = logging.getLogger(__name__)

DROP_REASONS = (
    "empty_anchor",
    "empty_positive",
    "duplicate_anchor",
    "sql_unparseable",
    "sql_failed",
    "not_equivalent",
    "foreign_positive",
)


@dataclass
class Candidate:
    """One proposed pair plus what the filter must check about it."""

    anchor: str
    positive: str
    category: str
    task: str
    record_index: int
    positive_kind: str  # "schema" | "sql" | "text"
    sql_checks: tuple[str, ...] = ()  # SQL that must parse and execute on the record's database
    equivalent_to: str | None = None  # gold SQL whose rows a rewrite must reproduce


@dataclass
class FilterResult:
    kept: list[Candidate] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def normalize_text(text: str) -> str:
    """Whitespace-collapsed, lower-cased text: the identity used for duplicates and 'identical' snippets."""
    return " ".join(str(text).split()).lower()


def _rows_key(rows: Sequence[tuple], ordered: bool):
    as_text = [repr(tuple(r)) for r in rows]
    return as_text if ordered else sorted(as_text)


class _RecordDatabase:
    """Runs SQL against fresh SQLite databases built from one record's ``sql_context``."""

    def __init__(self, sql_context: str, timeout_s: float, trusted_sql: str | None):
        self.sql_context = sql_context
        self.timeout_s = timeout_s
        self.trusted_sql = trusted_sql
        self._results: dict[str, tuple[bool, list]] = {}

    def run(self, sql: str) -> tuple[bool, list]:
        if sql not in self._results:
            # The record's own SQL may be DML (gretel has INSERT/UPDATE/DELETE tasks) and runs on a
            # throw-away database; anything generated runs read-only (no ATTACH writing files, etc.).
            read_only = sql != self.trusted_sql
            from coderag.sql.execution import run_query, sqlite_from_context

            try:
                # A fresh database per statement: DML in one check must not change another's data.
                conn = sqlite_from_context(self.sql_context)
                try:
                    rows = run_query(conn, sql, timeout_s=self.timeout_s, read_only=read_only)
                    self._results[sql] = (True, list(rows))
                finally:
                    conn.close()
            except Exception as exc:  # any execution failure is a drop, counted, not a crash
                log.debug("sql failed: %s: %s", type(exc).__name__, exc)
                self._results[sql] = (False, [])
        return self._results[sql]


def _parses(sql: str) -> bool:
    try:
        return bool(sql.strip()) and all(s is not None for s in sqlglot.parse(sql, read="sqlite"))
    except sqlglot.errors.SqlglotError:
        return False


def _has_order_by(sql: str) -> bool:
    try:
        return sqlglot.parse_one(sql, read="sqlite").find(sqlglot.exp.Order) is not None
    except sqlglot.errors.SqlglotError:
        return False


def filter_candidates(
    candidates: Sequence[Candidate],
    sql_contexts: Sequence[str],
    own_snippets: Sequence[str],
    *,
    timeout_s: float = 5.0,
    trusted_sql: Sequence[str] | None = None,
    progress: Callable | None = None,
) -> FilterResult:
    """Apply the quality filter; ``sql_contexts[i]`` / ``own_snippets[i]`` belong to record ``i``.

    ``trusted_sql[i]`` (record ``i``'s gold SQL) may modify its throw-away database; every other
    statement runs read-only.
    """
    result = FilterResult()
    databases: dict[int, _RecordDatabase] = {}
    seen: set[tuple[str, str]] = set()
    iterator = progress(candidates) if progress else candidates
    for cand in iterator:
        reason = _check(cand, sql_contexts, own_snippets, databases, seen, timeout_s, trusted_sql)
        if reason:
            result.dropped[reason] += 1
        else:
            result.kept.append(cand)
    return result


def _check(cand, sql_contexts, own_snippets, databases, seen, timeout_s, trusted_sql) -> str | None:
    if not cand.anchor.strip():
        return "empty_anchor"
    if not cand.positive.strip():
        return "empty_positive"
    if cand.positive_kind == "schema" and normalize_text(cand.positive) != normalize_text(
        own_snippets[cand.record_index]
    ):
        return "foreign_positive"
    key = (cand.task, normalize_text(cand.anchor))
    if key in seen:
        return "duplicate_anchor"
    if cand.sql_checks or cand.equivalent_to:
        if cand.record_index not in databases:
            trusted = trusted_sql[cand.record_index] if trusted_sql is not None else None
            databases[cand.record_index] = _RecordDatabase(sql_contexts[cand.record_index], timeout_s, trusted)
        db = databases[cand.record_index]
        for sql in cand.sql_checks:
            if not _parses(sql):
                return "sql_unparseable"
            ok, _ = db.run(sql)
            if not ok:
                return "sql_failed"
        if cand.equivalent_to is not None:
            gold_ok, gold_rows = db.run(cand.equivalent_to)
            ok, rows = db.run(cand.sql_checks[-1])
            ordered = _has_order_by(cand.equivalent_to)
            if not gold_ok or not ok or _rows_key(rows, ordered) != _rows_key(gold_rows, ordered):
                return "not_equivalent"
    seen.add(key)
    return None

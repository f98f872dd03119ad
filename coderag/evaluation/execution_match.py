"""Execution Accuracy with the semantics of Spider's official test-suite evaluator (taoyds/test-suite-sql-eval).

Two modes:

``"test-suite"`` (the default) scores a prediction as the official ``eval_exec_match`` does:

* spaced comparison operators are joined first (``! =`` -> ``!=``, ``> =``, ``< =``), as Spider's gold
  queries contain them and SQLite rejects them;
* unless ``keep_distinct``, every ``DISTINCT`` keyword is dropped from both queries (``SELECT DISTINCT a``
  -> ``SELECT a`` and ``COUNT(DISTINCT a)`` -> ``COUNT(a)``, like the official ``remove_distinct``);
* results are bags of rows; row order counts only when the gold query contains ``ORDER BY`` (anywhere,
  as in the official ``'order by' in gold.lower()``; see :func:`gold_orders`);
* the predicted columns may come in any order: the prediction matches when some permutation of its
  columns gives the gold result (:func:`results_match`);
* several databases (a test suite) may be given: the prediction must match on every one of them.

``"strict"`` is the comparison :func:`coderag.evaluation.sql_metrics.execution_outcome` makes: columns
in the same order, floats rounded to 6 digits, order-sensitive only under a top-level ORDER BY.

Both modes run the gold query first (a broken gold query gives a verdict with ``gold_error`` set, not an
exception), pass the prediction through :func:`coderag.sql.guard.sql_guard`, and run every query through
:func:`coderag.sql.execution.run_query` (read-only authorizer, time limit, row limit); a database given
as a path is opened read-only. A prediction that is refused, fails or times out scores 0.

Deliberate differences from the official script: the time limit defaults to 5 s (official: 60 s), the
MySQL-only ``YEAR(CURDATE())`` rewrite and value plugging (``--plug_value``) are not done, and the column
permutation search is pruned by exact per-column value multisets (a necessary condition) instead of the
official random 20-row sample, which gives the same verdicts deterministically.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from coderag.errors import ConfigError
from coderag.evaluation.sql_metrics import is_ordered
from coderag.evaluation.sql_metrics import results_match as strict_results_match
from coderag.sql.execution import open_sqlite_readonly, run_query
from coderag.sql.guard import sql_guard
from coderag.sql.text import SqlParseError, parse_sql

MODES = ("test-suite", "strict")
# A SQLite file or connection, or a server database (coderag.sql.databases.Database).
Database = Any

# String literals ('...' or "..."; Spider writes values in double quotes) and the code between them.
_QUOTED_OR_CODE = re.compile(r"""('(?:[^']|'')*'?|"(?:[^"]|"")*"?)|([^'"]+)""")
_SPACED_OPERATOR = re.compile(r"([!<>])\s+=")
_DISTINCT_WORD = re.compile(r"\bdistinct\b\s*", re.IGNORECASE)
_ORDER_BY_WORDS = re.compile(r"\border\s+by\b", re.IGNORECASE)


@dataclass(frozen=True)
class ExecutionVerdict:
    """The execution verdict on one prediction.

    Attributes:
        match: True when the prediction's result equals the gold result (on every database).
        reason: One sentence saying why.
        pred_error: Why the prediction could not run (guard refusal, SQLite error, timeout), else None.
        gold_error: Why the gold query could not run, else None (then ``match`` is False).
    """

    match: bool
    reason: str
    pred_error: str | None = None
    gold_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _map_code(sql: str, fn) -> str:
    """Apply ``fn`` to the parts of ``sql`` outside string literals and quoted identifiers."""
    return "".join(m.group(1) or fn(m.group(2)) for m in _QUOTED_OR_CODE.finditer(sql))


def join_spaced_operators(sql: str) -> str:
    """Join comparison operators written with a space (``! =``, ``> =``, ``< =``), as the official script does.

    Args:
        sql: SQL text; quoted strings are left as they are.

    Returns:
        ``sql`` with ``! =`` / ``> =`` / ``< =`` outside quotes written ``!=`` / ``>=`` / ``<=``.

    Example:
        >>> join_spaced_operators('SELECT a FROM t WHERE b ! =  "x"')
        'SELECT a FROM t WHERE b !=  "x"'
    """
    return _map_code(sql or "", lambda code: _SPACED_OPERATOR.sub(r"\1=", code))


def _strip_distinct_tokens(sql: str, dialect: str) -> str:
    """Cut every DISTINCT keyword token out of ``sql``, leaving all other text as written."""
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except sqlglot.errors.SqlglotError:
        return _map_code(sql, lambda code: _DISTINCT_WORD.sub("", code))
    out, last = [], 0
    for token in tokens:
        if token.token_type == TokenType.DISTINCT:
            out.append(sql[last : token.start])
            last = token.end + 1
            while last < len(sql) and sql[last].isspace():
                last += 1
    out.append(sql[last:])
    return "".join(out)


def strip_distinct(sql: str, dialect: str = "sqlite") -> str:
    """``sql`` without any DISTINCT: ``SELECT DISTINCT`` and ``COUNT(DISTINCT x)`` (-> ``COUNT(x)``) alike.

    Mirrors the official ``remove_distinct``, which drops every ``distinct`` token. The query is rewritten
    through sqlglot; SQL that holds no DISTINCT comes back unchanged, and SQL that sqlglot cannot parse
    has its DISTINCT keyword tokens cut out of the text instead. ``UNION`` stays a set union.

    Args:
        sql: One SQL query.
        dialect: sqlglot dialect to read and write it in.

    Returns:
        The query without DISTINCT.

    Example:
        >>> strip_distinct("SELECT DISTINCT name FROM singer")
        'SELECT name FROM singer'
        >>> strip_distinct("SELECT COUNT(DISTINCT country) FROM singer")
        'SELECT COUNT(country) FROM singer'
    """
    try:
        tree = parse_sql(sql, dialect)
    except SqlParseError:
        return _strip_distinct_tokens(sql, dialect)
    found = False
    for select in tree.find_all(exp.Select):
        if select.args.get("distinct") is not None:
            select.set("distinct", None)
            found = True
    for distinct in list(tree.find_all(exp.Distinct)):
        if distinct.parent is None or len(distinct.expressions) != 1:
            return _strip_distinct_tokens(sql, dialect)  # e.g. COUNT(DISTINCT a, b): keep the text's shape
        distinct.replace(distinct.expressions[0])
        found = True
    return tree.sql(dialect=dialect) if found else sql


def gold_orders(sql: str, dialect: str = "sqlite", *, top_level: bool = False) -> bool:
    """Whether row order counts when comparing with the results of gold query ``sql``.

    By default this is the official rule: the query contains ``ORDER BY`` anywhere (the official script
    tests ``'order by' in gold.lower()``; here the keyword is found by sqlglot's tokenizer, so it is not
    fooled by a string literal or by extra spaces). With ``top_level`` only an ORDER BY that sorts the
    final result counts (the rule of ``strict`` mode).

    Args:
        sql: The gold query.
        dialect: sqlglot dialect to tokenize / parse it with.
        top_level: Only count an ORDER BY of the outermost query.

    Returns:
        True when row order must match.

    Example:
        >>> gold_orders("SELECT name FROM singer ORDER BY age DESC")
        True
        >>> gold_orders("SELECT name FROM singer WHERE age = (SELECT age FROM singer ORDER BY age LIMIT 1)")
        True
        >>> gold_orders("SELECT name FROM singer WHERE age = (SELECT age FROM singer ORDER BY age LIMIT 1)",
        ...             top_level=True)
        False
    """
    if top_level:
        return is_ordered(sql)
    try:
        return any(t.token_type == TokenType.ORDER_BY for t in sqlglot.tokenize(sql or "", read=dialect))
    except sqlglot.errors.SqlglotError:
        return bool(_ORDER_BY_WORDS.search(sql or ""))


def _bag_permutation_exists(gold_columns: list[tuple], pred_columns: list[tuple], candidates: list[list[int]]) -> bool:
    """Whether some injective gold -> pred column map makes the row bags equal (backtracking search).

    Each partial map is pruned as soon as the bag of predicted rows cut down to the mapped columns differs
    from the bag of gold rows cut down to the same columns (a necessary condition), and a pred column
    equal to one already tried at a position is not tried again (it gives the same rows).
    """
    width = len(gold_columns)
    chosen: list[int] = []

    def extend(i: int) -> bool:
        if i == width:
            return True
        tried: set[tuple] = set()
        gold_prefix = Counter(zip(*gold_columns[: i + 1]))
        for j in candidates[i]:
            if j in chosen or pred_columns[j] in tried:
                continue
            tried.add(pred_columns[j])
            chosen.append(j)
            if Counter(zip(*(pred_columns[k] for k in chosen))) == gold_prefix and extend(i + 1):
                return True
            chosen.pop()
        return False

    return extend(0)


def results_match(gold_rows: Sequence[Sequence[Any]], pred_rows: Sequence[Sequence[Any]], *,
                  order_matters: bool) -> bool:
    """Whether two query results are the same up to row order (unless ``order_matters``) and column order.

    Rows are compared as bags (multisets), or as sequences when ``order_matters``. The predicted columns may
    be a permutation of the gold ones: the results match when some permutation of the predicted columns
    makes them equal. Candidate permutations are pruned by per-column value multisets and by the rows
    cut down to the columns mapped so far, so the search stays fast. Values are compared with Python
    ``==`` (``1 == 1.0``; floats are not rounded). Two empty results match; results with different
    column counts do not.

    Args:
        gold_rows: Rows of the gold query.
        pred_rows: Rows of the predicted query.
        order_matters: Compare rows in order (the gold query sorts).

    Returns:
        True when the results are equivalent.

    Example:
        >>> results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False)
        True
        >>> results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=True)
        False
    """
    gold = [tuple(row) for row in gold_rows]
    pred = [tuple(row) for row in pred_rows]
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    width = len(gold[0])
    if any(len(row) != width for row in gold) or any(len(row) != width for row in pred):
        return False
    gold_columns = [tuple(row[i] for row in gold) for i in range(width)]
    pred_columns = [tuple(row[j] for row in pred) for j in range(width)]
    if order_matters:
        # Rows in order: each gold column must equal some pred column value for value.
        return Counter(gold_columns) == Counter(pred_columns)
    gold_counts = [Counter(column) for column in gold_columns]
    pred_counts = [Counter(column) for column in pred_columns]
    # A permutation can only send pred column j to gold position i if both hold the same values.
    candidates = [[j for j in range(width) if pred_counts[j] == gold_counts[i]] for i in range(width)]
    if any(not options for options in candidates):
        return False
    return _bag_permutation_exists(gold_columns, pred_columns, candidates)


def _describe_mismatch(gold: list[tuple], pred: list[tuple], order_matters: bool) -> str:
    gold_width = len(gold[0]) if gold else 0
    pred_width = len(pred[0]) if pred else 0
    if gold and pred and gold_width != pred_width:
        return f"different result: {pred_width} columns vs gold {gold_width}"
    if len(gold) != len(pred):
        return f"different result: {len(pred)} rows vs gold {len(gold)}"
    if order_matters and results_match(gold, pred, order_matters=False):
        return "same rows in a different order (the gold query has ORDER BY)"
    return f"different result: {len(pred)} rows differ in their values from gold's"


def _lenient_text(raw: bytes) -> str:
    # Some Spider databases hold text that is not valid UTF-8; the official script drops those bytes.
    return raw.decode(errors="ignore")


def _compare_on(conn, pred: str, gold: str, *, mode: str, order_matters: bool,
                timeout_s: float, max_rows: int, dialect: str = "sqlite") -> ExecutionVerdict:
    is_sqlite = isinstance(conn, sqlite3.Connection)
    saved_factory = conn.text_factory if is_sqlite else None
    if mode == "test-suite" and is_sqlite:
        conn.text_factory = _lenient_text

    def run(sql: str) -> list[tuple]:
        if is_sqlite:
            return run_query(conn, sql, timeout_s=timeout_s, max_rows=max_rows)
        return conn.run_query(sql, timeout_s=timeout_s, max_rows=max_rows)

    try:
        try:
            gold_rows = run(gold)
        except Exception as exc:  # noqa: BLE001 - a broken gold query is reported, not fatal
            return ExecutionVerdict(False, f"gold SQL failed: {exc}", gold_error=str(exc))
        verdict = sql_guard(pred, dialect)
        if not verdict.allowed:
            return ExecutionVerdict(False, f"predicted SQL {verdict.reason}", pred_error=verdict.reason)
        try:
            pred_rows = run(pred)
        except Exception as exc:  # noqa: BLE001 - any failure of predicted SQL scores 0
            return ExecutionVerdict(False, f"predicted SQL failed: {exc}", pred_error=str(exc))
    finally:
        if is_sqlite:
            conn.text_factory = saved_factory
    if mode == "strict":
        if strict_results_match(pred_rows, gold_rows, ordered=order_matters):
            return ExecutionVerdict(True, "same result")
        if results_match(gold_rows, pred_rows, order_matters=order_matters):
            return ExecutionVerdict(False, "same values with the columns in another order (strict mode compares "
                                           "columns in order)")
        return ExecutionVerdict(False, _describe_mismatch(gold_rows, pred_rows, order_matters))
    if results_match(gold_rows, pred_rows, order_matters=order_matters):
        return ExecutionVerdict(True, "same result")
    return ExecutionVerdict(False, _describe_mismatch(gold_rows, pred_rows, order_matters))


def _databases(db: Database | Sequence[Database]) -> list[Database]:
    if isinstance(db, (str, Path, sqlite3.Connection)) or callable(getattr(db, "run_query", None)):
        return [db]
    databases = list(db)
    if not databases:
        raise ConfigError("no database was given: pass a SQLite file, a connection or a list of them.")
    return databases


def execution_match(db: Database | Sequence[Database], pred_sql: str, gold_sql: str, *,
                    mode: str = "test-suite", keep_distinct: bool = False, timeout_s: float = 5.0,
                    max_rows: int = 100_000, dialect: str = "sqlite") -> ExecutionVerdict:
    """Execution Accuracy of one prediction: run it and the gold query, compare their results.

    Args:
        db: A SQLite file (opened read-only and closed again), an open connection (left open), a server
            :class:`~coderag.sql.databases.Database` (read-only at the server), or a list of them (a test
            suite: the prediction must match on each).
        pred_sql: The predicted query.
        gold_sql: The gold query.
        mode: ``"test-suite"`` (official semantics, see the module doc) or ``"strict"`` (today's
            :func:`~coderag.evaluation.sql_metrics.execution_outcome` comparison).
        keep_distinct: In ``test-suite`` mode, keep DISTINCT instead of dropping it from both queries.
        timeout_s: Time limit of each query run, in seconds.
        max_rows: Most rows a query may return before it counts as failed.
        dialect: sqlglot dialect both queries are written in (that of the database).

    Returns:
        An :class:`ExecutionVerdict`; ``match`` is False with ``pred_error`` set when the prediction does
        not run, and with ``gold_error`` set when the gold query does not.

    Raises:
        ConfigError: Unknown ``mode``, a non-positive ``timeout_s`` / ``max_rows`` or no database.
        SqlContextError: A database file does not exist or cannot be opened.

    Example:
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = conn.executescript("CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');")
        >>> execution_match(conn, "SELECT b, a FROM t", "SELECT a, b FROM t").match
        True
        >>> execution_match(conn, "SELECT b, a FROM t", "SELECT a, b FROM t", mode="strict").match
        False
    """
    if mode not in MODES:
        raise ConfigError(f"execution match mode {mode!r} is unknown: use one of {', '.join(MODES)}.")
    if not timeout_s > 0 or max_rows < 1:
        raise ConfigError("timeout_s and max_rows must be positive.")
    databases = _databases(db)
    if mode == "test-suite":
        pred, gold = join_spaced_operators(pred_sql), join_spaced_operators(gold_sql)
        if not keep_distinct:
            pred, gold = strip_distinct(pred, dialect), strip_distinct(gold, dialect)
        order_matters = gold_orders(gold, dialect)
    else:
        pred, gold = pred_sql, gold_sql
        order_matters = gold_orders(gold, top_level=True)
    verdict = ExecutionVerdict(True, "same result")
    for i, database in enumerate(databases):
        opened = isinstance(database, (str, Path))
        conn = open_sqlite_readonly(database) if opened else database
        try:
            verdict = _compare_on(conn, pred, gold, mode=mode, order_matters=order_matters, timeout_s=timeout_s,
                                  max_rows=max_rows, dialect=dialect)
        finally:
            if opened:
                conn.close()
        if not verdict.match:
            if len(databases) > 1:
                name = database if not isinstance(database, sqlite3.Connection) else f"connection {i}"
                verdict = ExecutionVerdict(False, f"on database {i + 1} of {len(databases)} ({name}): "
                                                  f"{verdict.reason}", verdict.pred_error, verdict.gold_error)
            return verdict
    if len(databases) > 1:
        return ExecutionVerdict(True, f"same result on all {len(databases)} databases")
    return verdict

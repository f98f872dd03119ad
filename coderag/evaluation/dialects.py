"""Spider on a real server: gold SQL transpiled per dialect, and whether it agrees with SQLite.

Spider's gold queries are SQLite: ``"France"`` is a string there when no column is called France, ``! =``
is an operator, ``5/2`` is integer division. :func:`gold_for_dialect` turns one into the target dialect
with sqlglot (double-quoted values become string literals, given the schema's columns). :func:`gold_parity`
runs every gold query on SQLite and its transpiled form on the server and reports, per question, whether
the results agree, where the transpiled gold does not run (a dialect gap), and where it fails to
transpile at all, so a reader sees the gaps instead of an EX silently computed on fewer questions.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp

from coderag.evaluation.exact_match import _double_quoted_strings_to_literals, _known_columns
from coderag.evaluation.execution_match import gold_orders, join_spaced_operators, results_match
from coderag.sql.databases import Database
from coderag.sql.text import SqlParseError, parse_sql

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def gold_for_dialect(gold: str, dialect: str, schema: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Spider gold SQL (SQLite) rewritten for ``dialect``.

    Spaced operators are joined (``! =``), double-quoted values that name no column become string
    literals (SQLite's reading), names (tables, columns, aliases) are lower-cased and unquoted as the
    loader (scripts/load_spider.py) wrote them, then sqlglot writes the query in ``dialect``.

    Args:
        gold: the gold query, as Spider writes it.
        dialect: the target sqlglot dialect (``postgres``, ``mysql``; ``sqlite`` returns the query as is).
        schema: ``{table: {column: type}}`` of the gold database (from SQLite).

    Returns:
        The query in ``dialect``.

    Raises:
        SqlParseError: sqlglot cannot read the gold query as SQLite.
        sqlglot.errors.SqlglotError: sqlglot cannot write it in ``dialect``.

    Example:
        >>> gold_for_dialect('SELECT name FROM singer WHERE country = "France"', "postgres",
        ...                  {"singer": {"name": "TEXT", "country": "TEXT"}})
        "SELECT name FROM singer WHERE country = 'France'"
    """
    if dialect == "sqlite":
        return gold
    tree = parse_sql(join_spaced_operators(gold).strip().rstrip(";"), "sqlite")
    if schema:
        tree = _double_quoted_strings_to_literals(tree, _known_columns(schema))
    # The loader lower-cases every table and column name, and MariaDB on Linux matches table names and
    # aliases case-sensitively (Spider writes T1 and t1 for one alias): every plain name goes lower-case.
    for identifier in tree.find_all(exp.Identifier):
        if _PLAIN_NAME.match(identifier.name):
            identifier.set("this", identifier.name.lower())
            identifier.set("quoted", False)
    return tree.sql(dialect=dialect, unsupported_level=sqlglot.ErrorLevel.RAISE)


def transpile_prediction(pred: str, dialect: str, schema: Mapping[str, Mapping[str, str]] | None = None
                         ) -> tuple[str, str | None]:
    """``(pred in dialect, None)``, or ``(pred, why not)`` when SQLite-style ``pred`` does not transpile.

    The same rewriting as :func:`gold_for_dialect`, so a prediction and its gold are treated alike.
    """
    try:
        return gold_for_dialect(pred, dialect, schema), None
    except (SqlParseError, sqlglot.errors.SqlglotError) as exc:
        return pred, f"the SQL does not transpile from sqlite to {dialect}: {(str(exc).splitlines() or [''])[0]}"


def comparable(rows: list[tuple], digits: int = 6) -> list[tuple]:
    """Rows with exact decimals as floats and floats rounded to ``digits``: SQLite returns doubles where a
    server returns ``NUMERIC`` (``AVG`` of integers), and the last bits of a double differ between engines."""
    def value(v: Any) -> Any:
        if isinstance(v, Decimal):
            v = float(v)
        if isinstance(v, float):
            rounded = round(v, digits)
            return int(rounded) if rounded.is_integer() else rounded
        return v

    return [tuple(value(v) for v in row) for row in rows]


@dataclass
class ParityRow:
    """One gold query: did it transpile, run on the server, and give SQLite's result?"""

    index: int
    db_id: str
    gold: str
    server_sql: str
    status: str  # agree | disagree | transpile_failure | server_failure | sqlite_failure
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def server_databases(url_template: str, **options: Any) -> Callable[[str], Database]:
    """db_id -> :class:`Database`, one per database (opened lazily, then reused) from ``url_template``.

    ``{db_id}`` in the template is replaced by the lower-cased db_id (the layout of scripts/load_spider.py).

    Example:
        >>> databases = server_databases("mysql+pymysql://root@127.0.0.1/spider_{db_id}")
        >>> databases("concert_singer").url.database
        'spider_concert_singer'
    """
    cache: dict[str, Database] = {}

    def get(db_id: str) -> Database:
        if db_id not in cache:
            cache[db_id] = Database(url_template.replace("{db_id}", db_id.lower()), name=db_id, **options)
        return cache[db_id]

    get.cache = cache  # type: ignore[attr-defined]
    get.template = Database(url_template.replace("{db_id}", "db_id")).source.replace("db_id", "{db_id}")  # type: ignore[attr-defined]
    return get


def gold_parity(benchmark, databases: Callable[[str], Database], *, timeout_s: float = 10.0,
                show_progress: bool | None = None) -> dict[str, Any]:
    """Run every gold query on SQLite and, transpiled, on the server; compare the results.

    Results are compared as the test-suite evaluator does (bags of rows, order when the gold query sorts,
    columns in any order) after :func:`comparable`.

    Args:
        benchmark: a Spider :class:`~coderag.evaluation.benchmark.Benchmark` (SQLite files).
        databases: db_id -> server :class:`Database` (see :func:`server_databases`).
        timeout_s: time limit of each query.
        show_progress: progress bar (None: tqdm decides).

    Returns:
        ``{"summary": {...}, "rows": [ParityRow dicts]}``; the summary holds n, the count per status,
        the agreement among the questions whose gold ran on both, and the timings.
    """
    from tqdm.auto import tqdm

    from coderag.sql.execution import open_sqlite_readonly, run_query

    rows: list[ParityRow] = []
    timings = Counter()
    for i, question in enumerate(tqdm(benchmark.questions, desc="gold parity", unit="q",
                                      disable=show_progress if show_progress is None else not show_progress)):
        database = databases(question.db_id)
        gold = join_spaced_operators(question.gold)
        t0 = time.perf_counter()
        try:
            server_sql = gold_for_dialect(question.gold, database.dialect, benchmark.sqlglot_schema(question))
        except (SqlParseError, sqlglot.errors.SqlglotError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            rows.append(ParityRow(i, question.db_id, question.gold, "", "transpile_failure", first))
            continue
        timings["transpile"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        conn = open_sqlite_readonly(benchmark.db_paths[question.db_id])
        conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
        try:
            sqlite_rows = run_query(conn, gold, timeout_s=timeout_s, max_rows=100_000)
        except Exception as exc:  # noqa: BLE001 - reported per question
            rows.append(ParityRow(i, question.db_id, question.gold, server_sql, "sqlite_failure", str(exc)))
            continue
        finally:
            conn.close()
        timings["sqlite"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            server_rows = database.run_query(server_sql, timeout_s=timeout_s, max_rows=100_000)
        except Exception as exc:  # noqa: BLE001 - a dialect gap, reported
            rows.append(ParityRow(i, question.db_id, question.gold, server_sql, "server_failure", str(exc)))
            continue
        finally:
            timings["server"] += time.perf_counter() - t0
        ordered = gold_orders(gold)
        if results_match(comparable(sqlite_rows), comparable(server_rows), order_matters=ordered):
            rows.append(ParityRow(i, question.db_id, question.gold, server_sql, "agree", "same result"))
        else:
            reason = (f"{len(server_rows)} rows vs SQLite's {len(sqlite_rows)}" if len(server_rows) != len(sqlite_rows)
                      else ("same rows in another order" if ordered and results_match(
                          comparable(sqlite_rows), comparable(server_rows), order_matters=False)
                            else "values differ"))
            rows.append(ParityRow(i, question.db_id, question.gold, server_sql, "disagree", reason))
    statuses = Counter(r.status for r in rows)
    ran = statuses["agree"] + statuses["disagree"]
    first = databases(benchmark.questions[0].db_id) if benchmark.questions else None
    summary = {
        "n": len(rows),
        "server": getattr(databases, "template", first.source if first is not None else ""),
        "dialect": first.dialect if first is not None else "",
        "statuses": dict(statuses.most_common()),
        "gold_executable": ran / len(rows) if rows else 0.0,
        "agreement_where_executable": statuses["agree"] / ran if ran else 0.0,
        "agreement": statuses["agree"] / len(rows) if rows else 0.0,
        "timings_s": {key: round(value, 2) for key, value in timings.items()},
    }
    return {"summary": summary, "rows": [r.to_dict() for r in rows]}

"""Per-query cost of executing Spider's gold SQL on PostgreSQL / MariaDB against SQLite, in one run.

Each gold query of the questions file runs once per repeat on each target:

- baseline: SQLite, the way EX runs today (the file opened read-only per query, authorizer, deadline);
- ``Database.run_query`` on each server URL given: pooled connection, read-only transaction, server-side
  statement timeout, rollback; the gold transpiled per dialect beforehand (transpiling is timed apart).

Queries whose transpiled gold fails on a server are counted, not timed. Targets alternate per repeat
(ABBA order) so machine load drifts over both alike; prints total and per-query milliseconds (median of
repeats) and the ratio of each server to SQLite. Load the databases first (scripts/load_spider.py).

    python benchmarks/bench_server_execution.py --spider-dir ../shared/datasets/spider \\
        --db 'postgresql:///spider?options=-csearch_path%3D{db_id}' \\
        --db 'mysql+pymysql://root@127.0.0.1/spider_{db_id}' --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderag.evaluation.benchmark import load_spider_benchmark  # noqa: E402
from coderag.evaluation.dialects import gold_for_dialect, server_databases  # noqa: E402
from coderag.evaluation.execution_match import join_spaced_operators  # noqa: E402
from coderag.sql.execution import open_sqlite_readonly, run_query  # noqa: E402


def _sqlite_pass(benchmark) -> float:
    started = time.perf_counter()
    for question in benchmark.questions:
        conn = open_sqlite_readonly(benchmark.db_paths[question.db_id])
        conn.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
        try:
            run_query(conn, join_spaced_operators(question.gold), timeout_s=10.0, max_rows=100_000)
        except Exception:  # noqa: BLE001 - the same questions are timed on every target
            pass
        finally:
            conn.close()
    return time.perf_counter() - started


def _server_pass(queries, databases) -> tuple[float, int]:
    failures = 0
    started = time.perf_counter()
    for db_id, sql in queries:
        try:
            databases(db_id).run_query(sql, timeout_s=10.0, max_rows=100_000)
        except Exception:  # noqa: BLE001 - counted as a dialect gap
            failures += 1
    return time.perf_counter() - started, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider-dir", type=Path, required=True)
    parser.add_argument("--questions-file", type=Path)
    parser.add_argument("--db", action="append", required=True, metavar="URL", help="server URL with {db_id}")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    benchmark = load_spider_benchmark(args.spider_dir, args.questions_file)
    n = len(benchmark.questions)
    targets = []
    for template in args.db:
        databases = server_databases(template)
        started = time.perf_counter()
        queries, untranspiled = [], 0
        for question in benchmark.questions:
            try:
                queries.append((question.db_id, gold_for_dialect(question.gold, databases(question.db_id).dialect,
                                                                  benchmark.sqlglot_schema(question))))
            except Exception:  # noqa: BLE001
                untranspiled += 1
        transpile_s = time.perf_counter() - started
        _server_pass(queries, databases)  # warm the pools: connections are opened once, as in a service
        targets.append((template, databases, queries, untranspiled, transpile_s))
    _sqlite_pass(benchmark)  # warm the page cache
    sqlite_times: list[float] = []
    server_times: dict[str, list[float]] = {t[0]: [] for t in targets}
    failures: dict[str, int] = {}
    for repeat in range(args.repeats):
        order = [None, *targets] if repeat % 2 == 0 else [*targets, None]
        for target in order:
            if target is None:
                sqlite_times.append(_sqlite_pass(benchmark))
            else:
                seconds, failed = _server_pass(target[2], target[1])
                server_times[target[0]].append(seconds)
                failures[target[0]] = failed
    base = statistics.median(sqlite_times)
    print(f"n={n} gold queries, {args.repeats} repeats, median of repeats")
    print(f"  sqlite (baseline)  total {base:.3f}s  {1000 * base / n:.2f} ms/query")
    for template, _databases, queries, untranspiled, transpile_s in targets:
        seconds = statistics.median(server_times[template])
        print(f"  {template}\n      total {seconds:.3f}s  {1000 * seconds / max(len(queries), 1):.2f} ms/query  "
              f"ratio to sqlite {seconds / base:.2f}x  (transpile {transpile_s:.2f}s once; "
              f"{untranspiled} did not transpile, {failures[template]} failed on the server)")
    for _template, databases, *_ in targets:
        for database in databases.cache.values():
            database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job's printed report: every section, and the guard verdict read once."""

from __future__ import annotations

from coderag.evaluation.report import render_main_report
from coderag.sql.guard import sql_guard


def _report(sql: str) -> dict:
    verdict = sql_guard(sql)
    return {
        "corpus": {"records": 2000, "domains": 40, "unique_schemas": 401, "duplicates_dropped": 1599},
        "retrieval": {"recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.75, "mrr@10": 0.4, "ndcg@10": 0.5},
        "generation": {"n": 12, "em": 0.25, "ex": 0.5, "parse_failures": 1, "guard_refusals": 2},
        "baseline_no_retrieval": {"n": 12, "em": 0.0, "ex": 0.125, "parse_failures": 3, "guard_refusals": 0},
        "sample": {"question": "How many orders?", "snippets": [{"rank": 1, "score": 0.61, "domain": "retail"}],
                   "allowed": verdict.allowed, "guard_reason": verdict.reason, "sql": sql},
        "timings_s": {"corpus": 0.5, "index": 17.0},
    }


def test_report_has_every_section_side_by_side():
    text = render_main_report(_report("SELECT COUNT(*) FROM orders"))
    assert "\nrecords              2000\n" in text and "\nrecall@5   0.500\n" in text
    assert "\nExecution Accuracy           0.500         0.125\n" in text
    assert "  schema #1 score=0.610 domain=retail" in text
    assert "SQL (allowed):\n  SELECT COUNT(*) FROM orders" in text
    assert text.endswith("Timings (s): corpus=0.5, index=17.0")


def test_refused_sql_names_the_reason_once():
    text = render_main_report(_report("DROP TABLE orders"))
    line = next(x for x in text.splitlines() if x.startswith("SQL ("))
    assert line.startswith("SQL (refused: ") and line.count("refused") == 1, line

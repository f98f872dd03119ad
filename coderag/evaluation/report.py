"""Plain-text reports: the one table renderer (:func:`format_table`) and the main job's report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text table of metrics.

    ``results`` is either one metrics mapping (``{"em": 0.5, ...}`` or an :func:`evaluate_text_to_sql`
    result) or named ones (``{"with retrieval": {...}, "no retrieval": {...}}``), shown side by side.
    """
    if "aggregate" in results and isinstance(results["aggregate"], Mapping):
        results = results["aggregate"]
    if results and all(isinstance(v, Mapping) for v in results.values()):
        columns = {name: (v["aggregate"] if isinstance(v.get("aggregate"), Mapping) else v)
                   for name, v in results.items()}
    else:
        columns = {"value": results}
    metrics = list(dict.fromkeys(key for col in columns.values() for key in col))
    header = ["metric", *columns]
    body = [[m, *(_cell(col[m]) if m in col else "-" for col in columns.values())] for m in metrics]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                       for i, c in enumerate(row)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sql_verdict_label(allowed: bool, guard_reason: str) -> str:
    """``allowed``, or the guard's reason (which already reads ``refused: ...``)."""
    return "allowed" if allowed else guard_reason


def render_main_report(report: dict[str, Any]) -> str:
    """Corpus, retrieval and generation figures as an aligned table, plus the sample answer."""
    corpus, retrieval = report["corpus"], report["retrieval"]
    gen, base = report["generation"], report["baseline_no_retrieval"]
    lines = ["Corpus", format_table({name.replace("_", " "): corpus[name] for name in
                                     ("records", "domains", "unique_schemas", "duplicates_dropped")})]
    lines += ["Retrieval (own schema among all, every question)", format_table(dict(retrieval))]
    labels = {"n": "questions", "em": "Exact Match", "ex": "Execution Accuracy",
              "parse_failures": "SQL parse failures", "guard_refusals": "guard refusals"}
    lines += ["Text-to-SQL", format_table({
        "with retrieval": {label: gen[key] for key, label in labels.items() if key in gen},
        "no retrieval": {label: base.get(key, 0) for key, label in labels.items() if key in gen},
    })]
    sample = report["sample"]
    lines.append(f"Question: {sample['question']}")
    for hit in sample.get("snippets", [])[:3]:
        lines.append(f"  schema #{hit['rank']} score={hit['score']:.3f} domain={hit['domain']}")
    lines.append(f"SQL ({sql_verdict_label(sample['allowed'], sample['guard_reason'])}):")
    lines.append("  " + (sample["sql"] or "(no SQL in the reply)").replace("\n", "\n  "))
    if report.get("timings_s"):
        lines.append("Timings (s): " + ", ".join(f"{k}={v}" for k, v in report["timings_s"].items()))
    return "\n".join(lines)

"""Plain-text rendering of the main job's report (what ``coderag run`` prints)."""

from __future__ import annotations

from typing import Any


def _rows(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    return [title, *(f"  {name.ljust(width)}  {value}" for name, value in rows)]


def sql_verdict_label(allowed: bool, guard_reason: str) -> str:
    """``allowed``, or the guard's reason (which already reads ``refused: ...``)."""
    return "allowed" if allowed else guard_reason


def render_main_report(report: dict[str, Any]) -> str:
    """Corpus, retrieval and generation figures as an aligned table, plus the sample answer."""
    corpus, retrieval = report["corpus"], report["retrieval"]
    gen, base = report["generation"], report["baseline_no_retrieval"]
    lines = _rows("Corpus", [
        ("records", str(corpus["records"])),
        ("domains", str(corpus["domains"])),
        ("unique schemas", str(corpus["unique_schemas"])),
        ("duplicates dropped", str(corpus["duplicates_dropped"])),
    ])
    lines += _rows("Retrieval (own schema among all, every question)",
                   [(name, f"{value:.3f}") for name, value in retrieval.items()])
    metric_w = 22
    lines.append("Text-to-SQL".ljust(metric_w) + "with retrieval".rjust(16) + "no retrieval".rjust(16))
    for key, label in (("n", "questions"), ("em", "Exact Match"), ("ex", "Execution Accuracy"),
                       ("parse_failures", "SQL parse failures"), ("guard_refusals", "guard refusals")):
        if key in gen:
            fmt = (lambda v: f"{v:.3f}") if key in ("em", "ex") else str
            lines.append(f"  {label}".ljust(metric_w) + fmt(gen[key]).rjust(16) + fmt(base.get(key, 0)).rjust(16))
    sample = report["sample"]
    lines.append(f"Question: {sample['question']}")
    for hit in sample.get("snippets", [])[:3]:
        lines.append(f"  schema #{hit['rank']} score={hit['score']:.3f} domain={hit['domain']}")
    lines.append(f"SQL ({sql_verdict_label(sample['allowed'], sample['guard_reason'])}):")
    lines.append("  " + (sample["sql"] or "(no SQL in the reply)").replace("\n", "\n  "))
    if report.get("timings_s"):
        lines.append("Timings (s): " + ", ".join(f"{k}={v}" for k, v in report["timings_s"].items()))
    return "\n".join(lines)

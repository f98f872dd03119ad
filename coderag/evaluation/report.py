"""Plain-text reports: the one table renderer (:func:`format_table`) and the main job's report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_benchmark_markdown(results: Mapping[str, Any], charts: Mapping[str, str] | None = None) -> str:
    """``report.md``: EX/EM overall, by hardness and by complexity for each schemas mode, retrieval, charts.

    Args:
        results: schemas mode -> :class:`~coderag.evaluation.benchmark.BenchmarkResult`.
        charts: chart title -> PNG file name (relative to the report).

    Returns:
        The Markdown text.
    """
    first = next(iter(results.values())).summary
    lines = [f"# CodeRAG evaluation: {first['benchmark']}", "",
             f"n = {first['n']} questions; EX mode `{first['ex_mode']}`"
             + (" (DISTINCT kept)" if first.get("keep_distinct") else "") + f"; k = {first['k']}.", ""]
    lines += ["| schemas | n | EX | EM | EM (semantic) |", "|---|---|---|---|---|"]
    for mode, result in results.items():
        s = result.summary
        lines.append(f"| {mode} | {s['n']} | {s['ex']:.3f} | {s['em']:.3f} | {s['em_semantic']:.3f} |")
    for title, key in (("EX by hardness", "by_hardness"), ("EX by SQL complexity", "by_sql_complexity")):
        names = list(dict.fromkeys(name for r in results.values() for name in r.summary[key]))
        if not names:
            continue
        lines += ["", f"## {title}", "", "| " + key.split("_", 1)[1].replace("_", " ") + " | n | "
                  + " | ".join(f"EX {m} | EM {m}" for m in results) + " |",
                  "|---|---|" + "---|---|" * len(results)]
        for name in names:
            cells = []
            n = next(r.summary[key][name]["n"] for r in results.values() if name in r.summary[key])
            for result in results.values():
                group = result.summary[key].get(name)
                cells += [_pct(group["ex"]) if group else "–", _pct(group["em"]) if group else "–"]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    retrieval = first.get("retrieval") or {}
    if retrieval:
        lines += ["", "## Retrieval (gold schema among all of the benchmark's)", "",
                  "| " + " | ".join(retrieval) + " |", "|" + "---|" * len(retrieval),
                  "| " + " | ".join(f"{v:.3f}" for v in retrieval.values()) + " |"]
    statuses = {mode: r.summary["statuses"] for mode, r in results.items()}
    lines += ["", "## Outcomes", ""] + [f"- {mode}: " + ", ".join(f"{k} {v}" for k, v in s.items())
                                         for mode, s in statuses.items()]
    for title, name in (charts or {}).items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    return "\n".join(lines) + "\n"


def combined_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The first schemas mode's summary plus ``modes``: every mode's summary (``summary.json``, ``--json``)."""
    summary = dict(next(iter(results.values())).summary)
    summary["modes"] = {mode: r.summary for mode, r in results.items()}
    return summary


def write_benchmark_report(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``per_question.jsonl``, ``summary.json``, ``report.md`` and the PNG charts into ``out_dir``.

    The directory is written whole or not at all. ``per_question.jsonl`` holds one object per question, in
    order, for the first schemas mode; with several modes each object also carries ``by_schemas`` (mode ->
    pred, ex, em, status). ``summary.json`` holds the first mode's summary plus ``modes`` (every mode's).

    Args:
        results: schemas mode -> :class:`~coderag.evaluation.benchmark.BenchmarkResult` (first = primary).
        out_dir: the output directory (replaced atomically).

    Returns:
        File role -> path in the published directory.
    """
    import json

    from coderag.atomic_files import atomic_directory
    from coderag.evaluation.charts import write_charts

    if not results:
        raise ValueError("no results to report")
    out_dir = Path(out_dir)
    modes = list(results)
    primary = results[modes[0]]
    with atomic_directory(out_dir) as staging:
        with (staging / "per_question.jsonl").open("w", encoding="utf-8") as fh:
            for i, row in enumerate(primary.rows):
                obj = row.to_dict()
                if len(modes) > 1:
                    obj["by_schemas"] = {m: {key: getattr(results[m].rows[i], key)
                                             for key in ("pred", "ex", "em", "em_semantic", "status")} for m in modes}
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        (staging / "summary.json").write_text(json.dumps(combined_summary(results), indent=2) + "\n",
                                              encoding="utf-8")
        charts = write_charts(results, staging)
        (staging / "report.md").write_text(render_benchmark_markdown(results, charts), encoding="utf-8")
    names = {"per_question": "per_question.jsonl", "summary": "summary.json", "report": "report.md"}
    return {**{k: out_dir / v for k, v in names.items()}, **{t: out_dir / n for t, n in charts.items()}}


def combined_report(report_dir: str | Path) -> tuple[str, str]:
    """(Markdown, HTML) of every ``report.md`` under ``report_dir``, for a pipeline's UI.

    The Markdown leaves the pictures out (a viewer cannot reach the files); the HTML page embeds them
    (base64 PNG), so it is one self-contained file.

    Args:
        report_dir: a folder with one sub-folder per benchmark, each written by :func:`write_benchmark_report`.

    Returns:
        The Markdown text and the HTML page.
    """
    import base64
    import html
    import re

    md_parts, html_parts = [], []
    for report in sorted(Path(report_dir).glob("*/report.md")):
        text = report.read_text(encoding="utf-8")
        md_parts.append(re.sub(r"^!\[.*\]\(.*\)$", "", text, flags=re.MULTILINE))
        body = html.escape(re.sub(r"^!\[.*\]\(.*\)$", "", text, flags=re.MULTILINE))
        images = "".join(
            f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(png.read_bytes()).decode()}" style="max-width:48%;margin:4px">'
            for png in sorted(report.parent.glob("*.png")))
        html_parts.append(f"<section><pre>{body}</pre>{images}</section>")
    markdown = "\n\n".join(md_parts) or "no evaluation report was written"
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>CodeRAG evaluation</title></head>"
            "<body style='font-family:sans-serif'>" + "<hr>".join(html_parts) + "</body></html>")
    return markdown, page

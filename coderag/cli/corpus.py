"""``coderag corpus build|stats``: materialize a corpus as JSONL and describe it."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from coderag.atomic_files import write_jsonl_atomic
from coderag.config import JobSettings, add_settings_flags
from coderag.corpus import dedupe_schemas, load_corpus


def corpus_counts(records: list[dict]) -> dict:
    """Records, domains, unique schemas and duplicates dropped by schema deduplication."""
    schemas = dedupe_schemas(records)
    return {
        "records": len(records),
        "domains": len({r["domain"] for r in records}),
        "unique_schemas": len(schemas.snippets),
        "duplicates_dropped": schemas.duplicates_dropped,
    }


def _load(args) -> list[dict]:
    s = JobSettings.from_args(args, f"corpus-{args.corpus_command}")
    return load_corpus(s.corpus, split=s.split, limit=s.n_records, seed=s.seed)


def _print_counts(counts: dict) -> None:
    print("  ".join(f"{key.replace('_', ' ')}={value}" for key, value in counts.items()))


def _cmd_build(args) -> int:
    records = _load(args)
    write_jsonl_atomic(args.out, records)
    _print_counts(corpus_counts(records))
    print(f"wrote {args.out}")
    return 0


def _cmd_stats(args) -> int:
    records = _load(args)
    stats = corpus_counts(records)
    stats["sql_complexity"] = dict(Counter(r["sql_complexity"] for r in records).most_common())
    stats["sql_task_type"] = dict(Counter(r["sql_task_type"] for r in records).most_common())
    stats["records_per_domain"] = dict(Counter(r["domain"] for r in records).most_common())
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    _print_counts({k: stats[k] for k in ("records", "domains", "unique_schemas", "duplicates_dropped")})
    for key in ("sql_complexity", "sql_task_type"):
        print(f"{key}: " + ", ".join(f"{name} {n}" for name, n in stats[key].items()))
    return 0


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, JobSettings, ("corpus", "split", "n_records", "seed"))


def register(sub: argparse._SubParsersAction) -> None:
    corpus = sub.add_parser("corpus", help="build or describe a text-to-SQL corpus (gretel format)",
                            description="Generate the builtin corpus or load one from files or the hub; "
                                        "write it as JSONL or print its statistics.")
    actions = corpus.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="write the corpus as JSONL",
                               description="Load or generate the corpus and write it to --out as JSONL "
                                           "(atomically), then print record, domain and schema counts.")
    _add_source_flags(build)
    build.add_argument("--out", type=Path, required=True, help="output .jsonl path")
    build.set_defaults(func=_cmd_build)
    stats = actions.add_parser("stats", help="print corpus statistics",
                               description="Counts of records, domains, unique schemas, duplicates "
                                           "dropped, and the spread over complexity and task type.")
    _add_source_flags(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=_cmd_stats)

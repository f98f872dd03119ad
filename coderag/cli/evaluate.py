"""``coderag evaluate``: score the whole system (or given predictions) on a benchmark, as the field does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.cli.run import LLM_FLAGS
from coderag.config import JobSettings, add_settings_flags
from coderag.errors import ConfigError


def _benchmark(s: JobSettings):
    from coderag.evaluation.benchmark import load_gretel_benchmark, load_spider_benchmark

    if s.spider_dir is not None:
        return load_spider_benchmark(s.spider_dir, s.questions_file).limit(s.limit)
    if s.questions_file is not None:
        raise ConfigError("--questions-file needs --spider-dir (the databases and tables.json it refers to)")
    from coderag.corpus import load_corpus

    records = load_corpus(s.corpus, split=s.split, limit=s.n_records, seed=s.seed)
    return load_gretel_benchmark(records, name=f"gretel:{s.corpus}").limit(s.limit)


def _print_summary(results) -> None:
    from coderag.evaluation.report import format_table

    first = next(iter(results.values())).summary
    print(f"benchmark {first['benchmark']}: n={first['n']}, EX mode {first['ex_mode']}, k={first['k']}")
    print(format_table({mode: {"EX": r.summary["ex"], "EM": r.summary["em"], "EM semantic": r.summary["em_semantic"]}
                        for mode, r in results.items()}))
    print("EX by hardness")
    print(format_table({mode: {f"{h} (n={g['n']})": g["ex"] for h, g in r.summary["by_hardness"].items()}
                        for mode, r in results.items()}))
    if first.get("retrieval"):
        print("retrieval of the gold schema among all the benchmark's schemas")
        print(format_table(first["retrieval"]))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from coderag.evaluation.benchmark import evaluate_benchmark, evaluate_modes, read_predictions

    s = JobSettings.from_args(args, "evaluate")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file: choose a directory")
    benchmark = _benchmark(s)
    if args.predictions is not None:
        predictions = read_predictions(args.predictions, len(benchmark.questions))
        results = {"predictions": evaluate_benchmark(benchmark, predictions=predictions, ex_mode=s.ex_mode,
                                                     keep_distinct=s.keep_distinct, k=s.k)}
    else:
        from coderag.generation.llm import make_generator
        from coderag.retrieval.encoder import load_encoder

        encoder_model = load_encoder(s.encoder)
        results = evaluate_modes(benchmark, s.schema_modes(), encoder_model=encoder_model,
                                 generator=make_generator(s), k=s.k, ex_mode=s.ex_mode,
                                 keep_distinct=s.keep_distinct, max_new_tokens=s.max_new_tokens)
    if args.out is not None:
        from coderag.evaluation.report import write_benchmark_report

        write_benchmark_report(results, args.out)
    if args.json:
        from coderag.evaluation.report import combined_summary

        print(json.dumps(combined_summary(results), indent=2))
    else:
        _print_summary(results)
        if args.out is not None:
            print(f"wrote {args.out / 'per_question.jsonl'}, summary.json, report.md and charts")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``coderag evaluate``."""
    p = sub.add_parser(
        "evaluate", help="score the system on a benchmark (Spider layout or gretel records): EX, EM, hardness",
        description="Retrieve over all of the benchmark's schemas, generate, guard, execute and score every "
                    "question: Execution Accuracy with the official test-suite evaluator's semantics (default), "
                    "Exact Match (normalised and after sqlglot's optimizer), Spider hardness. --schemas runs the "
                    "same questions with retrieved, gold (oracle) or no schemas; --predictions scores given SQL.")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="score this SQL instead of generating: one query per line, in question order "
                        "(the official evaluator's --pred file)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write per_question.jsonl, summary.json, report.md and PNG charts here (atomically)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_settings_flags(p, JobSettings, ("spider_dir", "questions_file", "corpus", "n_records", "limit", "schemas",
                                        "ex_mode", "keep_distinct", "encoder", "seed", *LLM_FLAGS))
    p.set_defaults(func=_cmd_evaluate)

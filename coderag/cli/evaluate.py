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
        benchmark = load_spider_benchmark(s.spider_dir, s.questions_file).limit(s.limit)
        if s.db is not None:
            from coderag.evaluation.dialects import server_databases

            if "{db_id}" not in s.db:
                raise ConfigError("--db for a Spider benchmark needs {db_id} in the URL, e.g. "
                                  "'postgresql:///spider?options=-csearch_path%3D{db_id}' or "
                                  "'mysql+pymysql://root@127.0.0.1/spider_{db_id}' (scripts/load_spider.py)")
            benchmark.server = server_databases(s.db)
            benchmark.server(benchmark.questions[0].db_id).check()  # unreachable: fail before any model loads
            benchmark.transpile = s.transpile
        return benchmark
    if s.db is not None:
        raise ConfigError("--db needs --spider-dir: the Spider databases loaded into the server "
                          "(scripts/load_spider.py)")
    if s.questions_file is not None:
        raise ConfigError("--questions-file needs --spider-dir (the databases and tables.json it refers to)")
    from coderag.corpus import load_corpus

    records = load_corpus(s.corpus, split=s.split, limit=s.n_records, seed=s.seed)
    if s.examples:  # examples come from the training domains: score the held-out ones only
        from coderag.retrieval.examples import training_examples

        train, held_out = training_examples(records, s.eval_fraction, s.seed)
        return load_gretel_benchmark(held_out, name=f"gretel:{s.corpus}:held-out",
                                     corpus_records=train).limit(s.limit)
    return load_gretel_benchmark(records, name=f"gretel:{s.corpus}").limit(s.limit)


def _example_index(s: JobSettings, encoder_model):
    """With ``--examples K``: the question -> SQL examples of ``--corpus``'s training domains (never a
    benchmark question: Spider is only ever evaluated, generated corpora score their held-out domains)."""
    if not s.examples:
        return None
    from coderag.corpus import load_corpus
    from coderag.retrieval.examples import ExampleIndex, training_examples

    records = load_corpus(s.corpus, split=s.split, limit=s.n_records, seed=s.seed)
    train, held_out = training_examples(records, s.eval_fraction, s.seed)
    return ExampleIndex.build(encoder_model, train, held_out_domains={str(r["domain"]) for r in held_out},
                              batch_size=s.batch_size)


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


def _gold_parity(benchmark, args: argparse.Namespace) -> int:
    """``evaluate --db URL --gold-parity``: does the transpiled gold run on the server and agree with SQLite?"""
    from collections import Counter

    from coderag.atomic_files import write_json_atomic
    from coderag.evaluation.dialects import gold_parity

    if benchmark.server is None:
        raise ConfigError("--gold-parity needs --spider-dir and --db URL (the server holding the databases)")
    result = gold_parity(benchmark, benchmark.server)
    summary = result["summary"]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"gold SQL on {summary['dialect']} ({summary['server']}): n={summary['n']}")
        print("  " + ", ".join(f"{k}={v}" for k, v in summary["statuses"].items()))
        print(f"  gold executable {summary['gold_executable']:.3f}, agrees with SQLite "
              f"{summary['agreement']:.3f} (of executable: {summary['agreement_where_executable']:.3f}); "
              f"timings (s): {summary['timings_s']}")
        reasons = Counter((r["status"], r["reason"][:100]) for r in result["rows"] if r["status"] != "agree")
        for (status, reason), count in reasons.most_common(10):
            print(f"  {count:4d}  {status}: {reason}")
    if args.out is not None:
        write_json_atomic(args.out / "gold_parity.json", result)
        if not args.json:
            print(f"wrote {args.out / 'gold_parity.json'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:

    s = JobSettings.from_args(args, "evaluate")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file: choose a directory")
    if s.transpile and s.db is None:
        raise ConfigError("--transpile needs --db URL: it rewrites SQLite-style SQL into that server's dialect")
    benchmark = _benchmark(s)
    try:
        if args.gold_parity:
            return _gold_parity(benchmark, args)
        return _score(benchmark, s, args)
    finally:
        if benchmark.server is not None:
            for database in benchmark.server.cache.values():
                database.close()


def _score(benchmark, s: JobSettings, args: argparse.Namespace) -> int:
    from coderag.evaluation.benchmark import evaluate_benchmark, evaluate_modes, read_predictions

    if args.predictions is not None:
        predictions = read_predictions(args.predictions, len(benchmark.questions))
        results = {"predictions": evaluate_benchmark(benchmark, predictions=predictions, ex_mode=s.ex_mode,
                                                     keep_distinct=s.keep_distinct, k=s.k)}
    else:
        from coderag.generation.llm import make_generator
        from coderag.retrieval.encoder import load_encoder

        encoder_model = load_encoder(s.encoder)
        results = evaluate_modes(benchmark, s.schema_modes(), encoder_model=encoder_model,
                                 lexical_weight=s.lexical_weight,
                                 generator=make_generator(s), k=s.k, ex_mode=s.ex_mode,
                                 keep_distinct=s.keep_distinct, max_new_tokens=s.max_new_tokens,
                                 n_candidates=s.n_candidates, temperature=s.sampling_temperature,
                                 example_index=_example_index(s, encoder_model), examples=s.examples)
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
                    "same questions with retrieved, gold (oracle) or no schemas; --predictions scores given SQL. "
                    "--db URL (with {db_id}) executes on PostgreSQL or MariaDB instead of SQLite, gold SQL "
                    "transpiled per dialect (load the databases with scripts/load_spider.py).")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="score this SQL instead of generating: one query per line, in question order "
                        "(the official evaluator's --pred file)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write per_question.jsonl, summary.json, report.md and PNG charts here (atomically)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--gold-parity", action="store_true",
                   help="with --db: run every gold query on SQLite and, transpiled, on the server, and report "
                        "where it does not transpile, does not run, or gives another result")
    add_settings_flags(p, JobSettings, ("spider_dir", "questions_file", "corpus", "n_records", "limit", "schemas",
                                        "ex_mode", "keep_distinct", "encoder", "lexical_weight", "seed", "db", "transpile",
                                        "eval_fraction", *LLM_FLAGS))
    p.set_defaults(func=_cmd_evaluate)

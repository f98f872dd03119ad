"""``coderag synth``, ``coderag negatives`` and ``coderag finetune``: thin shells over the training core."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.errors import ConfigError
from coderag.training_settings import TrainingSettings


def load_training_records(corpus: str, n_records: int, seed: int) -> list[dict]:
    """The corpus records for training: the generated default, or a file / hub dataset."""
    from coderag.corpus import generate_corpus, load_corpus

    if corpus == "builtin":
        return generate_corpus(n_records=n_records, seed=seed)
    return load_corpus(corpus, limit=n_records, seed=seed)


def _train_side(s: TrainingSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """(all records, train records, held-out records); synthesis only ever sees the train side."""
    from coderag.training_eval import split_by_domain

    records = load_training_records(s.corpus, s.n_records, s.seed)
    train, held_out = split_by_domain(records, s.eval_fraction, s.seed)
    return records, train, held_out


def select_training_pairs(pairs, s: TrainingSettings, source: str):
    """The pairs of the configured tasks, subsampled (seeded) to ``max_train_pairs``."""
    tasks = s.task_list()
    if tasks is not None and "task" in pairs.column_names:
        wanted = set(tasks)
        pairs = pairs.filter(lambda row: row["task"] in wanted)
        if len(pairs) < 2:
            raise ConfigError(f"the pairs dataset {source} holds no pairs of task(s) {', '.join(tasks)}: "
                              "pass --tasks all or other task names.")
    if s.max_train_pairs and len(pairs) > s.max_train_pairs:
        pairs = pairs.shuffle(seed=s.seed).select(range(s.max_train_pairs))
    return pairs


def _cmd_synth(args: argparse.Namespace) -> int:
    from coderag.synthesis import synthesize_pairs

    s = TrainingSettings.from_args(args, "synth")
    _, train, held_out = _train_side(s)
    generator = None
    if s.backend == "llm":
        from coderag.generation import make_generator

        if s.llm_base_url:
            generator = make_generator("openai", base_url=s.llm_base_url, model=s.llm_model or "default",
                                       timeout=s.timeout_s)
        else:
            generator = make_generator("local", **({"model_path": s.llm_model} if s.llm_model else {}))
    report = synthesize_pairs(
        train, s.output, backend=s.backend, generator=generator, categories=s.category_list(),
        max_pairs=s.max_pairs, seed=s.seed, concurrency=s.concurrency, resume=not args.no_resume,
        retries=s.retries, timeout_s=s.timeout_s,
    )
    report["held_out_records"] = len(held_out)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_negatives(args: argparse.Namespace) -> int:
    from coderag.encoder import load_encoder
    from coderag.negatives import mine_hard_negatives_report
    from coderag.training_io import load_pairs, save_dataset

    s = TrainingSettings.from_args(args, "negatives")
    pairs = select_training_pairs(load_pairs(args.pairs), s, str(args.pairs))
    corpus_texts = None
    if s.negatives_corpus == "schemas":
        from coderag.corpus import dedupe_schemas

        _, train, _ = _train_side(s)
        corpus_texts = dedupe_schemas(train).snippets
    mined, report = mine_hard_negatives_report(
        pairs, corpus_texts, load_encoder(s.encoder), n_negatives=s.n_negatives, top_k=s.top_k,
        perc_pos=s.perc_pos,
    )
    save_dataset(mined, s.output, extra_files={"negatives_report.json": json.dumps(report, indent=2)})
    print(json.dumps(report, indent=2))
    return 0


def format_before_after(before: dict[str, float], after: dict[str, float]) -> str:
    """The before/after metric table printed by ``coderag finetune``."""
    lines = [f"{'metric':<10} {'base':>8} {'tuned':>8} {'change':>8}"]
    for key, value in before.items():
        lines.append(f"{key:<10} {value:>8.4f} {after[key]:>8.4f} {after[key] - value:>+8.4f}")
    return "\n".join(lines)


def _outside_evals(s: TrainingSettings) -> dict[str, tuple[list[dict], list[dict]]]:
    """Spider dev questions against every Spider schema, when ``--spider-dir`` names a Spider release."""
    if s.spider_dir is None:
        return {}
    from coderag.spider import load_spider

    spider = load_spider(s.spider_dir, "dev")
    corpus = [{"sql_context": schema, "domain": db_id} for db_id, schema in spider.schemas.items()]
    return {"spider": (spider.records, corpus)}


def _cmd_finetune(args: argparse.Namespace) -> int:
    from coderag.finetune import finetune_encoder
    from coderag.training_io import load_pairs

    s = TrainingSettings.from_args(args, "finetune")
    pairs = select_training_pairs(load_pairs(args.pairs), s, str(args.pairs))
    _, train, held_out = _train_side(s)
    outside_evals = _outside_evals(s)
    report = finetune_encoder(
        pairs, held_out, s.output, corpus_records=train, base_model=s.encoder, epochs=s.epochs,
        batch_size=s.batch_size, lr=s.lr, scale=s.scale, cached=s.cached, mini_batch_size=s.mini_batch_size,
        max_steps=s.max_steps, max_seq_length=s.max_seq_length,
        train_max_seq_length=s.train_max_seq_length, max_eval_queries=s.max_eval_queries,
        outside_evals=outside_evals, seed=s.seed, device=s.device,
    )
    print(f"held-out: {report['eval_queries']} questions from {len(report['held_out_domains'])} unseen domains, "
          f"corpus {report['corpus_size']} schema snippets; trained on {report['train_size']} pairs")
    print(format_before_after(report["before"], report["after"]))
    for name, scores in report["outside"].items():
        print(f"\noutside data, {name}: {scores['queries']} questions against {scores['corpus']} schemas")
        print(format_before_after(scores["before"], scores["after"]))
    training = report["training"]
    if training["steps"] < 0.5 * training["planned_steps"]:
        print(f"warning: only {training['steps']} of {training['planned_steps']} planned steps ran: too few "
              "distinct texts for this batch size; lower --batch-size or --n-negatives")
    print(f"model: {report['model_dir']}  ({report['training']['samples_per_s']} samples/s on {report['device']})")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="builtin (default) | .parquet/.json/.jsonl path | hub dataset name")
    p.add_argument("--n-records", dest="n_records", type=int, help="corpus records (default 2000)")
    p.add_argument("--eval-fraction", dest="eval_fraction", type=float,
                   help="share of domains held out of training for evaluation (default 0.2)")
    p.add_argument("--seed", type=int, help="seed for the split, synthesis and training (default 0)")


def _pair_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", help="pair tasks to use, comma-separated, or 'all' "
                   "(default: question->schema,paraphrase->schema,hybrid_question->schema)")
    p.add_argument("--max-train-pairs", dest="max_train_pairs", type=int,
                   help="seeded subsample of the pairs (default 512: minutes on 2 CPU cores; 0: all)")


def register(subparsers) -> None:
    """Add the synth, negatives and finetune subcommands."""
    p = subparsers.add_parser(
        "synth", help="synthesize training pairs in four task categories",
        description="Synthesize (anchor, positive) pairs (text2code, code2text, code2code, hybrid) from the "
        "train side of the corpus, filter them (SQL parses and executes, no empty/duplicate anchors, "
        "positives are the record's own) and save a datasets Dataset.",
    )
    _common(p)
    p.add_argument("--output", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--backend", choices=["offline", "llm"], help="offline templates (default) or an LLM")
    p.add_argument("--categories", help="comma-separated subset of text2code,code2text,code2code,hybrid")
    p.add_argument("--max-pairs", dest="max_pairs", type=int, help="cap on the pairs kept")
    p.add_argument("--concurrency", type=int, help="LLM requests in flight (default 4)")
    p.add_argument("--retries", type=int, help="LLM retries with exponential backoff (default 3)")
    p.add_argument("--timeout", dest="timeout_s", type=float, help="seconds per LLM request (default 60)")
    p.add_argument("--llm-base-url", dest="llm_base_url", help="OpenAI-compatible URL; without it the local SmolLM2")
    p.add_argument("--llm-model", dest="llm_model", help="served model name (or local model path)")
    p.add_argument("--no-resume", action="store_true", help="ignore replies saved by an interrupted run")
    p.set_defaults(func=_cmd_synth)

    p = subparsers.add_parser(
        "negatives", help="mine hard negatives (TopK-PercPos) with the base encoder",
        description="Add negative_1..n columns to a pairs dataset: FAISS top-k with the base encoder, keeping "
        "candidates below perc_pos x the positive's score, never the positive or an identical text. "
        "Pairs lacking enough negatives are dropped (counted in the report).",
    )
    _common(p)
    p.add_argument("--pairs", required=True, type=Path, help="dataset from `coderag synth`")
    p.add_argument("--output", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--encoder", help="encoder name/path (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--n-negatives", dest="n_negatives", type=int, help="negatives per pair (default 3)")
    p.add_argument("--top-k", dest="top_k", type=int, help="candidates searched per pair (default 30)")
    p.add_argument("--perc-pos", dest="perc_pos", type=float, help="keep below this x positive score (0.95)")
    p.add_argument("--negatives-corpus", dest="negatives_corpus", choices=["positives", "schemas"],
                   help="mine from the pairs' unique positives (default) or the corpus schema snippets")
    _pair_selection(p)
    p.set_defaults(func=_cmd_negatives)

    p = subparsers.add_parser(
        "finetune", help="fine-tune the bi-encoder (MNRL) and compare it with its base on held-out domains",
        description="Train with MultipleNegativesRankingLoss (cached variant with --cached), evaluate "
        "question -> schema retrieval on held-out domains before and after, save model + model card.",
    )
    _common(p)
    p.add_argument("--pairs", required=True, type=Path, help="dataset from `coderag synth` or `coderag negatives`")
    p.add_argument("--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--encoder", help="base encoder name/path (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--scale", type=float, help="MNRL similarity scale (default 20)")
    p.add_argument("--cached", action="store_true", default=None, help="CachedMNRL (large batches, GradCache)")
    p.add_argument("--mini-batch-size", dest="mini_batch_size", type=int)
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--max-seq-length", dest="max_seq_length", type=int)
    p.add_argument("--train-max-seq-length", dest="train_max_seq_length", type=int,
                   help="truncate training inputs to this many tokens (default 128)")
    _pair_selection(p)
    p.add_argument("--max-eval-queries", dest="max_eval_queries", type=int)
    p.add_argument("--spider-dir", dest="spider_dir", type=Path,
                   help="also score base vs tuned on real data: a Spider release (dev.json, tables.json)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when present)")
    p.add_argument("--report", type=Path, help="also write the report JSON here")
    p.set_defaults(func=_cmd_finetune)

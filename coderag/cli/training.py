"""``coderag synth | negatives | finetune | finetune-generator``: thin shells over the training core."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.config import GeneratorTrainingSettings, TrainingSettings, add_settings_flags


def _train_side(s: TrainingSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """(all records, train records, held-out records); synthesis only ever sees the train side."""
    from coderag.corpus import load_corpus
    from coderag.training.heldout import split_by_domain

    records = load_corpus(s.corpus, limit=s.n_records, seed=s.seed)
    train, held_out = split_by_domain(records, s.eval_fraction, s.seed)
    return records, train, held_out


def _pairs(s: TrainingSettings, path: Path):
    """The pairs dataset at ``path``, of the configured tasks, subsampled to ``max_train_pairs``."""
    from coderag.training.artifacts import load_pairs, select_pairs

    return select_pairs(load_pairs(path), s.task_list(), s.max_train_pairs, s.seed, source=str(path))


def _cmd_synth(args: argparse.Namespace) -> int:
    from coderag.training.synthesis import synthesize_pairs

    s = TrainingSettings.from_args(args, "synth")
    _, train, held_out = _train_side(s)
    generator = None
    if s.synth_backend == "llm":
        from coderag.generation.llm import make_generator

        generator = make_generator(s)
    report = synthesize_pairs(
        train, s.output, backend=s.synth_backend, generator=generator, categories=s.category_list(),
        max_pairs=s.max_pairs, seed=s.seed, concurrency=s.concurrency, resume=not args.no_resume,
        timeout_s=s.llm_timeout_s,
    )
    report["held_out_records"] = len(held_out)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_negatives(args: argparse.Namespace) -> int:
    from coderag.retrieval.encoder import load_encoder
    from coderag.training.artifacts import save_dataset
    from coderag.training.negatives import mine_hard_negatives_report

    s = TrainingSettings.from_args(args, "negatives")
    pairs = _pairs(s, args.pairs)
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
    width = max([10, *(len(key) for key in before)])
    lines = [f"{'metric':<{width}} {'base':>8} {'tuned':>8} {'change':>8}"]
    for key, value in before.items():
        lines.append(f"{key:<{width}} {value:>8.4f} {after[key]:>8.4f} {after[key] - value:>+8.4f}")
    return "\n".join(lines)


def _outside_evals(s: TrainingSettings, pairs) -> dict[str, tuple[list[dict], list[dict]]]:
    """Spider dev questions against every Spider schema, when ``--spider-dir`` names a Spider release.

    Refuses (TrainingDataError) pairs that hold any Spider question or table: outside data is never trained on.
    """
    if s.spider_dir is None:
        return {}
    from coderag.corpus.spider import load_spider
    from coderag.training.leakage import check_no_outside_data, pair_texts

    spider = load_spider(s.spider_dir, "dev")
    check_no_outside_data(pair_texts(pairs), [r["sql_prompt"] for r in spider.records], spider.schemas.values())
    corpus = [{"sql_context": schema, "domain": db_id} for db_id, schema in spider.schemas.items()]
    return {"spider": (spider.records, corpus)}


def _cmd_finetune(args: argparse.Namespace) -> int:
    from coderag.training.finetune import finetune_encoder
    s = TrainingSettings.from_args(args, "finetune")
    pairs = _pairs(s, args.pairs)
    _, train, held_out = _train_side(s)
    outside_evals = _outside_evals(s, pairs)
    report = finetune_encoder(
        pairs, held_out, s.output, corpus_records=train, base_model=s.encoder, epochs=s.epochs,
        batch_size=s.batch_size, learning_rate=s.learning_rate, scale=s.scale, cached=s.cached, mini_batch_size=s.mini_batch_size,
        max_steps=s.max_steps, max_seq_length=s.max_seq_length,
        train_max_seq_length=s.train_max_seq_length, max_eval_queries=s.max_eval_queries,
        outside_evals=outside_evals, seed=s.seed, device=s.device, profile=s.profile,
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
    print(f"model: {report['model_dir']}  (profile {report['profile']}: {report['train_size']} pairs, "
          f"{training['steps']} steps, {report['minutes']} min, {training['samples_per_s']} samples/s on "
          f"{report['device_name']})")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


def _cmd_finetune_generator(args: argparse.Namespace) -> int:
    from coderag.training.generator_sft import finetune_generator

    s = GeneratorTrainingSettings.from_args(args, "finetune-generator")
    _, train, held_out = _train_side(s)
    encoder_model = None
    if s.prompt_schemas == "retrieved" or s.examples:
        from coderag.retrieval.encoder import load_encoder

        encoder_model = load_encoder(s.encoder)
    report = finetune_generator(
        train, s.output, held_out_domains={str(r["domain"]) for r in held_out}, base_model=s.llm_model,
        encoder_model=encoder_model, prompt_schemas=s.prompt_schemas, k=s.k, max_examples=s.max_examples,
        epochs=s.epochs, max_steps=s.max_steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
        lora_r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout, max_seq_length=s.max_seq_length,
        merge=s.merge, device=s.device, seed=s.seed, examples=s.examples,
    )
    print(f"trained on {report['examples']} examples from {report['train_domains']} domains "
          f"({len(report['held_out_domains'])} held out); {report['steps']} steps, loss {report['loss_first']} -> "
          f"{report['loss_last']}, {report['minutes']} min, {report['samples_per_s']} samples/s on {report['device']}")
    print(f"generator ({report['output_kind']}): {report['model_dir']}  (use it with --llm-model {report['model_dir']})")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


COMMON = ("corpus", "n_records", "eval_fraction", "seed")
PAIR_SELECTION = ("tasks", "max_train_pairs")


def register(subparsers) -> None:
    """Add the synth, negatives, finetune and finetune-generator subcommands."""
    p = subparsers.add_parser(
        "synth", help="synthesize training pairs in four task categories",
        description="Synthesize (anchor, positive) pairs (text2code, code2text, code2code, hybrid) from the "
        "train side of the corpus, filter them (SQL parses and executes, no empty/duplicate anchors, "
        "positives are the record's own) and save a datasets Dataset.",
    )
    add_settings_flags(p, TrainingSettings, (*COMMON, "output", "synth_backend", "categories", "max_pairs",
                                             "concurrency", "llm_backend", "llm_base_url", "llm_model",
                                             "llm_api_key_file", "llm_timeout_s"), required=("output",))
    p.add_argument("--no-resume", action="store_true", help="ignore replies saved by an interrupted run")
    p.set_defaults(func=_cmd_synth)

    p = subparsers.add_parser(
        "negatives", help="mine hard negatives (TopK-PercPos) with the base encoder",
        description="Add negative_1..n columns to a pairs dataset: FAISS top-k with the base encoder, keeping "
        "candidates below perc_pos x the positive's score, never the positive or an identical text. "
        "Pairs lacking enough negatives are dropped (counted in the report).",
    )
    p.add_argument("--pairs", required=True, type=Path, help="dataset from `coderag synth`")
    add_settings_flags(p, TrainingSettings, (*COMMON, "output", "profile", "encoder", "n_negatives", "top_k", "perc_pos",
                                             "negatives_corpus", *PAIR_SELECTION), required=("output",))
    p.set_defaults(func=_cmd_negatives)

    p = subparsers.add_parser(
        "finetune", help="fine-tune the bi-encoder (MNRL) and compare it with its base on held-out domains",
        description="Train with MultipleNegativesRankingLoss (cached variant with --cached), evaluate "
        "question -> schema retrieval on held-out domains before and after, save model + model card.",
    )
    p.add_argument("--pairs", required=True, type=Path, help="dataset from `coderag synth` or `coderag negatives`")
    add_settings_flags(p, TrainingSettings, (*COMMON, "output", "profile", "encoder", "epochs", "batch_size", "learning_rate",
                                             "scale", "cached", "mini_batch_size", "max_steps", "max_seq_length",
                                             "train_max_seq_length", *PAIR_SELECTION, "max_eval_queries",
                                             "spider_dir", "device"), required=("output",))
    p.add_argument("--report", type=Path, help="also write the report JSON here")
    p.set_defaults(func=_cmd_finetune)

    p = subparsers.add_parser(
        "finetune-generator", help="fine-tune the SQL generator (LoRA) on the synthetic question -> SQL records",
        description="Supervised fine-tuning of the generator on the train side's records whose SQL executes: "
        "the prompt is the inference prompt (question + retrieved schemas, the model's chat template), the loss "
        "covers the answer only. Saves the LoRA adapter (or, with --merge, the merged model); use it with "
        "`coderag ask|evaluate --llm-model DIR`.",
    )
    add_settings_flags(p, GeneratorTrainingSettings, (*COMMON, "output", "llm_model", "encoder", "k", "prompt_schemas",
                                                      "examples", "max_examples", "epochs", "max_steps", "batch_size",
                                                      "learning_rate", "lora_r", "lora_alpha", "lora_dropout",
                                                      "max_seq_length", "merge", "device"), required=("output",))
    p.add_argument("--report", type=Path, help="also write the report JSON here")
    p.set_defaults(func=_cmd_finetune_generator)

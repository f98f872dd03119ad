"""The pipeline's stages as plain functions over directories: what each KFP component calls.

Each stage reads its inputs from paths, calls the core package, writes its outputs to paths and returns a
JSON-serialisable report. Nothing here knows about KFP, so every stage runs (and is tested) on its own.

Directory formats passed between stages:

- corpus dir: ``train.jsonl`` and ``heldout.jsonl`` (gretel records; whole domains are held out so the
  evaluation sees schemas the encoder never trained on) and ``corpus_report.json``.
- pairs dir: a ``datasets`` Dataset (``save_to_disk``) of (anchor, positive[, negative_i]) pairs.
- model dir: a sentence-transformers model (with model card); index dir: a :class:`SchemaIndex`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from coderag.atomic_files import write_json_atomic, write_jsonl_atomic
from coderag.config import CodeRAGSettings
from coderag.errors import ConfigError, CorpusError
from coderag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT, check_lexical_weight

log = logging.getLogger(__name__)

TRAIN_FILE, HELDOUT_FILE, CORPUS_REPORT = "train.jsonl", "heldout.jsonl", "corpus_report.json"
# The pair tasks that train question -> schema retrieval (what the index serves).
RETRIEVAL_TASKS = ("question->schema", "paraphrase->schema", "hybrid_question->schema")
RETRIEVAL_CATEGORIES = ("text2code", "hybrid")


def stage_generator(llm_base_url: str = "", llm_model: str = "", generator_dir: str | os.PathLike = ""):
    """The generator a stage uses: a tuned generator directory when ``generator_dir`` is given (the
    finetune-generator stage's output, loaded locally, on the GPU when there is one), else the endpoint
    when ``llm_base_url`` is set (its key from ``CODERAG_LLM_API_KEY``, a Kubernetes Secret in the
    cluster), else the local model.

    Args:
        llm_base_url: an OpenAI-compatible endpoint; ``""`` for the local model.
        llm_model: the endpoint's model name.
        generator_dir: a directory written by :func:`finetune_generator_stage` (adapter or merged); ``""``: none.

    Returns:
        A SQL generator.

    Raises:
        ConfigError: ``generator_dir`` holds no tuned generator.

    Example:
        >>> generator = stage_generator()  # doctest: +SKIP
    """
    from coderag.generation.llm import LocalTransformersGenerator, make_generator

    if generator_dir:
        from coderag.training.generator_sft import read_generator_manifest

        if read_generator_manifest(generator_dir) is None:
            raise ConfigError(f"{generator_dir} holds no tuned generator (no manifest): run the finetune-generator "
                              "stage first")
        import torch

        if llm_base_url:
            log.info("scoring the tuned generator in %s locally, not the endpoint %s", generator_dir, llm_base_url)
        return LocalTransformersGenerator(model_path=str(generator_dir),
                                          device="cuda" if torch.cuda.is_available() else "cpu")
    return make_generator(CodeRAGSettings(llm_base_url=llm_base_url or None, llm_model=llm_model or None))


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of one JSONL file written by :func:`prepare_corpus`.

    Args:
        path: the JSONL file.

    Returns:
        One dict per non-empty line.

    Raises:
        CorpusError: the file does not exist.

    Example:
        >>> len(read_records("corpus/train.jsonl"))  # doctest: +SKIP
        1600
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist: run the synthesize stage first")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_corpus(corpus_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(train records, held-out records) of a corpus dir.

    Args:
        corpus_dir: a directory written by :func:`prepare_corpus`.

    Returns:
        ``(train, held_out)`` record lists.

    Raises:
        CorpusError: a JSONL file is missing.

    Example:
        >>> train, held_out = read_corpus("corpus")  # doctest: +SKIP
    """
    corpus_dir = Path(corpus_dir)
    return read_records(corpus_dir / TRAIN_FILE), read_records(corpus_dir / HELDOUT_FILE)


def prepare_corpus(source: str, n_records: int, eval_fraction: float, seed: int,
                   corpus_dir: str | os.PathLike) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Load ``source`` (``builtin``: the generated corpus), split it by domain and write the corpus dir.

    Args:
        source: see :func:`~coderag.corpus.loading.load_corpus`.
        n_records: corpus size limit.
        eval_fraction: share of domains held out.
        seed: corpus, sample and split seed.
        corpus_dir: output directory (``train.jsonl``, ``heldout.jsonl``, ``corpus_report.json``).

    Returns:
        ``(train, held_out, report)``.

    Raises:
        CorpusError: the corpus cannot be loaded or spans fewer than 2 domains.
        ConfigError: ``eval_fraction`` is out of range.

    Example:
        >>> train, held_out, report = prepare_corpus("builtin", 500, 0.2, 0, "out/corpus")  # doctest: +SKIP
    """
    from coderag.corpus import load_corpus
    from coderag.training.heldout import split_by_domain

    records = load_corpus(source, limit=n_records, seed=seed)
    train, held_out = split_by_domain(records, eval_fraction, seed)
    corpus_dir = Path(corpus_dir)
    write_jsonl_atomic(corpus_dir / TRAIN_FILE, train)
    write_jsonl_atomic(corpus_dir / HELDOUT_FILE, held_out)
    report = {
        "source": source, "records": len(records), "train_records": len(train), "heldout_records": len(held_out),
        "domains": len({str(r["domain"]) for r in records}),
        "heldout_domains": sorted({str(r["domain"]) for r in held_out}),
    }
    write_json_atomic(corpus_dir / CORPUS_REPORT, report)
    return train, held_out, report


def synthesize_stage(*, corpus: str, n_records: int, eval_fraction: float, seed: int,
                     corpus_dir: str | os.PathLike, pairs_dir: str | os.PathLike, backend: str = "offline",
                     llm_base_url: str = "", llm_model: str = "", max_train_pairs: int = 256,
                     n_negatives: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """Corpus -> held-out split -> synthesized pairs (retrieval tasks, subsampled) [-> hard negatives].

    Pairs come from the train side only. ``max_train_pairs`` (0: all) bounds fine-tuning cost;
    ``n_negatives`` > 0 mines that many hard negatives per pair with the base encoder.

    Args:
        corpus, n_records, eval_fraction, seed, corpus_dir: as for :func:`prepare_corpus`.
        pairs_dir: output pairs dataset directory.
        backend: ``"offline"`` or ``"llm"`` synthesis.
        llm_base_url, llm_model: the LLM for ``backend="llm"`` (see :func:`stage_generator`).
        max_train_pairs: cap on training pairs.
        n_negatives: hard negatives per pair.
        show_progress: show progress bars.

    Returns:
        Report: corpus report, synthesis report, pair count (and negatives report).

    Raises:
        CorpusError: the corpus cannot be loaded or split.
        ConfigError: a bad synthesis setting.

    Example:
        >>> synthesize_stage(corpus="builtin", n_records=500, eval_fraction=0.2, seed=0,
        ...                  corpus_dir="out/corpus", pairs_dir="out/pairs")["train_pairs"]  # doctest: +SKIP
        256
    """
    from coderag.training.artifacts import load_pairs, save_dataset, select_pairs
    from coderag.training.synthesis import synthesize_pairs

    train, _, corpus_report = prepare_corpus(corpus, n_records, eval_fraction, seed, corpus_dir)
    generator = stage_generator(llm_base_url, llm_model) if backend == "llm" else None
    pairs_dir = Path(pairs_dir)
    # Only the categories that yield schema-retrieval pairs, and only as many records as the cap needs
    # (2 of the 5 pairs they make per record are other tasks): synthesis and its SQL filter cost per pair.
    synth = synthesize_pairs(train, pairs_dir, backend=backend, generator=generator, seed=seed,
                             categories=RETRIEVAL_CATEGORIES,
                             max_pairs=2 * max_train_pairs if max_train_pairs else None,
                             show_progress=show_progress)
    pairs = select_pairs(load_pairs(pairs_dir), RETRIEVAL_TASKS, max_train_pairs, seed, source=str(pairs_dir))
    report: dict[str, Any] = {"corpus": corpus_report, "synthesis": synth, "train_pairs": len(pairs)}
    if n_negatives > 0:
        from coderag.retrieval.encoder import load_encoder
        from coderag.training.negatives import mine_hard_negatives_report

        pairs, report["negatives"] = mine_hard_negatives_report(
            pairs, None, load_encoder(None), n_negatives=n_negatives, show_progress=show_progress)
        report["train_pairs"] = len(pairs)
    save_dataset(pairs, pairs_dir, extra_files={"pairs_report.json": json.dumps(report, indent=2)})
    return report


def finetune_stage(*, pairs_dir: str | os.PathLike, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike,
                   encoder: str = "", epochs: float = 1.0, batch_size: int = 16, max_steps: int = 0,
                   learning_rate: float = 5e-5, cached: bool = False, profile: str = "laptop",
                   max_eval_queries: int = 200, seed: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """Fine-tune the bi-encoder on the pairs; held-out domains score it before and after (in the report).

    Args:
        pairs_dir: the pairs dataset from :func:`synthesize_stage`.
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        model_dir: where the fine-tuned model is saved.
        encoder: base encoder (``""``: the builtin default).
        epochs, batch_size, learning_rate, seed: training settings.
        max_steps: step cap (0: none).
        cached: CachedMNRL (GradCache), for large batches.
        profile: the training profile the settings came from (recorded in the report and model card).
        max_eval_queries: cap on held-out evaluation questions (0: all).
        show_progress: show progress bars.

    Returns:
        The report of :func:`~coderag.training.finetune.finetune_encoder`.

    Raises:
        CorpusError: the corpus dir is incomplete.
        TrainingDataError: the pairs are missing or unusable.

    Example:
        >>> finetune_stage(pairs_dir="out/pairs", corpus_dir="out/corpus", model_dir="out/model")  # doctest: +SKIP
    """
    from coderag.training.artifacts import load_pairs
    from coderag.training.finetune import finetune_encoder

    train, held_out = read_corpus(corpus_dir)
    return finetune_encoder(
        load_pairs(pairs_dir), held_out, model_dir, corpus_records=train, base_model=encoder or None,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_steps=max_steps or None,
        cached=cached, mini_batch_size=min(64, batch_size), max_eval_queries=max_eval_queries or None, seed=seed,
        profile=profile, show_progress=show_progress)


def finetune_generator_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike, max_steps: int,
                             base_model: str = "", batch_size: int = 8, learning_rate: float = 2e-4, k: int = 3,
                             merge: bool = False, seed: int = 0, device: str | None = None,
                             show_progress: bool = False) -> dict[str, Any]:
    """Fine-tune the SQL generator (LoRA) on the corpus dir's train side; held-out domains stay out.

    Each training prompt is the inference prompt with the base encoder's top-``k`` schemas over the train
    side (:func:`~coderag.training.generator_sft.finetune_generator`).

    Args:
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        model_dir: where the adapter (or, with ``merge``, the merged model) is saved.
        max_steps: optimizer steps (at least 1).
        base_model: the generator to start from (``""``: the offline SmolLM2; in the cluster the model the
            vLLM generator serves, so the adapter fits it).
        batch_size, learning_rate, k, seed: training settings.
        merge: save merged weights instead of the adapter.
        device: ``cpu`` or ``cuda`` (None: cuda when present).
        show_progress: show progress bars.

    Returns:
        The training report.

    Example:
        >>> finetune_generator_stage(corpus_dir="out/corpus", model_dir="out/generator", max_steps=50)  # doctest: +SKIP
    """
    from coderag.training.generator_sft import finetune_generator

    train, held_out = read_corpus(corpus_dir)
    return finetune_generator(train, model_dir, held_out_domains={str(r["domain"]) for r in held_out},
                              base_model=base_model or None, k=k, max_steps=max_steps, batch_size=batch_size,
                              learning_rate=learning_rate, merge=merge, seed=seed, device=device,
                              show_progress=show_progress)


def build_index_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike,
                      index_dir: str | os.PathLike, batch_size: int = 64,
                      with_examples: bool = True) -> dict[str, Any]:
    """Embed every unique schema of the corpus (train and held-out) with the model and save the index, with
    the training split's question -> SQL examples beside it when ``with_examples``.

    Args:
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        model_dir: the encoder to embed with.
        index_dir: where the index is saved.
        batch_size: encoder batch size.
        with_examples: also store the training split's question -> SQL examples (for ``--examples K``).

    Returns:
        ``{"count", "dim", "duplicates_dropped"}``.

    Raises:
        CorpusError: the corpus dir is incomplete.
        EncoderError: the model cannot be loaded.
        SchemaIndexError: the index cannot be written.

    Example:
        >>> build_index_stage(corpus_dir="out/corpus", model_dir="out/model", index_dir="out/index")  # doctest: +SKIP
    """
    from coderag.corpus import dedupe_schemas
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex

    train, held_out = read_corpus(corpus_dir)
    schemas = dedupe_schemas(train + held_out)
    encoder_model = load_encoder(str(model_dir))
    index = SchemaIndex.build(encoder_model, schemas.snippets, domains=schemas.snippet_domains,
                              encoder_name=str(model_dir), batch_size=batch_size)
    if with_examples:
        index.examples = _training_examples(corpus_dir, model_dir, encoder_model, batch_size)
    index.save(index_dir)
    return {"count": index.count, "dim": index.dim, "duplicates_dropped": schemas.duplicates_dropped}


def _training_examples(corpus_dir: str | os.PathLike, model_dir: str | os.PathLike, encoder_model=None,
                       batch_size: int = 64):
    """The question -> SQL examples of the corpus's training split (``train.jsonl``; never ``heldout.jsonl``),
    embedded with the index's encoder, for retrieved examples in the prompt."""
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.examples import ExampleIndex

    train, held_out = read_corpus(corpus_dir)
    if encoder_model is None:
        encoder_model = load_encoder(str(model_dir))
    return ExampleIndex.build(encoder_model, train, held_out_domains={str(r["domain"]) for r in held_out},
                              batch_size=batch_size)


def _corpus_schemas(corpus_dir: str | os.PathLike):
    from coderag.corpus import dedupe_schemas

    train, held_out = read_corpus(corpus_dir)
    return dedupe_schemas(train + held_out)


def plan_shards_stage(*, corpus_dir: str | os.PathLike, shard_size: int) -> list[int]:
    """The shard numbers to embed in parallel: ``[0, 1, ..., n - 1]`` for ``n = ceil(schemas / shard_size)``.

    Args:
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        shard_size: unique schemas per shard (one pod each).

    Returns:
        The shard numbers (at least ``[0]``).

    Example:
        >>> plan_shards_stage(corpus_dir="out/corpus", shard_size=50_000)  # doctest: +SKIP
        [0]
    """
    from coderag.retrieval.shards import shard_count

    return list(range(shard_count(len(_corpus_schemas(corpus_dir).snippets), shard_size)))


def embed_shard_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike, shard: int, shard_size: int,
                      shard_dir: str | os.PathLike, batch_size: int = 64, device: str | None = None) -> dict[str, Any]:
    """Embed one shard of the corpus's unique schemas (see :func:`coderag.retrieval.shards.embed_shard`).

    Args:
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        model_dir: the encoder to embed with.
        shard: which shard, from 0.
        shard_size: unique schemas per shard.
        shard_dir: where the shard's vectors and manifest are written.
        batch_size: encoder batch size.
        device: ``cuda`` for the tokenise-ahead encoder on a GPU node; ``None`` for plain encode.

    Returns:
        The shard manifest.

    Example:
        >>> embed_shard_stage(corpus_dir="c", model_dir="m", shard=0, shard_size=50_000, shard_dir="s0")  # doctest: +SKIP
    """
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.shards import embed_shard

    schemas = _corpus_schemas(corpus_dir)
    return embed_shard(load_encoder(str(model_dir)), schemas.snippets, shard, shard_size, shard_dir,
                       batch_size=batch_size, device=device)


def merge_shards_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike,
                       shard_dirs: list[str | os.PathLike], index_dir: str | os.PathLike,
                       index_type: str = "flat", seed: int = 0, with_examples: bool = True,
                       lexical_weight: float = DEFAULT_LEXICAL_WEIGHT) -> dict[str, Any]:
    """Merge the embedded shards into one index and save it (same vectors and ids as :func:`build_index_stage`),
    with the training split's question -> SQL examples beside it (embedded here with the model) when
    ``with_examples``. Without them the step never loads the encoder: merging needs only the vectors.

    Args:
        corpus_dir: the corpus dir from :func:`prepare_corpus`.
        model_dir: the encoder the shards were embedded with (recorded as the index's encoder).
        shard_dirs: every shard directory, any order.
        index_dir: where the index is saved.
        index_type: ``flat``, ``ivf`` or ``hnsw`` (default parameters for the corpus size).
        seed: seeds IVF training.
        with_examples: also embed and store the training split's question -> SQL examples.
        lexical_weight: the hybrid weight stored in the manifest (0: cosine only).

    Returns:
        ``{"count", "dim", "duplicates_dropped", "shards", "index_type", "lexical_weight", "examples"}``
        (``examples``: how many were stored, 0 without them).

    Example:
        >>> merge_shards_stage(corpus_dir="c", model_dir="m", shard_dirs=["s0", "s1"], index_dir="i")  # doctest: +SKIP
    """
    from coderag.retrieval.ann import IndexSpec
    from coderag.retrieval.shards import merge_shards

    schemas = _corpus_schemas(corpus_dir)
    check_lexical_weight(lexical_weight)  # before any work
    index = merge_shards(shard_dirs, schemas.snippets, schemas.snippet_domains, spec=IndexSpec(index_type),
                         encoder_label=str(model_dir), seed=seed)
    index.use_lexical_weight(lexical_weight)
    if with_examples:
        index.examples = _training_examples(corpus_dir, model_dir)
    index.save(index_dir)
    return {"count": index.count, "dim": index.dim, "duplicates_dropped": schemas.duplicates_dropped,
            "shards": len(shard_dirs), "index_type": index.spec.index_type, "lexical_weight": index.lexical_weight,
            "examples": index.examples.count if index.examples is not None else 0}


def evaluate_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike, index_dir: str | os.PathLike,
                   k: int = 3, n_eval: int = 200, max_new_tokens: int = 128, llm_base_url: str = "",
                   llm_model: str = "", benchmark_dir: str = "", n_benchmark: int = 200,
                   max_retrieval_queries: int = 0, seed: int = 0, details_path: str | os.PathLike | None = None,
                   report_dir: str | os.PathLike | None = None, show_progress: bool | None = False,
                   n_candidates: int = 1, sampling_temperature: float = 0.7, examples: int = 0,
                   generator_dir: str | os.PathLike = "") -> dict[str, Any]:
    """Score the candidate: retrieval over the whole index, then EX/EM on held-out and benchmark questions.

    Held-out synthetic domains: Recall@1/5/10, MRR@10, nDCG@10 of every held-out question's own schema
    over the whole index, and EX/EM (test-suite semantics) on ``n_eval`` of them with retrieved schemas. With
    ``benchmark_dir`` (Spider's layout), ``n_benchmark`` of its questions (a seeded sample) are scored too,
    retrieving over all of the benchmark's schemas. ``ex`` is over every scored question; ``recall@5``
    over the held-out retrieval questions. Per-question rows (``key``, ``ex``, ``hit@5`` ...) go to
    ``details_path`` (JSON ``{"metrics", "rows"}``) for the gate's paired comparison; ``report_dir`` gets
    the report (``report.md``, charts, ``per_question.jsonl``) of each benchmark.

    Args:
        corpus_dir, model_dir, index_dir: outputs of the earlier stages.
        k: schemas retrieved per question.
        n_eval: held-out questions scored for EX/EM.
        max_new_tokens: generation budget per question.
        llm_base_url, llm_model: the LLM (see :func:`stage_generator`).
        generator_dir: a tuned generator (the finetune-generator stage's output) scored instead of the LLM.
        benchmark_dir, n_benchmark: an optional Spider-layout benchmark and its sample size.
        max_retrieval_queries: cap on held-out retrieval questions (0: all).
        seed: sampling seed.
        details_path, report_dir: optional outputs (see above).
        show_progress: show progress bars.
        n_candidates: SQL candidates sampled and voted on per question (1: one greedy reply).
        sampling_temperature: the candidates' sampling temperature.
        examples: training examples (from the index's example store) retrieved into each prompt (0: none).

    Returns:
        Flat metrics: ``recall@*``, ``mrr@10``, ``ndcg@10``, ``ex``, ``em``, ``em_semantic``, ``ex_heldout``,
        ``ex_<benchmark>``, ``recall@5_<benchmark>``, ``n_eval`` and counts.

    Raises:
        CorpusError: the corpus dir has no held-out records.
        SchemaIndexError: the index is unreadable or was built with another encoder.

    Example:
        >>> metrics = evaluate_stage(corpus_dir="corpus", model_dir="model", index_dir="index")  # doctest: +SKIP
        >>> metrics["ex"]  # doctest: +SKIP
        0.62
    """
    from coderag.corpus import dedupe_schemas
    from coderag.evaluation.benchmark import evaluate_modes, load_gretel_benchmark, load_spider_benchmark
    from coderag.pipeline.main_job import sample_eval_records
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex

    train, held_out = read_corpus(corpus_dir)
    if not held_out:
        raise CorpusError(f"corpus dir {corpus_dir} holds no held-out records: raise eval_fraction")
    gold = dedupe_schemas(train + held_out).record_to_snippet[len(train):]
    index = SchemaIndex.load(index_dir)
    encoder_model = load_encoder(str(model_dir))
    index.check_compatible(encoder_model, strict=True)
    queries = held_out
    if max_retrieval_queries and len(held_out) > max_retrieval_queries:
        picked = sorted(random.Random(seed).sample(range(len(held_out)), max_retrieval_queries))
        queries, gold = [held_out[i] for i in picked], [gold[i] for i in picked]
    from coderag.evaluation.ranking import evaluate_index

    metrics: dict[str, Any] = dict(evaluate_index(index, encoder_model, [r["sql_prompt"] for r in queries], gold))
    metrics["retrieval_queries"] = len(queries)

    benchmarks = {"heldout": (load_gretel_benchmark(sample_eval_records(held_out, n_eval, seed), name="heldout",
                                                    corpus_records=train + held_out), index)}
    if benchmark_dir:
        spider = load_spider_benchmark(benchmark_dir)
        if n_benchmark < len(spider.questions):
            picked = sorted(random.Random(seed).sample(range(len(spider.questions)), n_benchmark))
            spider.questions = [spider.questions[i] for i in picked]
            spider.schema_ids = [spider.schema_ids[i] for i in picked]
        benchmarks[Path(benchmark_dir).name or "benchmark"] = (spider, None)
    generator = stage_generator(llm_base_url, llm_model, generator_dir)
    rows: list[dict[str, Any]] = []
    counts = {"parse_failures": 0, "guard_refusals": 0}
    for name, (bench, bench_index) in benchmarks.items():
        # a benchmark's own index ranks with the candidate index's weight, as the release would serve it
        result = evaluate_modes(bench, ["retrieved"], encoder_model=encoder_model, index=bench_index,
                                lexical_weight=index.lexical_weight,
                                generator=generator, k=k, max_new_tokens=max_new_tokens,
                                show_progress=show_progress, n_candidates=n_candidates,
                                temperature=sampling_temperature, example_index=index.examples,
                                examples=examples)["retrieved"]
        if report_dir is not None:
            from coderag.evaluation.report import write_benchmark_report

            write_benchmark_report({"retrieved": result}, Path(report_dir) / name)
        metrics[f"ex_{name}"] = result.summary["ex"]
        metrics[f"n_{name}"] = result.summary["n"]
        if name != "heldout":
            metrics[f"recall@5_{name}"] = result.summary["retrieval"].get("recall@5", 0.0)
        counts["parse_failures"] += result.summary["statuses"].get("parse_failure", 0)
        counts["guard_refusals"] += result.summary["statuses"].get("guard_refused", 0)
        for row in result.rows:
            rows.append({"key": f"{name}:{row.id}", "benchmark": name, **row.to_dict(),
                         "hit@5": row.gold_rank is not None and row.gold_rank <= 5})
    n = len(rows)
    metrics.update({"ex": sum(r["ex"] for r in rows) / n, "em": sum(r["em"] for r in rows) / n,
                    "em_semantic": sum(r["em_semantic"] for r in rows) / n, "n_eval": n, **counts})
    if details_path is not None:
        scored = f"tuned:{generator_dir}" if generator_dir else (llm_model or "local default")
        write_json_atomic(Path(details_path), {"metrics": metrics, "rows": rows, "generator": scored})
    return metrics

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

from pydantic import Field, SecretStr

from coderag.atomic_files import write_json_atomic, write_jsonl_atomic
from coderag.errors import CorpusError
from coderag.settings import CodeRAGSettings

log = logging.getLogger(__name__)

TRAIN_FILE, HELDOUT_FILE, CORPUS_REPORT = "train.jsonl", "heldout.jsonl", "corpus_report.json"
# The pair tasks that train question -> schema retrieval (what the index serves).
RETRIEVAL_TASKS = ("question->schema", "paraphrase->schema", "hybrid_question->schema")
RETRIEVAL_CATEGORIES = ("text2code", "hybrid")


class LLMEndpointSettings(CodeRAGSettings):
    """The LLM endpoint's API key: from ``CODERAG_LLM_API_KEY`` (a Kubernetes Secret in the cluster)."""

    model_config = CodeRAGSettings.model_config | {"extra": "ignore"}

    llm_api_key: SecretStr = Field(SecretStr(""), description="API key of the OpenAI-compatible endpoint")


def make_stage_generator(llm_base_url: str = "", llm_model: str = ""):
    """An OpenAI-compatible generator when ``llm_base_url`` is set, else the local SmolLM2 (or ``llm_model``)."""
    from coderag.generation import LocalTransformersGenerator, OpenAIChatGenerator

    if llm_base_url:
        key = LLMEndpointSettings().llm_api_key.get_secret_value() or None
        return OpenAIChatGenerator(base_url=llm_base_url, model=llm_model or "default", api_key=key)
    return LocalTransformersGenerator(model_path=llm_model) if llm_model else LocalTransformersGenerator()


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of one JSONL file written by :func:`prepare_corpus`."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist: run the synthesize stage first")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_corpus(corpus_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(train records, held-out records) of a corpus dir."""
    corpus_dir = Path(corpus_dir)
    return read_records(corpus_dir / TRAIN_FILE), read_records(corpus_dir / HELDOUT_FILE)


def prepare_corpus(source: str, n_records: int, eval_fraction: float, seed: int,
                   corpus_dir: str | os.PathLike) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Load ``source`` (``builtin``: the generated corpus), split it by domain and write the corpus dir."""
    from coderag.corpus import generate_corpus, load_corpus
    from coderag.training_eval import split_by_domain

    if source == "builtin":
        records = generate_corpus(n_records=n_records, seed=seed)
    else:
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


def synthesize_stage(*, corpus_source: str, n_records: int, eval_fraction: float, seed: int,
                     corpus_dir: str | os.PathLike, pairs_dir: str | os.PathLike, backend: str = "offline",
                     llm_base_url: str = "", llm_model: str = "", max_train_pairs: int = 256,
                     n_negatives: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """Corpus -> held-out split -> synthesized pairs (retrieval tasks, subsampled) [-> hard negatives].

    Pairs come from the train side only. ``max_train_pairs`` (0: all) bounds fine-tuning cost;
    ``n_negatives`` > 0 mines that many hard negatives per pair with the base encoder.
    """
    from coderag.synthesis import synthesize_pairs
    from coderag.training_io import load_pairs, save_dataset

    train, _, corpus_report = prepare_corpus(corpus_source, n_records, eval_fraction, seed, corpus_dir)
    generator = make_stage_generator(llm_base_url, llm_model) if backend == "llm" else None
    pairs_dir = Path(pairs_dir)
    # Only the categories that yield schema-retrieval pairs, and only as many records as the cap needs
    # (2 of the 5 pairs they make per record are other tasks): synthesis and its SQL filter cost per pair.
    synth = synthesize_pairs(train, pairs_dir, backend=backend, generator=generator, seed=seed,
                             categories=RETRIEVAL_CATEGORIES,
                             max_pairs=2 * max_train_pairs if max_train_pairs else None,
                             show_progress=show_progress)
    pairs = load_pairs(pairs_dir)
    pairs = pairs.filter(lambda row: row["task"] in RETRIEVAL_TASKS)
    if max_train_pairs and len(pairs) > max_train_pairs:
        pairs = pairs.shuffle(seed=seed).select(range(max_train_pairs))
    report: dict[str, Any] = {"corpus": corpus_report, "synthesis": synth, "train_pairs": len(pairs)}
    if n_negatives > 0:
        from coderag.encoder import load_encoder
        from coderag.negatives import mine_hard_negatives_report

        pairs, report["negatives"] = mine_hard_negatives_report(
            pairs, None, load_encoder(None), n_negatives=n_negatives, show_progress=show_progress)
        report["train_pairs"] = len(pairs)
    save_dataset(pairs, pairs_dir, extra_files={"pairs_report.json": json.dumps(report, indent=2)})
    return report


def finetune_stage(*, pairs_dir: str | os.PathLike, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike,
                   base_model: str = "", epochs: float = 1.0, batch_size: int = 16, max_steps: int = 0,
                   lr: float = 5e-5, max_eval_queries: int = 200, seed: int = 0,
                   show_progress: bool = False) -> dict[str, Any]:
    """Fine-tune the bi-encoder on the pairs; held-out domains score it before and after (in the report)."""
    from coderag.finetune import finetune_encoder
    from coderag.training_io import load_pairs

    train, held_out = read_corpus(corpus_dir)
    return finetune_encoder(
        load_pairs(pairs_dir), held_out, model_dir, corpus_records=train, base_model=base_model or None,
        epochs=epochs, batch_size=batch_size, lr=lr, max_steps=max_steps or None,
        max_eval_queries=max_eval_queries or None, seed=seed, show_progress=show_progress)


def build_index_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike,
                      index_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Embed every unique schema of the corpus (train and held-out) with the model and save the index."""
    from coderag.corpus import dedupe_schemas
    from coderag.encoder import load_encoder
    from coderag.index import SchemaIndex

    train, held_out = read_corpus(corpus_dir)
    schemas = dedupe_schemas(train + held_out)
    encoder_model = load_encoder(str(model_dir))
    index = SchemaIndex.build(encoder_model, schemas.snippets, domains=schemas.snippet_domains,
                              encoder_name=str(model_dir), batch_size=batch_size)
    index.save(index_dir)
    return {"count": index.count, "dim": index.dim, "duplicates_dropped": schemas.duplicates_dropped}


def evaluate_stage(*, corpus_dir: str | os.PathLike, model_dir: str | os.PathLike, index_dir: str | os.PathLike,
                   k: int = 3, n_eval: int = 10, max_new_tokens: int = 96, llm_base_url: str = "",
                   llm_model: str = "", max_retrieval_queries: int = 0, seed: int = 0,
                   details_path: str | os.PathLike | None = None, show_progress: bool = False) -> dict[str, Any]:
    """Score the candidate on held-out questions: retrieval over the whole index, then EM/EX on ``n_eval``.

    Returns flat metrics (``recall@1/5/10``, ``mrr``, ``ndcg@10``, ``em``, ``ex``, counts). With
    ``details_path`` the per-question rows are written there as JSON.
    """
    from coderag.corpus import dedupe_schemas
    from coderag.encoder import load_encoder
    from coderag.evaluation import evaluate_text_to_sql
    from coderag.index import SchemaIndex
    from coderag.retrieval import retrieve_schemas
    from coderag.workflow import evaluate_retrieval, sample_eval_records

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
    metrics: dict[str, Any] = dict(evaluate_retrieval(index, encoder_model, queries, gold))
    metrics["retrieval_queries"] = len(queries)

    eval_records = sample_eval_records(held_out, n_eval, seed)
    hits = retrieve_schemas(index, encoder_model, [r["sql_prompt"] for r in eval_records], k=k)
    scored = evaluate_text_to_sql(eval_records, make_stage_generator(llm_base_url, llm_model),
                                  [[h.text for h in row] for row in hits], max_tokens=max_new_tokens,
                                  desc="EX/EM", show_progress=show_progress)
    aggregate = scored["aggregate"]
    metrics.update({"em": aggregate["em"], "ex": aggregate["ex"], "n_eval": aggregate["n"],
                    "parse_failures": aggregate["parse_failures"], "guard_refusals": aggregate["guard_refusals"]})
    if details_path is not None:
        write_json_atomic(Path(details_path), {"metrics": metrics, "rows": scored["rows"]})
    return metrics

"""The main job: corpus -> encoder -> FAISS index -> retrieval -> SQL generation -> scores.

``run_main_job`` is what ``coderag run`` executes on the embedded default; the pipeline's components
call the same stage functions one by one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderag.atomic_files import write_json_atomic
from coderag.corpus import dedupe_schemas, load_corpus
from coderag.evaluation.benchmark import evaluate_modes, load_gretel_benchmark, sql_summary
from coderag.evaluation.ranking import evaluate_index
from coderag.generation.answer import answer_question
from coderag.retrieval.encoder import load_encoder
from coderag.retrieval.examples import ExampleIndex, training_examples
from coderag.retrieval.index import SchemaIndex

log = logging.getLogger(__name__)


@dataclass
class MainJobReport:
    """What the main job measured, JSON-serialisable via :meth:`to_dict`."""

    corpus: dict[str, Any]
    index: dict[str, Any]
    retrieval: dict[str, float]
    generation: dict[str, Any]
    baseline: dict[str, Any]
    sample: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "index": self.index,
            "retrieval": self.retrieval,
            "generation": self.generation,
            "baseline_no_retrieval": self.baseline,
            "sample": self.sample,
            "timings_s": self.timings_s,
        }


def sample_eval_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """A deterministic sample of ``n`` records (all of them when ``n`` exceeds the corpus).

    Args:
        records: the records to sample from.
        n: sample size.
        seed: sampling seed.

    Returns:
        A new list of records.

    Example:
        >>> sample_eval_records([1, 2, 3], n=5, seed=0)
        [1, 2, 3]
    """
    if n >= len(records):
        return list(records)
    return random.Random(seed).sample(records, n)


def evaluate_retrieval(index: SchemaIndex, encoder_model, records: list[dict], record_to_snippet: list[int],
                       *, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k, MRR@10 and nDCG@10 of each record's own schema for its question.

    Args:
        index: the schema index.
        encoder_model: the encoder the index was built with.
        records: records whose ``sql_prompt`` is asked.
        record_to_snippet: index row of each record's own schema.
        ks: cut-offs for recall.

    Returns:
        Metric name -> value.

    Example:
        >>> evaluate_retrieval(index, model, records, corpus.record_to_snippet)["recall@5"]  # doctest: +SKIP
        0.93
    """
    return evaluate_index(index, encoder_model, [r["sql_prompt"] for r in records], record_to_snippet, ks=ks)


def run_main_job(*, corpus_source: str, n_records: int | None, encoder: str | None, out_dir: Path,
                 k: int, n_eval: int, question: str, generator_factory, seed: int = 0,
                 batch_size: int = 64, max_new_tokens: int = 128, n_candidates: int = 1,
                 sampling_temperature: float = 0.7, examples: int = 0, eval_fraction: float = 0.2) -> MainJobReport:
    """Build corpus, index and scores end to end; write ``out_dir/index`` and ``out_dir/results.json``.

    With ``examples`` > 0 the corpus is split by domain (``eval_fraction`` held out, as the pipeline
    splits it): the index also stores the training side's question -> SQL examples, and the EX/EM
    questions are drawn from the held-out domains only, so no scored question is ever an example.

    ``generator_factory()`` is called only once the corpus has been read and the index built, so a bad
    corpus fails fast without loading an LLM.

    Args:
        corpus_source: see :func:`~coderag.corpus.loading.load_corpus`.
        n_records: corpus size limit (``None``: all).
        encoder: encoder name or path (``None``: the builtin default).
        out_dir: output directory.
        k: schemas retrieved per question.
        n_eval: questions scored for EX/EM.
        question: the sample question answered at the end.
        generator_factory: zero-argument callable returning the SQL generator.
        seed: corpus and sampling seed.
        batch_size: encoder batch size.
        max_new_tokens: generation budget per question.
        n_candidates: SQL candidates sampled and voted on per question (1: one greedy reply).
        sampling_temperature: the candidates' sampling temperature.
        examples: training examples retrieved into each prompt (0: none, and no split).
        eval_fraction: share of domains held out when ``examples`` > 0.

    Returns:
        The :class:`MainJobReport` (also written to ``results.json``).

    Raises:
        CorpusError: the corpus cannot be loaded.
        EncoderError: the encoder cannot be loaded.

    Example:
        >>> run_main_job(corpus_source="builtin", n_records=200, encoder=None, out_dir=Path("out"), k=3,
        ...              n_eval=20, question="How many orders?", generator_factory=make_gen)  # doctest: +SKIP
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records = load_corpus(corpus_source, limit=n_records, seed=seed)
    schema_corpus = dedupe_schemas(records)
    timings["corpus"] = time.perf_counter() - t0
    corpus_info = {
        "source": corpus_source,
        "records": len(records),
        "domains": len({r["domain"] for r in records}),
        "unique_schemas": len(schema_corpus.snippets),
        "duplicates_dropped": schema_corpus.duplicates_dropped,
    }
    log.info("corpus %s", json.dumps(corpus_info))

    t0 = time.perf_counter()
    encoder_model = load_encoder(encoder)
    index = SchemaIndex.build(encoder_model, schema_corpus.snippets, domains=schema_corpus.snippet_domains,
                              encoder_name=encoder or "builtin:all-MiniLM-L6-v2", batch_size=batch_size,
                              show_progress=True)
    eval_pool = records
    if examples:
        train, eval_pool = training_examples(records, eval_fraction, seed)
        index.examples = ExampleIndex.build(encoder_model, train, held_out_domains={r["domain"] for r in eval_pool},
                                            batch_size=batch_size)
    index_dir = out_dir / "index"
    index.save(index_dir)
    timings["index"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    retrieval = evaluate_retrieval(index, encoder_model, records, schema_corpus.record_to_snippet)
    timings["retrieval_eval"] = time.perf_counter() - t0

    generator = generator_factory()
    eval_records = sample_eval_records(eval_pool, n_eval, seed)
    t0 = time.perf_counter()
    benchmark = load_gretel_benchmark(eval_records, name="builtin", corpus_records=records)
    scored = evaluate_modes(benchmark, ["retrieved", "none"], encoder_model=encoder_model, index=index,
                            generator=generator, k=k, max_new_tokens=max_new_tokens, n_candidates=n_candidates,
                            temperature=sampling_temperature, example_index=index.examples, examples=examples)
    with_retrieval, baseline = (sql_summary(scored[m].summary) for m in ("retrieved", "none"))
    timings["generation_eval"] = time.perf_counter() - t0

    sample = answer_question(question, index=index, encoder_model=encoder_model, generator=generator, k=k,
                             max_tokens=max_new_tokens, n_candidates=n_candidates, temperature=sampling_temperature,
                             examples=examples).to_dict()
    report = MainJobReport(
        corpus=corpus_info,
        index={"dir": str(index_dir), "count": index.count, "dim": index.dim},
        retrieval=retrieval,
        generation=with_retrieval,
        baseline=baseline,
        sample=sample,
        timings_s={k_: round(v, 2) for k_, v in timings.items()},
    )
    write_json_atomic(out_dir / "results.json", report.to_dict())
    return report

"""Held-out evaluation for fine-tuning: a split by domain and a schema-retrieval IR evaluator.

Evaluation must see schemas the model never trained on, so whole domains are held out. Queries are
the held-out questions; the corpus is every unique schema snippet (train and held-out alike, as the
production index holds them all); the one relevant document of a query is its record's own snippet.
"""

from __future__ import annotations

import math
import random
from typing import Any

from coderag.errors import ConfigError, CorpusError

METRIC_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


def split_by_domain(records: list[dict], eval_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split ``records`` into (train, held-out) so that no domain appears in both.

    ``ceil(eval_fraction * n_domains)`` domains, drawn with ``seed``, go to the held-out side.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}.")
    domains = sorted({str(r["domain"]) for r in records})
    if len(domains) < 2:
        raise CorpusError(
            f"a held-out split by domain needs at least 2 domains, the corpus has {len(domains)}: "
            "use a corpus with more domains."
        )
    random.Random(seed).shuffle(domains)
    n_eval = min(len(domains) - 1, max(1, math.ceil(eval_fraction * len(domains))))
    held_out = set(domains[:n_eval])
    train = [r for r in records if str(r["domain"]) not in held_out]
    evaluation = [r for r in records if str(r["domain"]) in held_out]
    return train, evaluation


def build_retrieval_evaluator(
    eval_records: list[dict],
    corpus_records: list[dict] | None = None,
    *,
    name: str = "heldout",
    batch_size: int = 64,
    max_queries: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
):
    """An ``InformationRetrievalEvaluator`` for question -> own schema snippet.

    The corpus is the unique snippets of ``corpus_records`` plus ``eval_records`` (so every query's
    answer is in it). ``max_queries`` caps the queries (seeded sample) to bound evaluation time.
    Returns ``(evaluator, info)`` where info holds the query and corpus sizes.
    """
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from coderag.corpus import dedupe_schemas

    if not eval_records:
        raise CorpusError("no held-out records to evaluate on: lower eval_fraction or use a bigger corpus.")
    everything = list(corpus_records or []) + list(eval_records)
    schema_corpus = dedupe_schemas(everything)
    offset = len(everything) - len(eval_records)
    corpus = {str(i): text for i, text in enumerate(schema_corpus.snippets)}
    picked = list(range(len(eval_records)))
    if max_queries is not None and len(picked) > max_queries:
        picked = sorted(random.Random(seed).sample(picked, max_queries))
    queries, relevant = {}, {}
    for i in picked:
        qid = f"q{i}"
        queries[qid] = str(eval_records[i]["sql_prompt"])
        relevant[qid] = {str(schema_corpus.record_to_snippet[offset + i])}
    evaluator = InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        map_at_k=[10],
        batch_size=batch_size,
        name=name,
        write_csv=False,
        show_progress_bar=show_progress,
    )
    return evaluator, {"queries": len(queries), "corpus": len(corpus)}


def evaluate_retrieval(evaluator, model) -> dict[str, float]:
    """Run ``evaluator`` on ``model``; return recall@1/5/10, mrr@10, ndcg@10 (cosine scores)."""
    raw = evaluator(model)
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        matches = [v for k, v in raw.items() if k.endswith(f"cosine_{key}")]
        if not matches:
            raise RuntimeError(f"evaluator returned no {key} (keys: {sorted(raw)})")
        out[key] = round(float(matches[0]), 4)
    return out

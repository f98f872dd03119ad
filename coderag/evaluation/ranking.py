"""Ranking metrics of schema retrieval, and the one retrieval evaluation every stage uses.

The question's own schema snippet is its one relevant document. :func:`retrieval_metrics` scores given
rankings; :func:`evaluate_index` scores a built index; :class:`RetrievalEvaluator` (a
sentence-transformers-style evaluator: call it with a model) builds the index over held-out and training
schemas with that model, then scores it: fine-tuning uses it before and after training.

Metric names: ``recall@1``, ``recall@5``, ``recall@10``, ``mrr@10``, ``ndcg@10``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from coderag.errors import CorpusError

METRIC_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
# The encoder alone (cosine, lexical weight 0) beside the hybrid ranking the product serves: what training bought.
COSINE_KEYS = ("recall@1", "mrr@10")


def retrieval_metrics(ranked_ids: Sequence[Sequence[int]], gold_ids: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k for each k, MRR@10 and nDCG@10 with one relevant item (the gold id) per query.

    Args:
        ranked_ids: one ranking of snippet ids per query, best first (may be longer than max(ks)).
        gold_ids: the relevant snippet id of each query.
        ks: the cut-offs of Recall@k.

    Returns:
        ``{"recall@k": ..., "mrr@10": ..., "ndcg@10": ...}``; a gold id missing from its ranking adds 0.

    Example:
        >>> retrieval_metrics([[3, 1], [2, 5]], [1, 2], ks=(1,))["mrr@10"]
        0.75
    """
    if len(ranked_ids) != len(gold_ids):
        raise ValueError(f"{len(ranked_ids)} rankings but {len(gold_ids)} gold ids")
    if not gold_ids:
        raise ValueError("retrieval metrics need at least one query")
    ranks = []
    for ranking, gold in zip(ranked_ids, gold_ids, strict=True):
        ranking = list(ranking)
        ranks.append(ranking.index(gold) + 1 if gold in ranking else None)
    n = len(ranks)
    metrics = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / n for k in ks}
    metrics["mrr@10"] = sum(1.0 / r for r in ranks if r is not None and r <= 10) / n
    # Binary relevance, one relevant item: the ideal DCG is 1, so nDCG is the gain at the gold's rank.
    metrics["ndcg@10"] = sum(1.0 / math.log2(r + 1) for r in ranks if r is not None and r <= 10) / n
    return metrics


def evaluate_index(index, encoder_model, questions: Sequence[str], gold_ids: Sequence[int], *,
                   ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval metrics of ``index`` for ``questions`` whose own snippets are ``gold_ids``.

    Args:
        index: a :class:`~coderag.retrieval.index.SchemaIndex`.
        encoder_model: the encoder the index was built with.
        questions: the queries.
        gold_ids: the relevant snippet id of each question.
        ks: cut-offs of Recall@k.

    Returns:
        The :func:`retrieval_metrics` of the top-max(ks, 10) rankings.
    """
    from coderag.retrieval.search import retrieve_schemas

    depth = max(max(ks), 10)
    results = retrieve_schemas(index, encoder_model, list(questions), k=depth)
    ranked = [[hit.snippet_id for hit in hits] for hits in results]
    return retrieval_metrics(ranked, gold_ids, ks=ks)


class RetrievalEvaluator:
    """Question -> own schema retrieval over held-out (and training) schemas; call it with a model.

    The corpus is every unique snippet of ``corpus_records`` plus ``eval_records`` (as the production index
    holds them all); the queries are the held-out questions.

    Args:
        eval_records: held-out gretel records (``sql_prompt``, ``sql_context``).
        corpus_records: further records whose schemas join the corpus (the training side).
        name: a label for logs and reports.
        batch_size: encoder batch size.
        max_queries: cap on queries (seeded sample) to bound evaluation time.
        seed: sampling seed.
        show_progress: progress bar while embedding.

    Example:
        >>> evaluator = RetrievalEvaluator(held_out, train)            # doctest: +SKIP
        >>> evaluator(model)["recall@5"]                               # doctest: +SKIP
        0.678
    """

    def __init__(self, eval_records: list[dict], corpus_records: list[dict] | None = None, *, name: str = "heldout",
                 batch_size: int = 64, max_queries: int | None = None, seed: int = 0,
                 show_progress: bool = False):
        from coderag.corpus import dedupe_schemas

        if not eval_records:
            raise CorpusError("no held-out records to evaluate on: lower eval_fraction or use a bigger corpus.")
        everything = list(corpus_records or []) + list(eval_records)
        schemas = dedupe_schemas(everything)
        offset = len(everything) - len(eval_records)
        picked = list(range(len(eval_records)))
        if max_queries is not None and len(picked) > max_queries:
            picked = sorted(random.Random(seed).sample(picked, max_queries))
        self.name, self.batch_size, self.show_progress = name, batch_size, show_progress
        self.queries = [str(eval_records[i]["sql_prompt"]) for i in picked]
        self.gold = [schemas.record_to_snippet[offset + i] for i in picked]
        self.snippets, self.domains = schemas.snippets, schemas.snippet_domains
        self.info: dict[str, Any] = {"queries": len(self.queries), "corpus": len(self.snippets)}

    def __call__(self, model) -> dict[str, float]:
        """Build the index with ``model`` and return :data:`METRIC_KEYS` of its ranking (cosine + the default
        lexical weight x BM25, as served) and ``cosine_<key>`` for :data:`COSINE_KEYS` (the encoder alone),
        rounded to 4 places."""
        from coderag.retrieval.index import SchemaIndex

        index = SchemaIndex.build(model, self.snippets, domains=self.domains, batch_size=self.batch_size,
                                  show_progress=self.show_progress)
        from coderag.retrieval.encoder import encode
        from coderag.retrieval.search import validate_question

        questions = [validate_question(q) for q in self.queries]
        vectors = encode(model, questions, batch_size=self.batch_size)  # once for both rankings
        depth = min(10, index.count)

        def ranking() -> dict[str, float]:
            ids = index.search_questions(vectors, questions, depth)[2].tolist()
            return retrieval_metrics([[i for i in row if i >= 0] for row in ids], self.gold)

        out = {key: round(float(value), 4) for key, value in ranking().items() if key in METRIC_KEYS}
        if index.lexical_weight > 0:
            index.use_lexical_weight(0.0)
            out.update({f"cosine_{key}": round(float(ranking()[key]), 4) for key in COSINE_KEYS})
        return out

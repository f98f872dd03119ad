"""Expected values computed independently of the code under test (numpy, sqlite3), for exact assertions."""

from __future__ import annotations

import sqlite3
from collections import Counter

import numpy as np


def brute_force_retrieval(model, snippets: list[str], questions: list[str], gold: list[int],
                          lexical_weight: float = 0.0) -> dict[str, float]:
    """Recall@1/5/10 and MRR@10 of each question's gold snippet, by numpy dot products of normalized embeddings
    over every snippet (plus ``lexical_weight`` x BM25 of :class:`~coderag.retrieval.lexical.LexicalIndex`, whose
    own scores test_lexical checks; the fusion, candidates and FAISS search are not used here).

    Args:
        model: a sentence-transformers model (its own ``encode``, not CodeRAG's).
        snippets: the indexed texts, in index order.
        questions: the queries.
        gold: per question, the position of its relevant snippet.
        lexical_weight: the index's hybrid weight (0: cosine only).
    """
    docs = model.encode(snippets, normalize_embeddings=True)
    queries = model.encode(questions, normalize_embeddings=True)
    gold_ids = np.asarray(gold)
    scores = queries @ docs.T
    if lexical_weight:
        from coderag.retrieval.lexical import LexicalIndex

        scores = scores + lexical_weight * LexicalIndex(snippets).scores(questions)
    ranks = (scores > scores[np.arange(len(gold_ids)), gold_ids][:, None]).sum(1) + 1
    return {"recall@1": float(np.mean(ranks <= 1)), "recall@5": float(np.mean(ranks <= 5)),
            "recall@10": float(np.mean(ranks <= 10)),
            "mrr@10": float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))}


def brute_force_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products per query row in float64 by sorting every score, equal scores lowest id first.

    Args:
        vectors: the indexed rows, shape (n, d).
        queries: the query rows, shape (n_queries, d).
        k: results per query (clipped to n).

    Returns:
        ``(scores, ids)`` of shape (n_queries, min(k, n)), best first.
    """
    scores = np.asarray(queries, np.float64) @ np.asarray(vectors, np.float64).T
    ids = np.arange(scores.shape[1])
    order = np.array([np.lexsort((ids, -row))[:k] for row in scores]).reshape(len(scores), -1)
    return np.take_along_axis(scores, order, 1), order


def held_out_retrieval(corpus_dir, model_dir, index_dir) -> dict[str, float]:
    """:func:`brute_force_retrieval` of a pipeline run's held-out questions over its saved index, from its artifacts.

    Args:
        corpus_dir: the synthesize step's corpus split.
        model_dir: the tuned encoder.
        index_dir: the saved schema index (its snippets, in index order, are the documents).
    """
    from sentence_transformers import SentenceTransformer

    from coderag.corpus.schemas import normalize_schema, schema_only
    from coderag.pipeline.stages import read_corpus
    from coderag.retrieval.index import SchemaIndex

    index = SchemaIndex.load(index_dir)
    _, held_out = read_corpus(corpus_dir)
    position = {normalize_schema(s): i for i, s in enumerate(index.snippets)}
    gold = [position[normalize_schema(schema_only(r["sql_context"]))] for r in held_out]
    model = SentenceTransformer(str(model_dir), device="cpu")
    return brute_force_retrieval(model, index.snippets, [r["sql_prompt"] for r in held_out], gold,
                                 index.lexical_weight)


def same_rows_on_context(context: str, gold: str, pred: str | None) -> bool:
    """Whether ``pred`` returns the same rows as ``gold`` (as multisets) on the SQLite database ``context`` builds."""
    if not pred:
        return False
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(context)
        expected = Counter(map(repr, conn.execute(gold).fetchall()))
        try:
            got = Counter(map(repr, conn.execute(pred).fetchall()))
        except sqlite3.Error:
            return False
        return got == expected
    finally:
        conn.close()


def expected_status(pred: str | None, ex: bool, database: str) -> str:
    """The status a scored row must carry, re-derived here: no SQL, refused, fails to run, right or wrong.

    Args:
        pred: the extracted SQL (``None`` or empty: nothing could be extracted).
        ex: the row's execution-accuracy verdict (only tells ``ok`` from ``mismatch``).
        database: a SQLite file path, or a script (``sql_context``) to build an in-memory database from.
    """
    import sqlglot

    from coderag.sql.guard import sql_guard

    if not pred or not pred.strip():
        return "parse_failure"
    try:
        sqlglot.parse(pred, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return "parse_failure"
    if not sql_guard(pred).allowed:
        return "guard_refused"
    if database.lstrip().upper().startswith(("CREATE", "INSERT", "PRAGMA", "--")):
        conn = sqlite3.connect(":memory:")
        conn.executescript(database)
    else:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        conn.execute(pred).fetchall()
    except sqlite3.Error:
        return "execution_failure"
    finally:
        conn.close()
    return "ok" if ex else "mismatch"


def gold_rows(records: list[dict]) -> list[list[tuple]]:
    """Each record's gold ``sql`` rows, run by plain ``sqlite3`` on its own ``sql_context`` (one in-memory
    database per distinct context, built once)."""
    databases: dict[str, sqlite3.Connection] = {}
    try:
        out = []
        for record in records:
            conn = databases.get(record["sql_context"])
            if conn is None:
                conn = databases[record["sql_context"]] = sqlite3.connect(":memory:")
                conn.executescript(record["sql_context"])
            out.append(conn.execute(record["sql"]).fetchall())
        return out
    finally:
        for conn in databases.values():
            conn.close()

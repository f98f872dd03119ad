"""Question -> top-k schema snippets, ranked by cosine + the index's lexical weight x BM25.

See :meth:`coderag.retrieval.index.SchemaIndex.search_questions` and :mod:`coderag.retrieval.lexical`;
an index with ``lexical_weight`` 0 ranks by cosine alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from coderag.errors import ConfigError, QuestionError
from coderag.retrieval.encoder import encode
from coderag.retrieval.index import SchemaIndex, check_k

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class RetrievedSchema:
    """One retrieved schema snippet: its 1-based rank, row in the index, cosine ``score``, text, domain, its
    BM25 divided by the question's best (``lexical``, in [0, 1]; 0 when the index ranks by cosine alone) and
    ``hybrid`` = ``score + lexical_weight * lexical``, the score the ranks follow (best first)."""

    rank: int
    snippet_id: int
    score: float
    text: str
    domain: str
    lexical: float = 0.0
    hybrid: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_question(question: Any, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """Return ``question`` stripped of surrounding whitespace, or raise :class:`QuestionError`.

    Refuses non-strings, empty or whitespace-only questions, questions longer than ``max_chars``, and
    text a tokenizer cannot take (NUL characters, lone surrogates).

    Args:
        question: the user's question (any value; only non-empty text passes).
        max_chars: the longest accepted question, after stripping.

    Returns:
        The stripped question.

    Raises:
        QuestionError: the question is not text, empty, too long, or not valid Unicode.

    Example:
        >>> validate_question("  How many singers are there?  ")
        'How many singers are there?'
    """
    if not isinstance(question, str):
        raise QuestionError(f"question must be text, got {type(question).__name__}: pass the question as a string")
    text = question.strip()
    if not text:
        raise QuestionError("question is empty: ask a question in words, e.g. 'How many orders were placed in 2023?'")
    if len(text) > max_chars:
        raise QuestionError(f"question is {len(text)} characters long, the limit is {max_chars}: shorten it")
    if "\x00" in text:
        raise QuestionError("question holds a NUL character: send plain text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A JSON body may carry a lone surrogate ("\\ud800"); the tokenizer cannot take it.
        raise QuestionError(f"question is not valid Unicode (lone surrogate at position {exc.start}): "
                            "send UTF-8 text") from None
    return text


def _check_min_score(min_score: Any) -> float | None:
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not math.isfinite(min_score):
        raise ConfigError(f"min score must be a number between -1 and 1, got {min_score!r}")
    if not -1.0 <= min_score <= 1.0:
        raise ConfigError(f"min score {min_score} is outside the cosine range [-1, 1]: pick a value such as 0.3")
    return float(min_score)


def retrieve_schemas(
    index: SchemaIndex,
    encoder_model: SentenceTransformer,
    questions: Sequence[str],
    k: int = 5,
    min_score: float | None = None,
) -> list[list[RetrievedSchema]]:
    """For each question, the top-``k`` schema snippets, best first (cosine + the index's lexical weight x BM25).

    All questions are validated, then embedded in one batch and searched in one call
    (:meth:`~coderag.retrieval.index.SchemaIndex.search_questions`). ``k`` is clipped to the index size;
    results whose cosine is below ``min_score`` are dropped, so a list may be shorter than ``k`` or empty. Raises :class:`QuestionError` for a bad question, :class:`ConfigError`
    for a bad ``k``/``min_score`` and :class:`~coderag.errors.SchemaIndexError` when the encoder's
    dimension does not match the index.

    Args:
        index: the schema index to search.
        encoder_model: the encoder the index was built with.
        questions: a list of questions (not a single string).
        k: snippets per question.
        min_score: optional cosine floor in [-1, 1].

    Returns:
        One list of :class:`RetrievedSchema` per question.

    Raises:
        QuestionError: a question is invalid, or ``questions`` is a single string.
        ConfigError: ``k`` or ``min_score`` is invalid.
        SchemaIndexError: the encoder's dimension does not match the index.

    Example:
        >>> hits = retrieve_schemas(index, load_encoder(), ["How many singers?"], k=3)  # doctest: +SKIP
        >>> hits[0][0].text  # doctest: +SKIP
        'CREATE TABLE singer (...);'
    """
    if isinstance(questions, str):
        raise QuestionError("questions must be a list of strings, not one string: wrap the question in a list")
    k = check_k(k)
    floor = _check_min_score(min_score)
    texts = [validate_question(q) for q in questions]
    index.check_compatible(encoder_model)
    if not texts:
        return []
    scores, lexical, ids = index.search_questions(encode(encoder_model, texts), texts, k)
    return hits_from_search(index, scores, ids, floor, lexical)


def hits_from_search(index: SchemaIndex, scores, ids, min_score: float | None = None,
                     lexical=None) -> list[list[RetrievedSchema]]:
    """FAISS search output (``scores``, ``ids``, one row per query) as ranked :class:`RetrievedSchema` lists.

    The one conversion from raw search results to hits, shared by :func:`retrieve_schemas` and the
    retriever service. Padding ids (-1) and scores below ``min_score`` are dropped; ranks count from 1.

    Args:
        index: the index that was searched (its snippets and domains fill the hits).
        scores: array-like of shape (n_queries, k), best first.
        ids: array-like of snippet ids, same shape.
        min_score: optional cosine floor.
        lexical: the normalized BM25 of each hit, same shape (default: 0 each).

    Returns:
        One list of hits per query.

    Example:
        >>> import numpy as np
        >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x);", "CREATE TABLE b (y);"], ["d1", "d2"])
        >>> [(h.rank, h.domain) for h in hits_from_search(index, np.array([[0.9, 0.1]]), np.array([[1, -1]]))[0]]
        [(1, 'd2')]
    """
    results: list[list[RetrievedSchema]] = []
    lexical_rows = lexical.tolist() if lexical is not None else [[0.0] * len(row) for row in ids.tolist()]
    for row_scores, row_ids, row_lexical in zip(scores.tolist(), ids.tolist(), lexical_rows, strict=True):
        kept = [(s, i, lx) for s, i, lx in zip(row_scores, row_ids, row_lexical, strict=True)
                if i >= 0 and (min_score is None or s >= min_score)]
        results.append([RetrievedSchema(rank=r + 1, snippet_id=i, score=s, text=index.snippets[i],
                                        domain=index.domains[i], lexical=lx, hybrid=s + index.lexical_weight * lx)
                        for r, (s, i, lx) in enumerate(kept)])
    return results

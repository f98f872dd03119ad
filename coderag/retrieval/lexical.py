"""Okapi BM25 over schema identifiers: the lexical half of hybrid schema retrieval.

A question that names a column (``age``, ``country``) is told apart from a sibling schema that lacks it by
the words themselves, which a mean-pooled bi-encoder blurs. :class:`LexicalIndex` scores every snippet by
BM25 (Robertson et al.; ``k1`` 1.2, ``b`` 0.75) over :func:`identifier_words`: table and column names split
at ``_`` and camelCase, lowercased, a light plural folding (``singers`` -> ``singer``), SQL keywords, types
and common question words dropped. The hybrid score of a snippet is

    ``cosine + lexical_weight * bm25 / max bm25 of that question``   (0 when no word matches)

so the lexical part lies in [0, ``lexical_weight``] and never outweighs the encoder by more than that.
:meth:`coderag.retrieval.index.SchemaIndex.search_questions` fuses the two; the weight is chosen on
held-out *synthetic* domains (``benchmarks/encoder_ablation.py``), never on outside data. The lexical index is
derived from the snippets alone, so it is rebuilt when an index is loaded and is never stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from coderag.errors import ConfigError

K1 = 1.2
B = 0.75
# The weight new indexes get: the best held-out *synthetic* R@1 of the full profile's encoder on one H200
# (benchmarks/encoder_ablation.py, weights 0-1; README "Hybrid retrieval"). Spider was not used to pick it.
DEFAULT_LEXICAL_WEIGHT = 0.3
# Candidates per question in a hybrid search: this many best by cosine and this many best by BM25.
HYBRID_DEPTH = 100
# Words that name no table or column: SQL keywords and types of a CREATE TABLE, and question glue.
STOP_WORDS = frozenset([
    "create", "table", "primary", "key", "foreign", "references", "constraint", "unique", "default", "not", "null",
    "check", "index", "on", "text", "numeric", "integer", "int", "real", "varchar", "char", "nvarchar", "decimal",
    "float", "double", "bigint", "smallint", "tinyint", "datetime", "date", "time", "timestamp", "boolean", "bool",
    "blob", "number", "string", "the", "of", "a", "an", "in", "to", "for", "and", "or", "is", "are", "was", "were",
    "be", "been", "what", "which", "who", "whom", "whose", "how", "many", "much", "with", "by", "each", "all",
    "from", "that", "this", "these", "those", "as", "do", "does", "did", "have", "has", "had", "their", "its",
    "it", "there", "any", "some", "list", "give", "show", "find", "return", "tell", "me", "us", "please",
])
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[-3] in "sx":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def identifier_words(text: str) -> list[str]:
    """The words BM25 counts in a question or a schema snippet, in order (repeats kept).

    Args:
        text: a question or ``CREATE TABLE`` text.

    Returns:
        Lowercased words: identifiers split at non-alphanumerics and camelCase, plurals folded, stop
        words and one-letter words dropped.

    Example:
        >>> identifier_words("CREATE TABLE singer (Singer_ID INT, songReleaseYear TEXT);")
        ['singer', 'singer', 'id', 'song', 'release', 'year']
        >>> identifier_words("How many singers are from France?")
        ['singer', 'france']
    """
    words = _WORD.findall(_CAMEL.sub(r"\1 \2", text).lower())
    return [_fold(w) for w in words if len(w) > 1 and w not in STOP_WORDS]


def check_lexical_weight(weight: object) -> float:
    """``weight`` as a float if it is a finite number in [0, 1], else :class:`ConfigError`.

    Args:
        weight: how much BM25 adds to the cosine (0 turns hybrid retrieval off).

    Returns:
        The weight.

    Raises:
        ConfigError: not a number, or outside [0, 1].

    Example:
        >>> check_lexical_weight(0.2)
        0.2
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ConfigError(f"lexical weight must be a number between 0 and 1, got {weight!r}")
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"lexical weight {weight} is outside [0, 1]: 0 turns BM25 off, e.g. 0.2 mixes it in")
    return float(weight)


class LexicalIndex:
    """BM25 weights of every snippet's identifier words, as one sparse (snippets x words) matrix.

    Args:
        snippets: the indexed texts, row i of the schema index = snippet i.

    Example:
        >>> lex = LexicalIndex(["CREATE TABLE singer (age INT);", "CREATE TABLE song (title TEXT);"])
        >>> lex.scores(["How old is each singer? (age)"]).round(2).tolist()
        [[1.0, 0.0]]
    """

    def __init__(self, snippets: Sequence[str]) -> None:
        from scipy import sparse

        vocab: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(snippets), dtype=np.float32)
        for i, text in enumerate(snippets):
            words = identifier_words(text)
            lengths[i] = len(words)
            tally: dict[int, int] = {}
            for w in words:
                j = vocab.setdefault(w, len(vocab))
                tally[j] = tally.get(j, 0) + 1
            rows.extend([i] * len(tally))
            cols.extend(tally)
            counts.extend(tally.values())
        self.vocab = vocab
        n = len(snippets)
        tf = np.asarray(counts, dtype=np.float32)
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(vocab)).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
        norm = K1 * (1.0 - B + B * lengths[np.asarray(rows, dtype=np.int64)] / avg) if rows else tf
        weights = idf[np.asarray(cols, dtype=np.int64)] * tf * (K1 + 1.0) / (tf + norm) if rows else tf
        # (words x snippets), CSR: a query's words pick rows, their sum is its BM25 row over every snippet.
        self.matrix = sparse.csr_matrix((weights, (cols, rows)), shape=(len(vocab), n), dtype=np.float32)

    @property
    def count(self) -> int:
        return int(self.matrix.shape[1])

    def scores(self, questions: Sequence[str]) -> np.ndarray:
        """BM25 of every snippet for each question, divided by that question's best (so in [0, 1]).

        Args:
            questions: the questions, one row each.

        Returns:
            float32 array of shape (len(questions), count); a row is all 0 when no word of the question
            occurs in any snippet.
        """
        from scipy import sparse

        rows, cols = [], []
        for i, q in enumerate(questions):
            for j in {self.vocab[w] for w in identifier_words(q) if w in self.vocab}:
                rows.append(i)
                cols.append(j)
        picks = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                  shape=(len(questions), len(self.vocab)))
        out = np.asarray((picks @ self.matrix).todense(), dtype=np.float32)
        best = out.max(axis=1, keepdims=True) if out.size else out
        np.divide(out, best, out=out, where=best > 0)
        return out

"""Retrieved question -> SQL examples for the prompt (DAIL-SQL style), from the synthetic training split only.

An :class:`ExampleIndex` embeds the questions of training records with the same encoder as the schema
index; for a new question the ``k`` most similar training questions and their SQL go into the prompt
beside the retrieved schemas (:func:`coderag.generation.prompting.build_messages`). It is stored inside the
schema index's directory (``examples_faiss_index.bin`` + ``examples.json``, checksummed and described by
the same manifest, written in the same atomic swap): see :meth:`SchemaIndex.save
<coderag.retrieval.index.SchemaIndex.save>`.

Only records of the training split may go in (:func:`training_examples` splits a corpus by domain as the
pipeline does); the manifest records the held-out domains that were kept out, so a loader can check that a
question's domain was never an example.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from coderag.config import MAX_EXAMPLES
from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.encoder import encode

EXAMPLES_INDEX_FILE = "examples_faiss_index.bin"
EXAMPLES_FILE = "examples.json"
EXAMPLE_FILES = (EXAMPLES_INDEX_FILE, EXAMPLES_FILE)
_REBUILD = "rebuild the index with `coderag index build --examples K`"


@dataclass(frozen=True)
class Example:
    """One retrieved example: a training question, its SQL, its domain and the cosine score to the query."""

    question: str
    sql: str
    domain: str
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_examples(k: Any) -> int:
    """``k`` as an int in 0..:data:`MAX_EXAMPLES`; :class:`ConfigError` otherwise (0 disables examples)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_EXAMPLES:
        raise ConfigError(f"examples must be an integer between 0 and {MAX_EXAMPLES}, got {k!r}")
    return k


def training_examples(records: Sequence[dict], eval_fraction: float = 0.2, seed: int = 0
                      ) -> tuple[list[dict], list[dict]]:
    """(train, held-out) records split by domain exactly as the pipeline's corpus step splits them.

    Examples come from the first list only; the second is what evaluation may ask.

    Example:
        >>> train, held_out = training_examples([{"domain": d} for d in "aabbcd"], 0.25)
        >>> {r["domain"] for r in train} & {r["domain"] for r in held_out}
        set()
    """
    from coderag.training.heldout import split_by_domain

    return split_by_domain(list(records), eval_fraction, seed)


class ExampleIndex:
    """Training questions with their SQL and a FAISS inner-product index over the questions' embeddings."""

    def __init__(self, faiss_index: faiss.Index, questions: Sequence[str], sqls: Sequence[str],
                 domains: Sequence[str], held_out_domains: Sequence[str] = ()) -> None:
        if not faiss_index.ntotal == len(questions) == len(sqls) == len(domains):
            raise SchemaIndexError(f"example index holds {faiss_index.ntotal} vectors for {len(questions)} "
                                   f"questions: {_REBUILD}")
        self.faiss_index = faiss_index
        self.questions, self.sqls, self.domains = list(questions), list(sqls), list(domains)
        self.held_out_domains = sorted({str(d) for d in held_out_domains})

    @property
    def count(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    @classmethod
    def build(cls, encoder_model, records: Sequence[dict], *, held_out_domains: Sequence[str] = (),
              batch_size: int = 64, show_progress: bool | None = False) -> ExampleIndex:
        """Embed the questions of training ``records`` (``sql_prompt``, ``sql``, ``domain``); one example
        per distinct question.

        Args:
            encoder_model: the schema index's encoder.
            records: training-split records only.
            held_out_domains: the domains kept out (recorded; a record of one of them is refused).
            batch_size: encoder batch size.
            show_progress: progress bar.

        Returns:
            A new :class:`ExampleIndex`.

        Raises:
            ConfigError: no usable record, or a record of a held-out domain.

        Example:
            >>> examples = ExampleIndex.build(load_encoder(), train_records)  # doctest: +SKIP
        """
        held = {str(d) for d in held_out_domains}
        questions, sqls, domains, seen = [], [], [], set()
        for record in records:
            question, sql = str(record.get("sql_prompt") or "").strip(), str(record.get("sql") or "").strip()
            domain = str(record.get("domain", ""))
            if domain in held:
                raise ConfigError(f"record of held-out domain {domain!r} offered as an example: examples come "
                                  "from the training split only")
            if question and sql and question not in seen:
                seen.add(question)
                questions.append(question)
                sqls.append(sql)
                domains.append(domain)
        if not questions:
            raise ConfigError("no training record has a question and SQL to serve as an example")
        vectors = np.ascontiguousarray(encode(encoder_model, questions, batch_size=batch_size,
                                              show_progress=show_progress), dtype=np.float32)  # (n, dim)
        faiss.normalize_L2(vectors)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index, questions, sqls, domains, held_out_domains=sorted(held))

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Example]]:
        """The ``k`` most similar examples per query vector (unit rows, shape (n, dim)), best first."""
        k = check_examples(k)
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if k == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        if queries.shape[1] != self.dim:
            raise SchemaIndexError(f"query vectors have dim {queries.shape[1]} but the example index has {self.dim}: "
                                   f"{_REBUILD}")
        scores, ids = self.faiss_index.search(queries, min(k, self.count))
        return [[Example(self.questions[i], self.sqls[i], self.domains[i], float(s))
                 for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
                for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True)]

    def search_other_domains(self, query_vectors: np.ndarray, domains: Sequence[str], k: int) -> list[list[Example]]:
        """The ``k`` most similar examples per query vector whose domain is not the query's own (``domains``).

        What a training prompt should show to look like an inference prompt on a held-out domain, whose
        examples always come from other domains.

        Args:
            query_vectors: unit rows, shape (n, dim).
            domains: each query's domain (its examples are skipped).
            k: examples per query.

        Returns:
            One list of at most ``k`` :class:`Example` per query, best first.

        Example:
            >>> examples.search_other_domains(vectors, ["retail"], 3)  # doctest: +SKIP
        """
        k = check_examples(k)
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)  # (n, dim)
        if len(domains) != queries.shape[0]:
            raise ConfigError(f"{len(domains)} domains for {queries.shape[0]} queries")
        if k == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        # Deep enough that k hits of other domains remain after a whole domain's neighbours are skipped.
        own_counts: dict[str, int] = {}
        for domain in self.domains:
            own_counts[domain] = own_counts.get(domain, 0) + 1
        depth = min(self.count, k + max(own_counts.values()))
        scores, ids = self.faiss_index.search(queries, depth)
        return [[Example(self.questions[i], self.sqls[i], self.domains[i], float(s))
                 for s, i in zip(row_scores, row_ids, strict=True) if i >= 0 and self.domains[i] != str(domain)][:k]
                for row_scores, row_ids, domain in zip(scores.tolist(), ids.tolist(), domains, strict=True)]

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``examples`` entry: count, dim, source split and the held-out domains kept out."""
        return {"count": self.count, "dim": self.dim, "split": "train", "domains": len(set(self.domains)),
                "held_out_domains": self.held_out_domains}

    def write(self, directory: Path) -> None:
        """Write the two example files into ``directory`` (the schema index's staging directory)."""
        faiss.write_index(self.faiss_index, str(directory / EXAMPLES_INDEX_FILE))
        payload = {"questions": self.questions, "sqls": self.sqls, "domains": self.domains}
        (directory / EXAMPLES_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def read(cls, directory: Path, entry: dict[str, Any]) -> ExampleIndex:
        """The example index of an index directory whose manifest has ``entry`` (checksums checked by the caller)."""
        try:
            index = faiss.read_index(str(directory / EXAMPLES_INDEX_FILE))
            data = json.loads((directory / EXAMPLES_FILE).read_text(encoding="utf-8"))
            questions, sqls, domains = data["questions"], data["sqls"], data["domains"]
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise SchemaIndexError(f"the example files in {directory} cannot be read ({exc}): {_REBUILD}") from None
        examples = cls(index, questions, sqls, domains, held_out_domains=entry.get("held_out_domains", ()))
        if examples.count != entry.get("count") or examples.dim != entry.get("dim"):
            raise SchemaIndexError(f"the example index in {directory} holds {examples.count} x {examples.dim} but "
                                   f"its manifest says {entry.get('count')} x {entry.get('dim')}: {_REBUILD}")
        return examples


def retrieve_examples(index, encoder_model, questions: Sequence[str], k: int) -> list[list[Example]]:
    """The ``k`` training examples most similar to each question, from the schema index's example index.

    Args:
        index: a :class:`~coderag.retrieval.index.SchemaIndex` (its ``examples``) or an :class:`ExampleIndex`.
        encoder_model: the encoder both were built with.
        questions: the questions.
        k: examples per question (0: none).

    Returns:
        One list of :class:`Example` per question.

    Raises:
        ConfigError: ``k`` > 0 but the index holds no examples.

    Example:
        >>> [e.question for e in retrieve_examples(index, model, ["How many orders?"], 2)[0]]  # doctest: +SKIP
        ['How many orders are there?', 'Count the orders per customer.']
    """
    k = check_examples(k)
    if k == 0:
        return [[] for _ in questions]
    examples = index if isinstance(index, ExampleIndex) else getattr(index, "examples", None)
    if examples is None:
        raise ConfigError("the index holds no question -> SQL examples: rebuild it with `coderag index build "
                          "--examples K` (or the pipeline's index step), or use --examples 0")
    return examples.search(encode(encoder_model, list(questions)), k)

"""A FAISS inner-product index over L2-normalized schema embeddings (cosine similarity).

An index directory holds three files:

- ``sql_rag_faiss_index.bin``: the FAISS index, ``IndexFlatIP`` or an IVF / HNSW one (see
  :mod:`coderag.retrieval.ann`);
- ``corpus_map.json``: ``{"snippets": [...], "domains": [...]}``, row i describes vector i (JSON, no pickle);
- ``encoder.onnx`` (only for an ONNX encoder backend): the question encoder exported to ONNX, fp32 or 8-bit
  weights (see :mod:`coderag.retrieval.onnx_encoder`);
- ``manifest.json``: encoder, encoder backend, dim, count, metric, index type and its parameters, the
  ``lexical_weight`` of hybrid search (see :mod:`coderag.retrieval.lexical`; an index written before it had
  none and loads with 0, cosine only), and a SHA-256 per file, written last;
- optionally ``examples_faiss_index.bin`` + ``examples.json``: question -> SQL examples of the synthetic
  training split (:class:`~coderag.retrieval.examples.ExampleIndex`), described by the manifest's
  ``examples`` entry and checksummed with the rest.

Saving writes everything into a sibling temporary directory and swaps it in, so a crash never leaves a
half-written index; loading checks the manifest before trusting any file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from coderag.atomic_files import atomic_directory
from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.ann import IndexSpec, apply_search_params, index_type_of, new_faiss_index, train_faiss_index
from coderag.retrieval.encoder import encode, encoder_dim
from coderag.retrieval.encoder import encoder_fingerprint as fingerprint_of
from coderag.retrieval.encoder import encoder_name as name_of
from coderag.retrieval.exact_search import check_flat_search, flat_vectors, gemm_search, uses_gemm
from coderag.retrieval.examples import EXAMPLE_FILES, ExampleIndex
from coderag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT, HYBRID_DEPTH, LexicalIndex, check_lexical_weight
from coderag.retrieval.onnx_encoder import ENCODER_BACKENDS, ONNX_BACKENDS, ONNX_FILE, check_backend, export_onnx

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "sql_rag_faiss_index.bin"
CORPUS_MAP_FILE = "corpus_map.json"
MANIFEST_FILE = "manifest.json"
INDEX_FILES = (INDEX_FILE, CORPUS_MAP_FILE, MANIFEST_FILE, *EXAMPLE_FILES, ONNX_FILE)
_REBUILD = "rebuild the index with `coderag index build`"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_texts(snippets: Sequence[str], domains: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if isinstance(snippets, str):
        raise ConfigError("snippets must be a list of schema texts, not a single string: wrap it in a list")
    snippets = list(snippets)
    if not snippets:
        raise SchemaIndexError("cannot build an index from 0 schema snippets: check that the corpus is not empty")
    for i, text in enumerate(snippets):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"schema snippet {i} is empty or not a string: drop it before indexing")
    domains = [""] * len(snippets) if domains is None else [str(d) for d in domains]
    if len(domains) != len(snippets):
        raise ConfigError(f"got {len(domains)} domains for {len(snippets)} snippets: pass one domain per snippet")
    return snippets, domains


def check_k(k: Any) -> int:
    """``k`` as an int if it is a positive integer (numpy integers too, not bools), else :class:`ConfigError`."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"k must be a positive integer (number of schemas to retrieve), got {k!r}")
    return int(k)


def _train_rows(n: int, spec: IndexSpec, seed: int) -> np.ndarray:
    """The sorted row ids an IVF quantiser is trained on: a seeded sample, the same for the same corpus."""
    size = spec.train_size(n)
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


class SchemaIndex:
    """Schema snippets, their domains and a FAISS inner-product index whose row i embeds snippet i."""

    def __init__(
        self,
        faiss_index: faiss.Index,
        snippets: Sequence[str],
        domains: Sequence[str],
        encoder_name: str,
        encoder_fingerprint: str | None = None,
        created_at: str | None = None,
        source: dict[str, Any] | None = None,
        spec: IndexSpec | None = None,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    ) -> None:
        if faiss_index.ntotal != len(snippets) or len(snippets) != len(domains):
            raise SchemaIndexError(
                f"index holds {faiss_index.ntotal} vectors for {len(snippets)} snippets and {len(domains)} domains: {_REBUILD}"
            )
        self.faiss_index = faiss_index
        self.snippets = list(snippets)
        self.domains = list(domains)
        self.encoder_name = encoder_name
        self.encoder_fingerprint = encoder_fingerprint
        self.created_at = created_at
        # Where the snippets came from (a live database: its URL without password and schema fingerprint).
        self.source = source
        self.spec = spec or IndexSpec(index_type_of(faiss_index) if index_type_of(faiss_index) != "other" else "flat")
        # Question -> SQL examples of the training split, saved and loaded with the index (None: none).
        self.examples: ExampleIndex | None = None
        # The backend questions are embedded with; the vectors above always come from the torch encoder.
        self.encoder_backend = "torch"
        self.encoder_onnx: dict[str, Any] | None = None  # the manifest's record of the ONNX file
        self.onnx_path: Path | None = None  # where that file is (a loaded index's directory)
        self._onnx_model: SentenceTransformer | None = None  # exported at save() when set
        # Which path a search takes: auto (GEMM on a flat index for batches of GEMM_MIN_QUERIES+), faiss or gemm.
        self.flat_search = "auto"
        # How much BM25 over the snippets' identifiers adds to the cosine in search_questions (0: cosine only).
        self.lexical_weight = check_lexical_weight(lexical_weight)
        self._lexical: LexicalIndex | None = None  # built from the snippets on first use

    def use_lexical_weight(self, weight: float) -> None:
        """Rank :meth:`search_questions` results by ``cosine + weight * BM25`` (0: cosine only).

        Args:
            weight: in [0, 1]; saved in the manifest with the index.

        Raises:
            ConfigError: not a number in [0, 1].

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"])
            >>> index.use_lexical_weight(0.0); index.lexical_weight
            0.0
        """
        self.lexical_weight = check_lexical_weight(weight)

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 index over the snippets (built on first use, never saved: it is derived from them)."""
        if self._lexical is None:
            self._lexical = LexicalIndex(self.snippets)
        return self._lexical

    def use_flat_search(self, mode: str) -> None:
        """Search with ``mode``: ``auto``, ``faiss`` or ``gemm`` (see :mod:`coderag.retrieval.exact_search`).

        Args:
            mode: ``auto`` (one GEMM per batch of at least ``GEMM_MIN_QUERIES`` queries on a flat index of at
                least ``GEMM_MIN_VECTORS`` vectors, FAISS otherwise), ``faiss`` (always FAISS) or ``gemm``
                (always one GEMM; flat indexes only).

        Raises:
            ConfigError: an unknown mode, or ``gemm`` for an IVF / HNSW index.

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"])
            >>> index.use_flat_search("gemm"); index.flat_search
            'gemm'
        """
        uses_gemm(check_flat_search(mode), index_type_of(self.faiss_index), 1, self.count)  # refuses gemm on IVF / HNSW
        self.flat_search = mode

    def use_encoder_backend(self, backend: str, encoder_model: SentenceTransformer | None = None) -> None:
        """Serve questions with ``backend``: an ONNX one is exported from ``encoder_model`` when the index is saved.

        Args:
            backend: ``torch``, ``onnx`` or ``onnx-int8``.
            encoder_model: the model the index was built with (needed for an ONNX backend).

        Raises:
            ConfigError: an unknown backend, or an ONNX backend without ``encoder_model``.

        Example:
            >>> index.use_encoder_backend("onnx-int8", load_encoder())  # doctest: +SKIP
        """
        self.encoder_backend = check_backend(backend)
        self.encoder_onnx, self.onnx_path, self._onnx_model = None, None, None
        if backend in ONNX_BACKENDS:
            if encoder_model is None:
                raise ConfigError(f"encoder backend {backend!r} needs the encoder model to export: pass encoder_model")
            self._onnx_model = encoder_model

    @property
    def dim(self) -> int:
        """The embedding dimension of the index."""
        return int(self.faiss_index.d)

    @property
    def count(self) -> int:
        """The number of indexed snippets."""
        return int(self.faiss_index.ntotal)

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        snippets: Sequence[str],
        domains: Sequence[str] | None = None,
        encoder_name: str = "unknown",
        encoder_fingerprint: str | None = None,
        spec: IndexSpec | None = None,
        seed: int = 0,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    ) -> SchemaIndex:
        """Index precomputed embeddings (row i for snippet i); rows are L2-normalized here if they were not.

        The same vectors, ``spec`` and ``seed`` always give the same index (IVF trains on a seeded sample).

        Args:
            vectors: array of shape (len(snippets), dim), finite values.
            snippets: the schema texts, non-empty strings.
            domains: one domain per snippet (default: ``""`` each).
            encoder_name: the name recorded in the manifest.
            encoder_fingerprint: the encoder's :func:`~coderag.retrieval.encoder.encoder_fingerprint`, if known.
            spec: the index structure (default: exact flat).
            seed: seeds the IVF training sample and k-means.
            lexical_weight: how much BM25 adds to the cosine in :meth:`search_questions` (0: cosine only).

        Returns:
            A new :class:`SchemaIndex`.

        Raises:
            ConfigError: shapes or lengths disagree, a snippet is empty, a vector holds NaN / inf, or the
                lexical weight is outside [0, 1].
            SchemaIndexError: ``snippets`` is empty.

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"])
            >>> len(index), index.dim
            (2, 2)
        """
        snippets, domains = _check_texts(snippets, domains)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(snippets) or vectors.shape[1] < 1:
            raise ConfigError(f"vectors have shape {vectors.shape} for {len(snippets)} snippets: pass one row per snippet")
        if not np.isfinite(vectors).all():
            raise ConfigError("vectors contain NaN or infinite values: re-encode the snippets")
        vectors = np.array(vectors, dtype=np.float32, order="C", copy=True)
        # Cosine similarity needs unit rows; normalizing already-unit rows is a cheap no-op.
        faiss.normalize_L2(vectors)
        spec = (spec or IndexSpec()).resolved(len(snippets))
        index = new_faiss_index(spec, vectors.shape[1])
        train_faiss_index(index, vectors[_train_rows(len(vectors), spec, seed)], seed)
        index.add(vectors)
        return cls(index, snippets, domains, encoder_name, encoder_fingerprint, spec=spec,
                   lexical_weight=lexical_weight)

    @classmethod
    def build(
        cls,
        encoder_model: SentenceTransformer,
        snippets: Sequence[str],
        domains: Sequence[str] | None = None,
        encoder_name: str | None = None,
        batch_size: int = 64,
        show_progress: bool | None = False,
        spec: IndexSpec | None = None,
        device: str | None = None,
        encode_workers: int | None = None,
        seed: int = 0,
        encoder_backend: str = "torch",
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    ) -> SchemaIndex:
        """Embed ``snippets`` with ``encoder_model`` and index them; ``encoder_name`` defaults to what the model
        was loaded as.

        Without ``device`` the snippets go through ``SentenceTransformer.encode``. With ``device`` (e.g.
        ``"cuda"``) they go through :func:`~coderag.retrieval.ahead_encoder.iter_encoded_windows`: tokenised
        ahead in ``encode_workers`` processes, length-sorted, fp16 on CUDA, and added to FAISS window by
        window, so no second float32 copy of the corpus is held.

        Args:
            encoder_model: the sentence-transformers model that embeds the snippets (and later the questions).
            snippets: the schema texts, non-empty strings.
            domains: one domain per snippet (default: ``""`` each).
            encoder_name: the name recorded in the manifest.
            batch_size: texts per encoder batch.
            show_progress: show a progress bar; ``None`` follows the log level.
            spec: the index structure (default: exact flat).
            device: encode with the tokenise-ahead encoder on this torch device.
            encode_workers: tokenizer processes of the tokenise-ahead encoder (default: cores - 1).
            seed: seeds the IVF training sample and k-means.
            encoder_backend: how questions will be embedded (``torch``, ``onnx``, ``onnx-int8``); an ONNX one
                is exported into the index directory by :meth:`save`. Snippets are always embedded by torch.
            lexical_weight: how much BM25 adds to the cosine in :meth:`search_questions` (0: cosine only).

        Returns:
            A new :class:`SchemaIndex`.

        Raises:
            ConfigError: a snippet is empty, ``domains`` has the wrong length or the backend is unknown.
            SchemaIndexError: ``snippets`` is empty.

        Example:
            >>> index = SchemaIndex.build(load_encoder(), ["CREATE TABLE singer (id INT);"])  # doctest: +SKIP
        """
        snippets, domains = _check_texts(snippets, domains)
        check_backend(encoder_backend)
        check_lexical_weight(lexical_weight)
        name = encoder_name or name_of(encoder_model)
        fingerprint = fingerprint_of(encoder_model)
        if device is None:
            vectors = encode(encoder_model, snippets, batch_size=batch_size, show_progress=show_progress)
            index = cls.from_vectors(vectors, snippets, domains, name, fingerprint, spec=spec, seed=seed,
                                     lexical_weight=lexical_weight)
            index.use_encoder_backend(encoder_backend, encoder_model)
            return index
        from coderag.retrieval.ahead_encoder import encode_ahead, iter_encoded_windows

        options = {"device": device, "batch_size": batch_size, "workers": encode_workers}
        spec = (spec or IndexSpec()).resolved(len(snippets))
        index = new_faiss_index(spec, encoder_dim(encoder_model))
        if spec.trained:
            rows = _train_rows(len(snippets), spec, seed)
            train_faiss_index(index, encode_ahead(encoder_model, [snippets[i] for i in rows], **options), seed)
        for _, vectors in iter_encoded_windows(encoder_model, snippets, **options):
            index.add(vectors)  # (window, dim) unit float32 rows, dropped after the add
        built = cls(index, snippets, domains, name, fingerprint, spec=spec, lexical_weight=lexical_weight)
        built.use_encoder_backend(encoder_backend, encoder_model)
        return built

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine scores and snippet ids per query row; ``k`` is clipped to the index size.

        Returns ``(scores, ids)``, both of shape (n_queries, min(k, count)), best first. A flat index of
        ``GEMM_MIN_VECTORS`` or more answers a batch of ``GEMM_MIN_QUERIES`` or more queries with one GEMM
        (exact, the same results as FAISS; equal scores by lowest id), anything else goes to FAISS;
        :meth:`use_flat_search` overrides it.

        Args:
            query_vectors: unit query embeddings, shape (n_queries, dim) or (dim,).
            k: how many snippets per query (a positive integer).

        Returns:
            ``(scores, ids)`` as numpy arrays.

        Raises:
            ConfigError: ``k`` is not a positive integer.
            SchemaIndexError: the query dimension differs from the index's.

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"])
            >>> index.search(np.array([[0.0, 1.0]]), k=1)[1].tolist()
            [[1]]
        """
        check_k(k)
        queries = np.asarray(query_vectors)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise SchemaIndexError(
                f"query vectors have shape {queries.shape} but the index dim is {self.dim}: "
                f"encode questions with the index's encoder ({self.encoder_name})"
            )
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), self.count)
        if queries.shape[0] == 0:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        if uses_gemm(self.flat_search, index_type_of(self.faiss_index), queries.shape[0], self.count):
            return gemm_search(flat_vectors(self.faiss_index), queries, k)
        scores, ids = self.faiss_index.search(queries, k)
        return scores, ids

    def search_questions(self, query_vectors: np.ndarray, questions: Sequence[str],
                         k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` snippets per question by the hybrid score ``cosine + lexical_weight * BM25``.

        With ``lexical_weight`` 0 this is :meth:`search` (lexical scores all 0). Otherwise the candidates
        of a question are its :data:`~coderag.retrieval.lexical.HYBRID_DEPTH` best snippets by cosine and
        its ``HYBRID_DEPTH`` best by BM25 (every snippet when the index holds no more); each candidate's
        exact cosine is computed from the stored vector, and the best ``k`` by hybrid score are returned.

        Args:
            query_vectors: unit embeddings of ``questions``, shape (n_queries, dim).
            questions: the question texts, one per row (BM25 reads them).
            k: how many snippets per question (clipped to the index size).

        Returns:
            ``(cosine, lexical, ids)``, arrays of shape (n_queries, min(k, count)), best hybrid score first;
            ``lexical`` is each snippet's BM25 divided by the question's best, in [0, 1].

        Raises:
            ConfigError: ``k`` is not a positive integer, or the rows and questions disagree in number.
            SchemaIndexError: the query dimension differs from the index's.

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE singer (age INT);",
            ...                                             "CREATE TABLE song (title TEXT);"])
            >>> index.use_lexical_weight(0.5)
            >>> index.search_questions(np.array([[0.6, 0.8]]), ["ages of singers"], k=1)[2].tolist()
            [[0]]
        """
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[0] != len(questions):
            raise ConfigError(f"{len(questions)} questions for query vectors of shape {queries.shape}: "
                              "pass one vector row per question")
        if self.lexical_weight == 0.0 or queries.shape[0] == 0:
            scores, ids = self.search(queries, k)
            return scores, np.zeros_like(scores), ids
        k = min(check_k(k), self.count)
        depth = min(self.count, max(k, HYBRID_DEPTH))
        lexical = self.lexical.scores(questions)  # (n_queries, count)
        if depth < self.count:
            _, dense_ids = self.search(queries, depth)
            lexical_ids = np.argpartition(-lexical, depth - 1, axis=1)[:, :depth]
            candidates = [np.union1d(d[d >= 0], lx) for d, lx in zip(dense_ids, lexical_ids, strict=True)]
        else:
            candidates = [np.arange(self.count)] * len(queries)
        out_cos = np.full((len(queries), k), -1.0, dtype=np.float32)
        out_lex = np.zeros((len(queries), k), dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, ids) in enumerate(zip(queries, candidates, strict=True)):
            cosine = self._vectors_of(ids) @ query
            fused = cosine + self.lexical_weight * lexical[row, ids]
            order = np.lexsort((ids, -fused))[:k]  # best first, equal scores by lowest id
            n = len(order)
            out_cos[row, :n], out_lex[row, :n], out_ids[row, :n] = cosine[order], lexical[row, ids[order]], ids[order]
        return out_cos, out_lex, out_ids

    def _vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored unit vectors of snippets ``ids`` (flat: a view's rows; IVF / HNSW: reconstructed)."""
        if index_type_of(self.faiss_index) == "flat":
            return flat_vectors(self.faiss_index)[ids]
        if index_type_of(self.faiss_index) == "ivf":
            ivf = faiss.extract_index_ivf(self.faiss_index)
            if not ivf.direct_map.type:  # no id -> (list, offset) map yet: reconstruct needs one
                ivf.make_direct_map()
        return self.faiss_index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def check_compatible(self, encoder_model: SentenceTransformer, strict: bool = False) -> None:
        """Raise :class:`SchemaIndexError` when ``encoder_model`` cannot query this index.

        A dimension mismatch always raises; different weights (fingerprint) raise only when ``strict``,
        otherwise they are logged as a warning, because results would be silently worse.

        Args:
            encoder_model: the model that will embed the questions.
            strict: also raise when the encoder's weights differ from the ones that built the index.

        Returns:
            None.

        Raises:
            SchemaIndexError: the dimensions differ, or (``strict``) the fingerprints differ.

        Example:
            >>> SchemaIndex.load("index").check_compatible(load_encoder(), strict=True)  # doctest: +SKIP
        """
        dim = encoder_dim(encoder_model)
        if dim != self.dim:
            raise SchemaIndexError(f"index dim {self.dim} does not match encoder dim {dim}: {_REBUILD}")
        if self.encoder_fingerprint is None:
            return
        fingerprint = fingerprint_of(encoder_model)
        if fingerprint != self.encoder_fingerprint:
            message = (
                f"index was built with encoder {self.encoder_name} ({self.encoder_fingerprint}) but the query "
                f"encoder is {name_of(encoder_model)} ({fingerprint})"
            )
            if strict:
                raise SchemaIndexError(f"{message}: {_REBUILD} or load the matching encoder")
            log.warning("%s; retrieval quality may suffer", message)

    def manifest(self, files: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``manifest.json`` content describing this index.

        Args:
            files: SHA-256 per index file name (filled in by :meth:`save`).

        Returns:
            A JSON-serialisable dict: format version, encoder, fingerprint, encoder backend (and its ONNX file),
            dim, count, metric, index type and parameters, files, creation time, and ``source`` when the index
            was built from a live database.

        Example:
            >>> index = SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"])
            >>> index.manifest()["count"]
            2
        """
        return {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder_name,
            "encoder_fingerprint": self.encoder_fingerprint,
            "encoder_backend": self.encoder_backend,
            **({"encoder_onnx": self.encoder_onnx} if self.encoder_onnx is not None else {}),
            "dim": self.dim,
            "count": self.count,
            "metric": "cosine",
            "faiss_index": type(self.faiss_index).__name__,
            "index_type": self.spec.index_type,
            "index_params": self.spec.params(),
            "lexical_weight": self.lexical_weight,
            "files": files or {},
            "created_at": self.created_at,
            **({"source": self.source} if self.source is not None else {}),
            **({"examples": self.examples.manifest()} if self.examples is not None else {}),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` atomically and return its path.

        Files go to a sibling temporary directory (manifest last) that then replaces ``directory``; on
        any failure the temporary directory is removed and an existing index is left as it was. A
        non-empty ``directory`` that is not an index is never overwritten.

        Args:
            directory: the index directory to create or replace.

        Returns:
            The absolute path of the written directory.

        Raises:
            SchemaIndexError: ``directory`` is a file, holds foreign files, or cannot be written.

        Example:
            >>> index.save("out/index")  # doctest: +SKIP
            PosixPath('/abs/out/index')
        """
        target = Path(directory).expanduser().absolute()
        if target.exists() and not target.is_dir():
            raise SchemaIndexError(f"index path {target} is a file: choose a directory for --out")
        if target.is_dir():
            foreign = sorted(p.name for p in target.iterdir() if p.name not in INDEX_FILES)
            if foreign:
                raise SchemaIndexError(
                    f"refusing to overwrite {target}: it holds files that are not part of an index "
                    f"({', '.join(foreign[:3])}): choose an empty or new directory"
                )
        try:
            with atomic_directory(target) as staging:
                self.created_at = datetime.now(UTC).isoformat(timespec="seconds")
                faiss.write_index(self.faiss_index, str(staging / INDEX_FILE))
                corpus_map = {"snippets": self.snippets, "domains": self.domains}
                (staging / CORPUS_MAP_FILE).write_text(json.dumps(corpus_map, ensure_ascii=False), encoding="utf-8")
                written = [INDEX_FILE, CORPUS_MAP_FILE]
                if self.examples is not None:
                    if self.examples.dim != self.dim:
                        raise SchemaIndexError(f"the example index has dim {self.examples.dim} but the schema index "
                                               f"{self.dim}: build both with the same encoder")
                    self.examples.write(staging)
                    written += list(EXAMPLE_FILES)
                if self.encoder_backend in ONNX_BACKENDS:
                    self._write_onnx(staging / ONNX_FILE)
                    written.append(ONNX_FILE)
                files = {name: _sha256(staging / name) for name in written}
                manifest = json.dumps(self.manifest(files), indent=2, sort_keys=True)
                (staging / MANIFEST_FILE).write_text(manifest + "\n", encoding="utf-8")
        except (OSError, RuntimeError) as exc:
            raise SchemaIndexError(f"could not write the index to {target} ({exc}): check the disk and permissions") from exc
        if self.encoder_backend in ONNX_BACKENDS:
            self.onnx_path, self._onnx_model = target / ONNX_FILE, None
        log.info("index saved dir=%s count=%d dim=%d backend=%s", target, self.count, self.dim, self.encoder_backend)
        return target

    def _write_onnx(self, path: Path) -> None:
        """Export the ONNX encoder to ``path``, or copy the one this index was loaded with."""
        if self._onnx_model is not None:
            self.encoder_onnx = export_onnx(self._onnx_model, path, self.encoder_backend)
        elif self.onnx_path is not None and self.encoder_onnx is not None:
            shutil.copyfile(self.onnx_path, path)
        else:
            raise SchemaIndexError(f"encoder backend {self.encoder_backend!r} has no ONNX encoder to save: "
                                   "call use_encoder_backend with the encoder model")

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        expected_dim: int | None = None,
        verify_checksums: bool = True,
    ) -> SchemaIndex:
        """Load an index directory written by :meth:`save`, checking the manifest first.

        Raises :class:`SchemaIndexError` when the directory or a file is missing, a checksum or the
        count disagrees with the manifest, a file is corrupt, or the dim differs from ``expected_dim``.

        Args:
            directory: an index directory written by :meth:`save`.
            expected_dim: the encoder's dimension, checked against the manifest when given.
            verify_checksums: compare each file's SHA-256 with the manifest.

        Returns:
            The loaded :class:`SchemaIndex`.

        Raises:
            SchemaIndexError: see above; the message says how to rebuild.

        Example:
            >>> index = SchemaIndex.load("out/index", expected_dim=384)  # doctest: +SKIP
        """
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise SchemaIndexError(f"index directory {root} does not exist: build one with `coderag index build --out {root}`")
        manifest = _read_manifest(root)
        examples_entry = manifest.get("examples")
        if examples_entry is not None and not isinstance(examples_entry, dict):
            raise SchemaIndexError(f"{root / MANIFEST_FILE} has a malformed 'examples' entry: {_REBUILD}")
        backend = manifest.get("encoder_backend", "torch")
        onnx_files = (ONNX_FILE,) if backend in ONNX_BACKENDS else ()
        for name in (INDEX_FILE, CORPUS_MAP_FILE, *(EXAMPLE_FILES if examples_entry is not None else ()), *onnx_files):
            path = root / name
            if not path.is_file():
                raise SchemaIndexError(f"index file {path} is missing: {_REBUILD}")
            if verify_checksums and _sha256(path) != manifest["files"].get(name):
                raise SchemaIndexError(f"index file {path} does not match its manifest checksum (corrupt or modified): {_REBUILD}")
        try:
            flat = faiss.read_index(str(root / INDEX_FILE))
        except RuntimeError as exc:
            raise SchemaIndexError(f"index file {root / INDEX_FILE} is not a readable FAISS index: {_REBUILD}") from exc
        snippets, domains = _read_corpus_map(root / CORPUS_MAP_FILE)
        count, dim = manifest["count"], manifest["dim"]
        if flat.ntotal != count or len(snippets) != count or len(domains) != count:
            raise SchemaIndexError(
                f"index in {root} holds {flat.ntotal} vectors and {len(snippets)} snippets but its manifest says {count}: {_REBUILD}"
            )
        if flat.d != dim:
            raise SchemaIndexError(f"index file in {root} has dim {flat.d} but its manifest says {dim}: {_REBUILD}")
        if expected_dim is not None and int(expected_dim) != dim:
            raise SchemaIndexError(f"index dim {dim} does not match encoder dim {expected_dim}: {_REBUILD}")
        spec = _manifest_spec(root, manifest)
        if index_type_of(flat) != spec.index_type:
            raise SchemaIndexError(
                f"index file in {root} is a {type(flat).__name__} but its manifest says type {spec.index_type!r}: {_REBUILD}"
            )
        apply_search_params(flat, spec)
        try:  # written before hybrid search existed: cosine only, as it was evaluated and gated
            lexical_weight = check_lexical_weight(manifest.get("lexical_weight", 0.0))
        except ConfigError as exc:
            raise SchemaIndexError(f"{root / MANIFEST_FILE} has a bad lexical_weight ({exc}): {_REBUILD}") from None
        index = cls(flat, snippets, domains, manifest["encoder"], manifest.get("encoder_fingerprint"),
                    manifest.get("created_at"), manifest.get("source"), spec=spec, lexical_weight=lexical_weight)
        if examples_entry is not None:
            index.examples = ExampleIndex.read(root, examples_entry)
        if onnx_files:
            index.encoder_backend, index.encoder_onnx, index.onnx_path = backend, manifest.get("encoder_onnx"), root / ONNX_FILE
        log.info("index loaded dir=%s count=%d dim=%d encoder=%s", root, count, dim, index.encoder_name)
        return index


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of the index in ``directory``, or None when there is no readable one (no error).

    For a cheap "is this index up to date?" check before any model is loaded.

    Example:
        >>> (read_manifest("out/index") or {}).get("source", {}).get("schema_fingerprint")  # doctest: +SKIP
        '3f1c...'
    """
    try:
        return _read_manifest(Path(directory).expanduser())
    except SchemaIndexError:
        return None


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise SchemaIndexError(f"{root} has no {MANIFEST_FILE} (not an index, or its build was interrupted): {_REBUILD}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaIndexError(f"{path} is not valid JSON: {_REBUILD}") from exc
    required = ("format_version", "encoder", "dim", "count", "metric", "files")
    missing = [key for key in required if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise SchemaIndexError(f"{path} lacks {', '.join(missing)}: {_REBUILD}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise SchemaIndexError(
            f"{path} has format version {manifest['format_version']!r}, this CodeRAG reads {FORMAT_VERSION}: {_REBUILD}"
        )
    if manifest["metric"] != "cosine":
        raise SchemaIndexError(f"{path} declares metric {manifest['metric']!r}, only 'cosine' is supported: {_REBUILD}")
    if not isinstance(manifest["files"], dict) or not all(isinstance(v, str) for v in manifest["files"].values()):
        raise SchemaIndexError(f"{path} has a malformed 'files' entry: {_REBUILD}")
    if manifest.get("encoder_backend", "torch") not in ENCODER_BACKENDS:
        raise SchemaIndexError(f"{path} names encoder backend {manifest['encoder_backend']!r}, this CodeRAG knows "
                               f"{', '.join(ENCODER_BACKENDS)}: {_REBUILD}")
    for key in ("dim", "count"):
        if isinstance(manifest[key], bool) or not isinstance(manifest[key], int) or manifest[key] < 1:
            raise SchemaIndexError(f"{path} has an invalid {key} {manifest[key]!r}: {_REBUILD}")
    return manifest


def _manifest_spec(root: Path, manifest: dict[str, Any]) -> IndexSpec:
    params = manifest.get("index_params", {})
    if not isinstance(params, dict):
        raise SchemaIndexError(f"{root / MANIFEST_FILE} has a malformed 'index_params' entry: {_REBUILD}")
    try:
        return IndexSpec.from_manifest(manifest)
    except (ConfigError, TypeError) as exc:
        raise SchemaIndexError(f"{root / MANIFEST_FILE} describes an index this CodeRAG cannot read ({exc}): {_REBUILD}") from exc


def _read_corpus_map(path: Path) -> tuple[list[str], list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaIndexError(f"{path} is not valid JSON: {_REBUILD}") from exc
    snippets = data.get("snippets") if isinstance(data, dict) else None
    domains = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(snippets, list) or not isinstance(domains, list) or not all(isinstance(s, str) for s in snippets + domains):
        raise SchemaIndexError(f"{path} must hold lists of strings 'snippets' and 'domains': {_REBUILD}")
    return snippets, domains

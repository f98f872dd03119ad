"""Exact search of a flat index as one matrix product per batch of queries, over FAISS's own vectors.

``IndexFlatIP.search`` scans every stored vector once per query (and its BLAS path only starts at large
batches), so on a CPU a batch of 8 queries over 100k vectors costs about 8 scans. One GEMM
``scores = X @ Q.T`` reads the vectors once for the whole batch and runs at matrix-multiply speed; a
top-k over the score matrix then gives exactly FAISS's results (same float32 inner products, to rounding).

The vectors are never copied: :func:`flat_vectors` is a numpy view of the ``IndexFlat``'s own storage, and
torch wraps that view without a copy. FAISS stays the storage and file format; IVF and HNSW indexes keep
FAISS's search.

Which path a search takes (``flat_search``):

=========  ==================================================================================
``auto``   ``gemm`` for a flat index of at least :data:`GEMM_MIN_VECTORS` vectors when a batch holds
           at least :data:`GEMM_MIN_QUERIES` queries, ``faiss`` otherwise (and always for IVF / HNSW)
``faiss``  ``index.search`` of FAISS
``gemm``   :func:`gemm_search` (flat indexes only)
=========  ==================================================================================

Ties: FAISS orders equal scores by its heap, not by id. :func:`gemm_search` orders them by id (lowest
first), also at the k-th place, so its results are deterministic.
"""

from __future__ import annotations

import faiss
import numpy as np

from coderag.errors import ConfigError

FLAT_SEARCH_MODES = ("auto", "faiss", "gemm")
# Measured on the project's 2-core AVX2 box (dim 384, k 5, FAISS and GEMM interleaved, median; README "Exact
# flat search as one GEMM"). 100k vectors, 2 threads, quiet box: GEMM / FAISS 1.21 at 1 query, 1.26 at 2, 1.91
# at 4, 2.45 at 8, 3.82 at 64, so GEMM from 2 queries (batch 1, a matrix-vector product, stays with FAISS).
# Two earlier runs on the box shared with other jobs lost at 2-4 queries (0.63-0.85): oversubscribed threads.
# 10k vectors: about even at 2 (1 thread); 1k: FAISS wins up to 8 queries (GEMM's fixed cost, ~0.2 ms, is more
# than a whole scan), hence GEMM_MIN_VECTORS.
GEMM_MIN_QUERIES = 2
GEMM_MIN_VECTORS = 10_000


def check_flat_search(mode: str) -> str:
    """``mode`` if it is a known search path, else :class:`ConfigError`.

    Args:
        mode: ``auto``, ``faiss`` or ``gemm``.

    Returns:
        ``mode``.

    Raises:
        ConfigError: an unknown mode.

    Example:
        >>> check_flat_search("gemm")
        'gemm'
    """
    if mode not in FLAT_SEARCH_MODES:
        raise ConfigError(f"flat search must be one of {', '.join(FLAT_SEARCH_MODES)}, got {mode!r}")
    return mode


def uses_gemm(mode: str, index_type: str, n_queries: int, n_vectors: int) -> bool:
    """Whether a search of ``n_queries`` rows on an ``index_type`` index goes through :func:`gemm_search`.

    Args:
        mode: ``auto``, ``faiss`` or ``gemm``.
        index_type: ``flat``, ``ivf`` or ``hnsw``.
        n_queries: the batch size.
        n_vectors: the vectors in the index.

    Returns:
        True for ``gemm`` on a flat index, and for ``auto`` on a flat index of at least
        :data:`GEMM_MIN_VECTORS` vectors searched with at least :data:`GEMM_MIN_QUERIES` queries.

    Raises:
        ConfigError: an unknown mode, or ``gemm`` asked of an IVF / HNSW index (it has no flat vectors).

    Example:
        >>> uses_gemm("auto", "flat", 8, 100_000), uses_gemm("auto", "flat", 1, 100_000)
        (True, False)
        >>> uses_gemm("auto", "flat", 8, 500), uses_gemm("auto", "hnsw", 64, 100_000)
        (False, False)
    """
    check_flat_search(mode)
    if index_type != "flat":
        if mode == "gemm":
            raise ConfigError(f"flat search 'gemm' needs a flat index, this one is {index_type}: "
                              "set flat_search to auto or faiss")
        return False
    return mode == "gemm" or (mode == "auto" and n_queries >= GEMM_MIN_QUERIES and n_vectors >= GEMM_MIN_VECTORS)


def flat_vectors(index: faiss.IndexFlat) -> np.ndarray:
    """The vectors an ``IndexFlat`` stores, as a float32 numpy view of FAISS's memory (no copy).

    The view is valid while ``index`` lives and is not added to (FAISS may then move its storage): take a
    fresh one per search, it costs nothing. Writing to it writes to the index: only read it.

    Args:
        index: a FAISS ``IndexFlat`` (``IndexFlatIP``).

    Returns:
        Array of shape (ntotal, d).

    Raises:
        ConfigError: ``index`` is not a flat index.

    Example:
        >>> flat = faiss.IndexFlatIP(2); flat.add(np.eye(2, dtype=np.float32))
        >>> flat_vectors(flat).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if not isinstance(index, faiss.IndexFlat):
        raise ConfigError(f"{type(index).__name__} is not a flat index: only IndexFlat stores plain vectors")
    n, d = int(index.ntotal), int(index.d)
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)  # (ntotal, d), FAISS's memory


def gemm_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of each query row over ``vectors``, by one matrix product.

    Computes ``scores = vectors @ queries.T`` in float32 with torch (its intra-op threads, set by
    ``torch.set_num_threads``), then a top-k per query. Equal scores are ordered by id, lowest first,
    including at the k-th place. ``k`` is clipped to the number of vectors.

    Args:
        vectors: float32 array of shape (n, d), e.g. :func:`flat_vectors`.
        queries: float32 array of shape (n_queries, d).
        k: results per query (positive).

    Returns:
        ``(scores, ids)``: float32 and int64 arrays of shape (n_queries, min(k, n)), best first, as
        ``faiss.IndexFlatIP.search`` returns them.

    Raises:
        ConfigError: ``k`` is not positive, or the dimensions differ.

    Example:
        >>> gemm_search(np.eye(3, dtype=np.float32), np.array([[0.0, 1.0, 0.5]], np.float32), 2)[1].tolist()
        [[1, 2]]
    """
    import torch

    if k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if vectors.ndim != 2 or queries.ndim != 2 or vectors.shape[1] != queries.shape[1]:
        raise ConfigError(f"query vectors of shape {queries.shape} cannot be searched in vectors of shape "
                          f"{vectors.shape}: the dimensions must match")
    n, b = vectors.shape[0], queries.shape[0]
    k = min(int(k), n)
    if b == 0 or k == 0:
        return np.zeros((b, k), dtype=np.float32), np.zeros((b, k), dtype=np.int64)
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))  # (n, d), shares memory
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))  # (b, d)
    with torch.inference_mode():
        # X @ Q.T with X row-major is MKL's fast case for a few queries (Q @ X.T is ~2x slower at batch 4-16).
        scores = torch.mm(x, q.t()).t()  # (b, n) view of the (n, b) product
        top_scores, top_ids = torch.topk(scores, k, dim=1, largest=True, sorted=True)  # (b, k)
        # A row whose k-th score is shared by vectors outside the top-k: topk picked arbitrary ones.
        kth = top_scores[:, -1:]
        crowded = ((scores >= kth).sum(dim=1) > k).nonzero().flatten().tolist()
        top_scores, top_ids = top_scores.numpy().copy(), top_ids.numpy().copy()
        for row in crowded:
            candidates = (scores[row] >= kth[row]).nonzero().flatten()  # ascending ids
            values = scores[row].index_select(0, candidates).numpy()
            keep = np.argsort(-values, kind="stable")[:k]  # equal values keep their id order
            top_ids[row], top_scores[row] = candidates.numpy()[keep], values[keep]
    # Equal scores inside the top-k: lowest id first (lexsort's last key is the primary one).
    order = np.lexsort((top_ids, -top_scores), axis=-1)
    return np.take_along_axis(top_scores, order, 1), np.take_along_axis(top_ids, order, 1).astype(np.int64)

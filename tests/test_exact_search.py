"""The flat index's GEMM search: the same ids and scores as FAISS's IndexFlatIP (real FAISS, real vectors)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from expected import brute_force_top_k

import coderag.retrieval.index as index_module
from coderag.errors import ConfigError
from coderag.retrieval.ann import IndexSpec
from coderag.retrieval.exact_search import GEMM_MIN_QUERIES, GEMM_MIN_VECTORS, flat_vectors, gemm_search, uses_gemm
from coderag.retrieval.index import SchemaIndex


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _index(vectors: np.ndarray, spec: IndexSpec | None = None) -> SchemaIndex:
    return SchemaIndex.from_vectors(vectors, [f"CREATE TABLE t{i} (x INT);" for i in range(len(vectors))], spec=spec)


def _half_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows with four entries of +-1/2: every inner product is an exact multiple of 1/4, so many tie."""
    rng = np.random.default_rng(seed)
    vectors = np.zeros((rows, dim), np.float32)
    for row in vectors:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return vectors


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("k", [1, 10])
def test_gemm_gives_faiss_ids_and_scores_on_real_vectors(built_schema_index, encoder_model, batch, k):
    from coderag.retrieval.encoder import encode

    questions = [f"How many rows of table number {i} are there per region?" for i in range(batch)]
    queries = encode(encoder_model, questions)
    expected_scores, expected_ids = brute_force_top_k(flat_vectors(built_schema_index.faiss_index), queries, k)
    faiss_scores, faiss_ids = built_schema_index.faiss_index.search(queries, k)
    scores, ids = gemm_search(flat_vectors(built_schema_index.faiss_index), queries, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (batch, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(ids, faiss_ids)
    np.testing.assert_allclose(scores, faiss_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 64])
def test_schema_index_gemm_path_equals_its_faiss_path_on_random_unit_vectors(batch):
    index = _index(_unit(3000, 64, seed=3))
    queries = _unit(batch, 64, seed=4)
    index.use_flat_search("faiss")
    faiss_scores, faiss_ids = index.search(queries, 10)
    index.use_flat_search("gemm")
    scores, ids = index.search(queries, 10)
    _, expected_ids = brute_force_top_k(_unit(3000, 64, seed=3), queries, 10)
    np.testing.assert_array_equal(ids, faiss_ids)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, faiss_scores, rtol=0, atol=1e-6)


def test_k_larger_than_the_index_is_clipped_like_faiss():
    index = _index(_unit(5, 16, seed=5))
    queries = _unit(GEMM_MIN_QUERIES, 16, seed=6)
    index.use_flat_search("faiss")
    faiss_scores, faiss_ids = index.search(queries, 50)
    index.use_flat_search("gemm")
    scores, ids = index.search(queries, 50)
    assert ids.shape == (GEMM_MIN_QUERIES, 5)
    assert [sorted(row) for row in ids.tolist()] == [[0, 1, 2, 3, 4]] * GEMM_MIN_QUERIES
    np.testing.assert_array_equal(ids, faiss_ids)
    np.testing.assert_allclose(scores, faiss_scores, rtol=0, atol=1e-6)
    assert gemm_search(flat_vectors(index.faiss_index), queries, 50)[1].shape == (GEMM_MIN_QUERIES, 5)


@pytest.mark.parametrize("batch", [1, 64])
def test_ties_go_to_the_lowest_id_and_scores_equal_faiss(batch):
    vectors = _half_vectors(400, 16, seed=7)
    queries = vectors[np.random.default_rng(8).choice(400, batch)]
    expected_scores, expected_ids = brute_force_top_k(vectors, queries, 10)
    faiss_scores, faiss_ids = _index(vectors).faiss_index.search(queries, 10)
    scores, ids = gemm_search(vectors, queries, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))
    np.testing.assert_array_equal(scores, faiss_scores)  # exact: multiples of 1/4
    # FAISS orders equal scores by its heap, so only the scores are compared with it here.


def test_a_tie_at_the_kth_place_keeps_the_lowest_ids():
    vectors = np.tile(np.eye(1, 8, dtype=np.float32), (50, 1))  # 50 identical rows
    vectors[[7, 31]] = np.eye(1, 8, 1, dtype=np.float32)  # two others score 0
    scores, ids = gemm_search(vectors, np.eye(1, 8, dtype=np.float32).repeat(GEMM_MIN_QUERIES, 0), 3)
    assert ids.tolist() == [[0, 1, 2]] * GEMM_MIN_QUERIES and scores.tolist() == [[1.0, 1.0, 1.0]] * GEMM_MIN_QUERIES
    scores, ids = gemm_search(vectors, np.eye(1, 8, 1, dtype=np.float32), 4)
    assert ids.tolist() == [[7, 31, 0, 1]] and scores.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_flat_vectors_is_a_view_of_faiss_memory_not_a_copy():
    vectors = _unit(100, 8, seed=9)
    flat = faiss.IndexFlatIP(8)
    flat.add(vectors)
    view = flat_vectors(flat)
    assert view.shape == (100, 8) and not view.flags.owndata
    np.testing.assert_array_equal(view, vectors)
    assert np.shares_memory(view, flat_vectors(flat))
    with pytest.raises(ConfigError, match="IndexHNSWFlat is not a flat index"):
        flat_vectors(faiss.IndexHNSWFlat(8, 16, faiss.METRIC_INNER_PRODUCT))


def test_auto_searches_large_flat_batches_by_gemm_and_the_rest_by_faiss(monkeypatch):
    calls = []

    def counting(vectors, queries, k):
        calls.append(len(queries))
        return gemm_search(vectors, queries, k)

    monkeypatch.setattr(index_module, "gemm_search", counting)
    index = _index(_unit(GEMM_MIN_VECTORS, 16, seed=10))
    assert index.flat_search == "auto"
    index.search(_unit(1, 16, seed=11), 3)
    index.search(_unit(GEMM_MIN_QUERIES - 1, 16, seed=12), 3)
    index.search(_unit(GEMM_MIN_QUERIES, 16, seed=13), 3)
    index.search(_unit(64, 16, seed=14), 3)
    assert calls == [GEMM_MIN_QUERIES, 64]
    index.use_flat_search("gemm")
    index.search(_unit(1, 16, seed=15), 3)
    index.use_flat_search("faiss")
    index.search(_unit(64, 16, seed=16), 3)
    assert calls == [GEMM_MIN_QUERIES, 64, 1]
    small = _index(_unit(GEMM_MIN_VECTORS - 1, 16, seed=17))
    small.search(_unit(64, 16, seed=18), 3)
    assert calls == [GEMM_MIN_QUERIES, 64, 1]


def test_hnsw_keeps_faiss_search_and_refuses_gemm(monkeypatch):
    monkeypatch.setattr(index_module, "gemm_search", lambda *a: pytest.fail("gemm used on an HNSW index"))
    vectors = _unit(300, 16, seed=17)
    index = _index(vectors, spec=IndexSpec("hnsw", ef_search=300))
    scores, ids = index.search(vectors[:64], 1)
    assert ids[:, 0].tolist() == list(range(64))
    with pytest.raises(ConfigError, match="flat search 'gemm' needs a flat index, this one is hnsw"):
        index.use_flat_search("gemm")
    with pytest.raises(ConfigError, match="flat search must be one of auto, faiss, gemm"):
        index.use_flat_search("blas")
    assert uses_gemm("auto", "ivf", 64, 10 * GEMM_MIN_VECTORS) is False


def test_gemm_refuses_queries_of_another_dimension():
    with pytest.raises(ConfigError, match=r"query vectors of shape \(2, 3\) cannot be searched in vectors of shape"):
        gemm_search(np.eye(4, dtype=np.float32), np.ones((2, 3), np.float32), 1)

"""Hybrid schema retrieval: BM25 over identifiers (coderag.retrieval.lexical) fused into SchemaIndex searches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.ann import IndexSpec
from coderag.retrieval.index import SchemaIndex
from coderag.retrieval.lexical import (
    DEFAULT_LEXICAL_WEIGHT,
    LexicalIndex,
    check_lexical_weight,
    identifier_words,
)

SIBLINGS = [
    "CREATE TABLE singer (Singer_ID INT PRIMARY KEY, Name TEXT, Country TEXT, Age INT);",
    "CREATE TABLE singer (Singer_ID INT PRIMARY KEY, Name TEXT, Birth_Year INT, Net_Worth_Millions REAL);",
    "CREATE TABLE stadium (Stadium_ID INT PRIMARY KEY, Location TEXT, Capacity INT);",
]


def test_identifier_words_split_identifiers_fold_plurals_and_drop_sql_words():
    assert identifier_words("CREATE TABLE orderItems (order_id INTEGER PRIMARY KEY, unitPrice REAL);") == [
        "order", "item", "order", "id", "unit", "price"]
    assert identifier_words("Which countries have the most cities?") == ["country", "most", "city"]
    assert identifier_words("   ") == [] and identifier_words("a to of") == []


def test_bm25_prefers_the_sibling_that_has_the_named_column():
    lex = LexicalIndex(SIBLINGS)
    scores = lex.scores(["What is the average age of singers from France?", "net worth of each singer",
                         "zzz unknown words"])
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    assert scores[0].argmax() == 0 and scores[0, 0] == 1.0 and scores[0, 1] < 1.0
    assert scores[1].argmax() == 1
    assert scores[2].tolist() == [0.0, 0.0, 0.0]  # no word of the question in any snippet
    assert ((scores >= 0) & (scores <= 1)).all()


def test_bm25_rare_words_weigh_more_than_common_ones():
    lex = LexicalIndex(["CREATE TABLE t (name TEXT, capacity INT);", "CREATE TABLE u (name TEXT);",
                        "CREATE TABLE v (name TEXT);"])
    row = lex.scores(["name capacity"])[0]
    assert row[0] == 1.0 and 0 < row[1] < 0.5  # "name" is everywhere, "capacity" only in t


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "0.3", True, None])
def test_check_lexical_weight_refuses_what_is_not_a_weight(bad):
    with pytest.raises(ConfigError, match="lexical weight"):
        check_lexical_weight(bad)


def _index(spec: IndexSpec | None = None, weight: float = 0.5, n: int = 3) -> SchemaIndex:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    snippets = [SIBLINGS[i % 3].replace("TABLE ", f"TABLE t{i}_") for i in range(n)]
    return SchemaIndex.from_vectors(vectors, snippets, [f"d{i}" for i in range(n)], spec=spec,
                                    lexical_weight=weight)


def test_search_questions_ranks_by_cosine_plus_weighted_bm25_and_returns_its_parts():
    index = _index(weight=0.5)
    question = ["average age of singers by country"]
    query = np.ascontiguousarray(index.faiss_index.reconstruct(1)[None, :])  # cosine alone ranks snippet 1 first
    cosine, lexical, ids = index.search_questions(query, question, k=3)
    vectors = np.stack([index.faiss_index.reconstruct(i) for i in range(3)])
    expected_cos = vectors @ query[0]
    expected_lex = index.lexical.scores(question)[0]
    fused = expected_cos + 0.5 * expected_lex
    assert ids[0].tolist() == np.argsort(-fused).tolist()
    assert cosine[0].tolist() == pytest.approx(expected_cos[ids[0]].tolist(), abs=1e-6)
    assert lexical[0].tolist() == pytest.approx(expected_lex[ids[0]].tolist(), abs=1e-6)
    index.use_lexical_weight(0.0)
    cosine0, lexical0, ids0 = index.search_questions(query, question, k=3)
    assert ids0[0, 0] == 1 and lexical0.tolist() == [[0.0, 0.0, 0.0]]
    assert (ids0 == index.search(query, 3)[1]).all()


@pytest.mark.parametrize("spec", [IndexSpec("flat"), IndexSpec("ivf", nlist=2, nprobe=2), IndexSpec("hnsw")])
def test_hybrid_candidates_beyond_the_dense_depth_get_their_exact_cosine(spec, monkeypatch):
    import coderag.retrieval.index as index_module

    monkeypatch.setattr(index_module, "HYBRID_DEPTH", 4)  # 4 by cosine + 4 by BM25 out of 120 snippets
    index = _index(spec, weight=1.0, n=120)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(2, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    questions = ["net worth and birth year of singers", "stadium capacity by location"]
    cosine, lexical, ids = index.search_questions(queries, questions, k=6)
    vectors = np.stack([index.faiss_index.reconstruct(i) for i in range(120)]) if spec.index_type != "ivf" else None
    if vectors is not None:
        for row in range(2):
            assert cosine[row].tolist() == pytest.approx((vectors[ids[row]] @ queries[row]).tolist(), abs=1e-5)
    fused = cosine + lexical
    assert (np.diff(fused, axis=1) <= 1e-6).all() and (ids >= 0).all()
    assert (lexical[:, 0] > 0).all()  # BM25's best candidates made it in although cosine did not pick them


def test_search_questions_refuses_rows_and_questions_that_disagree():
    index = _index()
    with pytest.raises(ConfigError, match="one vector row per question"):
        index.search_questions(np.zeros((2, 8), np.float32), ["one question"], k=1)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        index.search_questions(np.zeros((1, 8), np.float32), ["q"], k=0)


def test_the_weight_travels_in_the_manifest_and_old_indexes_load_as_cosine_only(tmp_path):
    index = _index(weight=0.25)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["lexical_weight"] == 0.25
    assert SchemaIndex.load(tmp_path / "idx").lexical_weight == 0.25
    assert SchemaIndex.from_vectors(np.eye(2), ["CREATE TABLE a (x INT);", "CREATE TABLE b (y INT);"]).lexical_weight \
        == DEFAULT_LEXICAL_WEIGHT
    del manifest["lexical_weight"]  # an index written before hybrid search: evaluated and gated on cosine
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    assert SchemaIndex.load(tmp_path / "idx").lexical_weight == 0.0
    manifest["lexical_weight"] = 7
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaIndexError, match="bad lexical_weight") as info:
        SchemaIndex.load(tmp_path / "idx")
    assert "rebuild the index" in str(info.value)


def test_index_build_cli_records_the_weight_and_refuses_one_out_of_range(tmp_path, capsys):
    from coderag.cli import main

    out = tmp_path / "idx"
    assert main(["index", "build", "--n-records", "20", "--out", str(out), "--lexical-weight", "0.1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["lexical_weight"] == 0.1
    capsys.readouterr()
    assert main(["index", "build", "--n-records", "20", "--out", str(tmp_path / "other"), "--lexical-weight", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert "lexical_weight" in err and "less than or equal to 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_retrieval_evaluator_reports_the_hybrid_ranking_and_the_encoder_alone(encoder_model):
    from expected import brute_force_retrieval

    from coderag.corpus import load_corpus
    from coderag.evaluation.ranking import RetrievalEvaluator
    from coderag.training.heldout import split_by_domain

    train, held_out = split_by_domain(load_corpus("builtin", limit=120, seed=0), 0.25, 0)
    evaluator = RetrievalEvaluator(held_out, train)
    scores = evaluator(encoder_model)
    args = (encoder_model, evaluator.snippets, evaluator.queries, evaluator.gold)
    hybrid, cosine = brute_force_retrieval(*args, DEFAULT_LEXICAL_WEIGHT), brute_force_retrieval(*args)
    assert scores["recall@1"] == pytest.approx(hybrid["recall@1"], abs=1e-3)
    assert scores["mrr@10"] == pytest.approx(hybrid["mrr@10"], abs=1e-3)
    assert scores["cosine_recall@1"] == pytest.approx(cosine["recall@1"], abs=1e-3)
    assert scores["cosine_mrr@10"] == pytest.approx(cosine["mrr@10"], abs=1e-3)

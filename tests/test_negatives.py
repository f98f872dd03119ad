"""Hard-negative mining: TopK-PercPos with the real encoder, via sentence-transformers' miner."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from datasets import Dataset

from coderag.errors import ConfigError
from coderag.retrieval.encoder import encode
from coderag.training.negatives import mine_hard_negatives, mine_hard_negatives_report
from coderag.training.synthesis import synthesize_pairs
from coderag.training.synthesis_filter import normalize_text


@pytest.fixture()
def schema_pairs(training_records, tmp_path) -> Dataset:
    synthesize_pairs(training_records, tmp_path / "pairs", show_progress=False)
    pairs = Dataset.load_from_disk(str(tmp_path / "pairs"))
    return pairs.filter(lambda r: r["task"].endswith("->schema"))


def _twin_corpus(pairs: Dataset) -> list[str]:
    """The positives, a copy of each identical after normalization (case, whitespace), and two decoys."""
    positives = list(dict.fromkeys(pairs["positive"]))
    twins = ["  " + p.upper().replace(" ", "   ") + "\n" for p in positives]
    decoys = ["CREATE TABLE misc (id INTEGER, note TEXT);", "CREATE TABLE log (ts TEXT, level TEXT, msg TEXT);"]
    return positives + twins + decoys


def _reference_miner(pairs: Dataset, corpus_texts, model, *, n_negatives: int, top_k: int, perc_pos: float):
    """The hand-written TopK-PercPos miner this module used before it called sentence-transformers.

    Per row: FAISS search of the ``top_k`` nearest corpus texts (the positive included); skip texts
    identical to the positive after normalization and texts scoring >= perc_pos * positive score; keep
    the first ``n_negatives`` survivors, or drop the row.
    """
    anchors, positives = list(pairs["anchor"]), list(pairs["positive"])
    corpus = list(dict.fromkeys(t for t in (corpus_texts or dict.fromkeys(positives)) if str(t).strip()))
    corpus_vecs = encode(model, corpus)
    anchor_vecs = encode(model, anchors)
    pos_scores = (anchor_vecs * encode(model, positives)).sum(1)
    index = faiss.IndexFlatIP(corpus_vecs.shape[1])
    index.add(corpus_vecs)
    scores, ids = index.search(anchor_vecs, min(top_k, len(corpus)))
    keep_rows, negatives = [], []
    for row, (positive, pos_score) in enumerate(zip(positives, pos_scores)):
        chosen = [corpus[c] for s, c in zip(scores[row], ids[row])
                  if c >= 0 and normalize_text(corpus[c]) != normalize_text(positive) and s < perc_pos * pos_score]
        if len(chosen) >= n_negatives:
            keep_rows.append(row)
            negatives.append(chosen[:n_negatives])
    mined = pairs.select(keep_rows)
    for j in range(n_negatives):
        mined = mined.add_column(f"negative_{j + 1}", [negs[j] for negs in negatives])
    return mined


@pytest.mark.parametrize(
    ("corpus", "top_k", "perc_pos"),
    [("positives", 12, 0.95), ("twins", 12, 0.95), ("twins", 12, 1.0), ("positives", 6, 0.2)],
    ids=["default", "twins", "twins-perc1", "drops-rows"],
)
def test_library_miner_gives_the_reference_topk_percpos_negatives(schema_pairs, encoder_model, corpus, top_k,
                                                                   perc_pos):
    corpus_texts = _twin_corpus(schema_pairs) if corpus == "twins" else None
    mined, report = mine_hard_negatives_report(schema_pairs, corpus_texts, encoder_model, n_negatives=3,
                                               top_k=top_k, perc_pos=perc_pos, show_progress=False)
    expected = _reference_miner(schema_pairs, corpus_texts, encoder_model, n_negatives=3, top_k=top_k,
                                perc_pos=perc_pos)
    # Same rows kept (all input columns, input order) with the same negative_1..3, hardest first.
    assert mined.column_names == expected.column_names
    assert mined.to_list() == expected.to_list()
    assert report["pairs_out"] == len(expected) and report["pairs_in"] == len(schema_pairs)
    if corpus == "positives" and perc_pos < 0.5:
        assert 0 < len(expected) < len(schema_pairs)  # the drop path is exercised too


@pytest.mark.parametrize("perc_pos", [0.95, 1.0])
def test_miner_never_returns_the_positive_or_an_identical_text(schema_pairs, encoder_model, perc_pos):
    mined, report = mine_hard_negatives_report(schema_pairs, _twin_corpus(schema_pairs), encoder_model,
                                               n_negatives=3, top_k=12, perc_pos=perc_pos, show_progress=False)
    assert report["pairs_in"] == len(schema_pairs) == report["pairs_out"] + report["dropped_lacking_negatives"]
    assert len(mined) > 0 and {"negative_1", "negative_2", "negative_3"} <= set(mined.column_names)
    for row in mined:
        negatives = [row[f"negative_{j}"] for j in (1, 2, 3)]
        assert len(set(negatives)) == 3
        assert row["positive"] not in negatives
        assert all(normalize_text(n) != normalize_text(row["positive"]) for n in negatives)
    # TopK-PercPos: every kept negative scores at most perc_pos times its positive.
    anchors = encode(encoder_model, mined["anchor"])
    pos = (anchors * encode(encoder_model, mined["positive"])).sum(1)
    for j in (1, 2, 3):
        neg = (anchors * encode(encoder_model, mined[f"negative_{j}"])).sum(1)
        assert np.all(neg <= perc_pos * pos + 1e-5)


def test_every_positive_of_a_repeated_anchor_is_excluded_for_all_its_rows(schema_pairs, encoder_model):
    rows = schema_pairs.select(range(0, len(schema_pairs), 6)).to_list()
    schemas = list(dict.fromkeys(schema_pairs["positive"]))
    # Each anchor also gets a second positive (the next schema): neither may be a negative of either row.
    twice = rows + [{**r, "positive": schemas[(schemas.index(r["positive"]) + 1) % len(schemas)]} for r in rows]
    pairs = Dataset.from_list(twice)
    mined, report = mine_hard_negatives_report(pairs, None, encoder_model, n_negatives=2, top_k=6, perc_pos=1.0,
                                               show_progress=False)
    positives_of = {}
    for r in twice:
        positives_of.setdefault(r["anchor"], set()).add(r["positive"])
    assert len(mined) > 0
    for row in mined:
        assert not positives_of[row["anchor"]] & {row["negative_1"], row["negative_2"]}


def test_rows_without_enough_negatives_are_dropped_and_counted(schema_pairs, encoder_model):
    strict = mine_hard_negatives(schema_pairs, None, encoder_model, n_negatives=3, top_k=6, perc_pos=0.2,
                                 show_progress=False)
    _, report = mine_hard_negatives_report(schema_pairs, None, encoder_model, n_negatives=3, top_k=6,
                                           perc_pos=0.2, show_progress=False)
    assert len(strict) == report["pairs_out"] < len(schema_pairs)
    assert report["dropped_lacking_negatives"] > 0
    assert set(report) >= {"pairs_in", "pairs_out", "dropped_lacking_negatives", "corpus_size", "n_negatives",
                           "top_k", "perc_pos", "mean_positive_score"}
    anchors = encoder_model.encode(list(schema_pairs["anchor"]), normalize_embeddings=True)
    positives = encoder_model.encode(list(schema_pairs["positive"]), normalize_embeddings=True)
    assert report["mean_positive_score"] == pytest.approx(float((anchors * positives).sum(1).mean()), abs=2e-4)
    assert (report["pairs_in"], report["n_negatives"], report["top_k"], report["perc_pos"]) == (
        len(schema_pairs), 3, 6, 0.2)


def test_invalid_mining_settings_are_refused(schema_pairs, encoder_model):
    with pytest.raises(ConfigError):
        mine_hard_negatives(schema_pairs, None, encoder_model, n_negatives=5, top_k=3)
    with pytest.raises(ConfigError):
        mine_hard_negatives(schema_pairs, None, encoder_model, perc_pos=1.5)
    with pytest.raises(ConfigError, match="at least"):
        mine_hard_negatives(schema_pairs, ["CREATE TABLE a (x INTEGER);"], encoder_model)

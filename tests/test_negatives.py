"""Hard-negative mining: TopK-PercPos with the real encoder and FAISS."""

from __future__ import annotations

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


def test_miner_never_returns_the_positive_or_an_identical_text(schema_pairs, encoder_model):
    positives = list(dict.fromkeys(schema_pairs["positive"]))
    # Identical after normalization (case, whitespace): must never come back as a negative.
    twins = ["  " + p.upper().replace(" ", "   ") + "\n" for p in positives]
    decoys = ["CREATE TABLE misc (id INTEGER, note TEXT);", "CREATE TABLE log (ts TEXT, level TEXT, msg TEXT);"]
    corpus = positives + twins + decoys
    mined, report = mine_hard_negatives_report(schema_pairs, corpus, encoder_model, n_negatives=3, top_k=12,
                                               perc_pos=0.95, show_progress=False)
    assert report["pairs_in"] == len(schema_pairs) == report["pairs_out"] + report["dropped_lacking_negatives"]
    assert report["positive_or_identical_skipped"] >= 2 * report["pairs_out"]
    assert len(mined) > 0 and {"negative_1", "negative_2", "negative_3"} <= set(mined.column_names)
    for row in mined:
        negatives = [row[f"negative_{j}"] for j in (1, 2, 3)]
        assert len(set(negatives)) == 3
        assert all(normalize_text(n) != normalize_text(row["positive"]) for n in negatives)
    # TopK-PercPos: every kept negative scores below 95% of its positive.
    anchors = encode(encoder_model, mined["anchor"])
    pos = encode(encoder_model, mined["positive"])
    neg = encode(encoder_model, mined["negative_1"])
    assert np.all((anchors * neg).sum(1) < 0.95 * (anchors * pos).sum(1) + 1e-5)


def test_rows_without_enough_negatives_are_dropped_and_counted(schema_pairs, encoder_model):
    strict = mine_hard_negatives(schema_pairs, None, encoder_model, n_negatives=3, top_k=6, perc_pos=0.2,
                                 show_progress=False)
    _, report = mine_hard_negatives_report(schema_pairs, None, encoder_model, n_negatives=3, top_k=6,
                                           perc_pos=0.2, show_progress=False)
    assert len(strict) == report["pairs_out"] < len(schema_pairs)
    assert report["dropped_lacking_negatives"] > 0


def test_invalid_mining_settings_are_refused(schema_pairs, encoder_model):
    with pytest.raises(ConfigError):
        mine_hard_negatives(schema_pairs, None, encoder_model, n_negatives=5, top_k=3)
    with pytest.raises(ConfigError):
        mine_hard_negatives(schema_pairs, None, encoder_model, perc_pos=1.5)
    with pytest.raises(ConfigError, match="at least"):
        mine_hard_negatives(schema_pairs, ["CREATE TABLE a (x INTEGER);"], encoder_model)

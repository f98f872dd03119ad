"""Hard-negative mining with the base encoder and FAISS (TopK-PercPos).

For each (anchor, positive) pair the corpus is searched with the anchor; of the ``top_k`` nearest
texts, a candidate is kept only if it scores below ``perc_pos`` times the anchor-positive score (as
NV-Retriever and CodeR do, so near-duplicates and likely false negatives are skipped) and is neither
the positive nor a text identical to it after normalization. The hardest ``n_negatives`` survivors
become columns ``negative_1..n``.

Rows with fewer than ``n_negatives`` survivors are DROPPED (not padded): a padded copy would be a
duplicate text in the batch, which ``BatchSamplers.NO_DUPLICATES`` forbids and which teaches nothing.
The number dropped is in the report.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from coderag.errors import ConfigError
from coderag.training.synthesis_filter import normalize_text

log = logging.getLogger(__name__)


def _encode(model, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
    from coderag.retrieval.encoder import encode

    return encode(model, texts, batch_size=batch_size, show_progress=show_progress)


def mine_hard_negatives_report(
    pairs,
    corpus_texts: list[str] | None,
    encoder_model,
    *,
    n_negatives: int = 3,
    top_k: int = 30,
    perc_pos: float = 0.95,
    batch_size: int = 64,
    show_progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Mine negatives for ``pairs`` (a Dataset with anchor/positive) and return (dataset, report).

    ``corpus_texts`` defaults to the unique positives of ``pairs``. The returned dataset holds the
    input columns plus ``negative_1..n_negatives``, without rows that lacked enough negatives.
    """
    import faiss

    if n_negatives < 1 or top_k < n_negatives or not 0.0 < perc_pos <= 1.0:
        raise ConfigError(
            f"mining needs n_negatives >= 1, top_k >= n_negatives and 0 < perc_pos <= 1 "
            f"(got n_negatives={n_negatives}, top_k={top_k}, perc_pos={perc_pos})."
        )
    missing = [c for c in ("anchor", "positive") if c not in pairs.column_names]
    if missing:
        raise ConfigError(f"pairs dataset lacks column(s) {', '.join(missing)}: build it with `coderag synth`.")
    anchors, positives = list(pairs["anchor"]), list(pairs["positive"])
    if corpus_texts is None:
        corpus_texts = list(dict.fromkeys(positives))
    corpus = list(dict.fromkeys(t for t in corpus_texts if str(t).strip()))
    if len(corpus) <= n_negatives:
        raise ConfigError(f"the corpus holds {len(corpus)} texts: at least {n_negatives + 1} are needed.")
    corpus_keys = [normalize_text(t) for t in corpus]

    corpus_vecs = _encode(encoder_model, corpus, batch_size, show_progress)
    anchor_vecs = _encode(encoder_model, anchors, batch_size, show_progress)
    unique_pos = list(dict.fromkeys(positives))
    pos_vecs = _encode(encoder_model, unique_pos, batch_size, show_progress)
    pos_row = {t: i for i, t in enumerate(unique_pos)}
    pos_scores = np.einsum("ij,ij->i", anchor_vecs, pos_vecs[[pos_row[p] for p in positives]])

    index = faiss.IndexFlatIP(corpus_vecs.shape[1])
    index.add(np.ascontiguousarray(corpus_vecs, dtype=np.float32))
    k = min(top_k, len(corpus))
    scores, ids = index.search(np.ascontiguousarray(anchor_vecs, dtype=np.float32), k)

    negatives: list[list[str]] = []
    keep_rows: list[int] = []
    counts = {"positive_or_identical_skipped": 0, "above_perc_pos_skipped": 0}
    for row, (pos_text, pos_score) in enumerate(zip(positives, pos_scores)):
        pos_key = normalize_text(pos_text)
        threshold = perc_pos * float(pos_score)
        chosen: list[str] = []
        for score, cid in zip(scores[row], ids[row]):
            if cid < 0:
                continue
            if corpus_keys[cid] == pos_key:
                counts["positive_or_identical_skipped"] += 1
                continue
            if float(score) >= threshold:
                counts["above_perc_pos_skipped"] += 1
                continue
            if corpus[cid] in chosen:
                continue
            chosen.append(corpus[cid])  # FAISS returns best first: these are the hardest survivors
            if len(chosen) == n_negatives:
                break
        if len(chosen) == n_negatives:
            keep_rows.append(row)
            negatives.append(chosen)

    mined = pairs.select(keep_rows)
    for j in range(n_negatives):
        mined = mined.add_column(f"negative_{j + 1}", [negs[j] for negs in negatives])
    report = {
        "pairs_in": len(anchors),
        "pairs_out": len(keep_rows),
        "dropped_lacking_negatives": len(anchors) - len(keep_rows),
        "corpus_size": len(corpus),
        "n_negatives": n_negatives,
        "top_k": top_k,
        "perc_pos": perc_pos,
        **counts,
        "mean_positive_score": round(float(np.mean(pos_scores)), 4) if len(pos_scores) else 0.0,
    }
    log.info("hard negatives: %s", report)
    return mined, report


def mine_hard_negatives(
    pairs,
    corpus_texts: list[str] | None,
    encoder_model,
    *,
    n_negatives: int = 3,
    top_k: int = 30,
    perc_pos: float = 0.95,
    batch_size: int = 64,
    show_progress: bool = True,
):
    """Like :func:`mine_hard_negatives_report` but returns only the dataset (with negative_1..n)."""
    mined, _ = mine_hard_negatives_report(
        pairs, corpus_texts, encoder_model, n_negatives=n_negatives, top_k=top_k, perc_pos=perc_pos,
        batch_size=batch_size, show_progress=show_progress,
    )
    return mined

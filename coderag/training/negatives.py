"""Hard-negative mining with the base encoder and FAISS (TopK-PercPos), via sentence-transformers.

``sentence_transformers.util.mine_hard_negatives`` does the work: it embeds the anchors and the corpus,
searches the corpus with each anchor (FAISS), drops the anchor's positive(s) and keeps, of the ``top_k``
nearest remaining texts, those scoring at most ``perc_pos`` times the anchor-positive score
(``relative_margin = 1 - perc_pos``, as NV-Retriever and CodeR do, so near-duplicates and likely false
negatives are skipped), best first. Two thin steps stay here: a survivor identical to the positive after
:func:`~coderag.training.synthesis_filter.normalize_text` (case, whitespace) is skipped too, and the
hardest ``n_negatives`` survivors become columns ``negative_1..n`` of the input rows (all input columns
kept, input order kept).

Rows with fewer than ``n_negatives`` survivors are DROPPED (not padded): a padded copy would be a
duplicate text in the batch, which ``BatchSamplers.NO_DUPLICATES`` forbids and which teaches nothing.
The number dropped is in the report.

The library's semantics, which differ from a naive per-row miner in three places: the ``top_k`` window
counts candidates after the positive(s) are removed; every positive of an anchor that occurs in several
rows is excluded for all of them (and the margin uses the lowest of their scores); the positives are
always part of the searched corpus, also when ``corpus_texts`` is given.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from coderag.errors import ConfigError
from coderag.training.synthesis_filter import normalize_text

log = logging.getLogger(__name__)


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    from coderag.retrieval.encoder import encode

    return encode(model, texts, batch_size=batch_size, show_progress=False)


def _ranked_candidates(pairs, corpus: list[str], encoder_model, *, top_k: int, perc_pos: float, batch_size: int,
                       show_progress: bool) -> dict[tuple[str, str], tuple[float, list[str]]]:
    """(anchor, positive) -> (anchor-positive score, margin survivors among the top_k, best first)."""
    from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

    ranked = st_mine_hard_negatives(
        pairs.select_columns(["anchor", "positive"]),
        encoder_model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=corpus,
        range_max=top_k,
        relative_margin=1.0 - perc_pos,
        num_negatives=top_k,  # every survivor of the window: the twin filter below may still skip some
        sampling_strategy="top",
        output_format="labeled-list",  # keeps rows with fewer survivors; we drop them below, counted
        output_scores=True,
        batch_size=batch_size,
        use_faiss=True,
        verbose=show_progress,
    )
    return {(row["anchor"], row["positive"][0]): (row["scores"][0], row["positive"][1:]) for row in ranked}


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
    """Mine TopK-PercPos hard negatives for (anchor, positive) pairs.

    Args:
        pairs: a ``datasets.Dataset`` with ``anchor`` and ``positive`` columns (other columns are kept).
        corpus_texts: candidate negatives; None means the unique positives of ``pairs``. Blank texts and
            duplicates are dropped; the positives are always searched too.
        encoder_model: the ``SentenceTransformer`` that embeds anchors and corpus.
        n_negatives: negatives per row (columns ``negative_1..n_negatives``).
        top_k: how many nearest non-positive texts per anchor are candidates.
        perc_pos: a candidate must score at most ``perc_pos`` times the anchor-positive score.
        batch_size: encoding batch size.
        show_progress: print the library's mining statistics (its encoding bars always show).

    Returns:
        ``(dataset, report)``: the input rows that got ``n_negatives`` negatives, in input order, with
        ``negative_1..n`` added (hardest first); and a dict with ``pairs_in``, ``pairs_out``,
        ``dropped_lacking_negatives``, ``corpus_size`` (texts searched), ``n_negatives``, ``top_k``,
        ``perc_pos`` and ``mean_positive_score`` (over all input pairs).

    Raises:
        ConfigError: on invalid settings, missing columns or a corpus of at most ``n_negatives`` texts.

    Example:
        >>> mined, report = mine_hard_negatives_report(pairs, None, model, n_negatives=3)  # doctest: +SKIP
        >>> mined.column_names[-3:], report["pairs_out"] + report["dropped_lacking_negatives"] == len(pairs)  # doctest: +SKIP
        (['negative_1', 'negative_2', 'negative_3'], True)
    """
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

    ranked = _ranked_candidates(pairs, corpus, encoder_model, top_k=top_k, perc_pos=perc_pos,
                                batch_size=batch_size, show_progress=show_progress) if anchors else {}

    keys: dict[str, str] = {}
    keep_rows: list[int] = []
    negatives: list[list[str]] = []
    for row, key in enumerate(zip(anchors, positives)):
        _, candidates = ranked.get(key, (0.0, []))
        pos_key = normalize_text(key[1])
        chosen = [c for c in candidates if keys.setdefault(c, normalize_text(c)) != pos_key][:n_negatives]
        if len(chosen) == n_negatives:
            keep_rows.append(row)
            negatives.append(chosen)

    # The library scores every pair with at least one survivor; the rest are scored here.
    unscored = sorted({key for key in zip(anchors, positives) if key not in ranked})
    if unscored:
        a = _encode(encoder_model, [k[0] for k in unscored], batch_size)
        p = _encode(encoder_model, [k[1] for k in unscored], batch_size)
        ranked.update({k: (float(s), []) for k, s in zip(unscored, np.einsum("ij,ij->i", a, p))})
    pos_scores = [ranked[key][0] for key in zip(anchors, positives)]

    mined = pairs.select(keep_rows)
    for j in range(n_negatives):
        mined = mined.add_column(f"negative_{j + 1}", [negs[j] for negs in negatives])
    report = {
        "pairs_in": len(anchors),
        "pairs_out": len(keep_rows),
        "dropped_lacking_negatives": len(anchors) - len(keep_rows),
        "corpus_size": len(dict.fromkeys(corpus + positives)),
        "n_negatives": n_negatives,
        "top_k": top_k,
        "perc_pos": perc_pos,
        "mean_positive_score": round(float(np.mean(pos_scores)), 4) if pos_scores else 0.0,
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

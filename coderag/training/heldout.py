"""The held-out split: evaluation must see schemas the model never trained on, so whole domains are held out.

(Scoring the held-out side is :class:`coderag.evaluation.ranking.RetrievalEvaluator`.)
"""

from __future__ import annotations

import math
import random

from coderag.errors import ConfigError, CorpusError


def split_by_domain(records: list[dict], eval_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split ``records`` into (train, held-out) so that no domain appears in both.

    ``ceil(eval_fraction * n_domains)`` domains, drawn with ``seed``, go to the held-out side.

    Args:
        records: records with a ``domain`` key.
        eval_fraction: share of domains to hold out, strictly between 0 and 1 (at least one domain stays).
        seed: seed of the domain draw.

    Returns:
        ``(train, held_out)`` record lists.

    Raises:
        ConfigError: ``eval_fraction`` is not strictly between 0 and 1.
        CorpusError: the records span fewer than 2 domains.

    Example:
        >>> train, held_out = split_by_domain([{"domain": d} for d in "aabbcd"], eval_fraction=0.25)
        >>> len(train) + len(held_out), {r["domain"] for r in train} & {r["domain"] for r in held_out}
        (6, set())
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}.")
    domains = sorted({str(r["domain"]) for r in records})
    if len(domains) < 2:
        raise CorpusError(
            f"a held-out split by domain needs at least 2 domains, the corpus has {len(domains)}: "
            "use a corpus with more domains."
        )
    random.Random(seed).shuffle(domains)
    n_eval = min(len(domains) - 1, max(1, math.ceil(eval_fraction * len(domains))))
    held_out = set(domains[:n_eval])
    train = [r for r in records if str(r["domain"]) not in held_out]
    evaluation = [r for r in records if str(r["domain"]) in held_out]
    return train, evaluation

"""The quality gate: a candidate (encoder + index) is deployed only when its evaluation passes every check.

A check is either a floor (``thresholds``: metric -> minimum) or a comparison with the model deployed now.
When both the candidate and the deployed release (the champion) kept per-question results, the comparison
is *paired, per question*: on the questions both answered, the difference in each gated per-question score
(``ex``; ``hit@5`` = gold schema among the top 5, for Recall@5) gets a bootstrap 95% confidence interval and an
exact McNemar p-value, and the candidate fails when the interval lies wholly below ``-max_regression``
(it is worse beyond doubt), so noise on a few questions neither blocks nor admits a release. Without
per-question results the aggregate metrics are compared as before. :func:`evaluate_gate` is pure;
:func:`load_current_metrics` / :func:`load_current_rows` read the deployed release.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coderag.errors import ConfigError

# Metrics the pipeline's gate compares (Recall@5 of the schema retriever, Execution Accuracy of the SQL).
GATED_METRICS = ("recall@5", "ex")
# The per-question score behind each gated metric (a row of the evaluation's per-question results).
PER_QUESTION = {"recall@5": "hit@5", "ex": "ex"}
CONFIDENCE = 0.95
N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus champion on the questions both answered: mean difference, its CI, McNemar's p."""

    metric: str
    n: int
    candidate: float
    champion: float
    difference: float
    low: float
    high: float
    p_value: float
    candidate_only: int
    champion_only: int

    def describe(self) -> str:
        return (f"{self.metric} paired on n={self.n}: candidate {self.candidate:.4f} vs deployed {self.champion:.4f}, "
                f"difference {self.difference:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f}; "
                f"McNemar p={self.p_value:.3g}, {self.candidate_only} won / {self.champion_only} lost)")


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(metric: str, candidate: Sequence[float], champion: Sequence[float], *,
                      seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> PairedComparison:
    """Bootstrap CI of the mean paired difference (candidate - champion) and exact McNemar's test.

    Args:
        metric: the name shown in the result.
        candidate: the candidate's per-question scores (0/1), aligned with ``champion``.
        champion: the deployed release's scores on the same questions.
        seed: bootstrap seed (the interval is reproducible).
        n_bootstrap: bootstrap resamples.

    Returns:
        A :class:`PairedComparison`.

    Example:
        >>> c = paired_comparison("ex", [1, 1, 1, 0] * 25, [0, 1, 1, 0] * 25)
        >>> round(c.difference, 2), c.low > 0
        (0.25, True)
    """
    import numpy as np

    if len(candidate) != len(champion) or not candidate:
        raise ValueError("paired comparison needs equally long, non-empty score lists")
    a = np.asarray(candidate, dtype=float)
    b = np.asarray(champion, dtype=float)
    diff = a - b
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(diff), size=(n_bootstrap, len(diff)))
    means = diff[samples].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    won, lost = int(((a > 0) & (b == 0)).sum()), int(((a == 0) & (b > 0)).sum())
    return PairedComparison(metric, len(diff), float(a.mean()), float(b.mean()), float(diff.mean()), float(low),
                            float(high), _mcnemar_exact(won, lost), won, lost)


@dataclass(frozen=True)
class GateDecision:
    """``passed`` is True only when every check held; ``reasons`` says why each failed check failed.

    ``checks`` describes every comparison made (passed or not), for the run's outcome record.
    """

    passed: bool
    reasons: list[str]
    checks: list[str] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _paired_scores(rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]],
                   score: str) -> tuple[list[float], list[float]]:
    mine = {str(r["key"]): r for r in rows if "key" in r and isinstance(r.get(score), (bool, int, float))}
    theirs = {str(r["key"]): r for r in current_rows if "key" in r and isinstance(r.get(score), (bool, int, float))}
    keys = [k for k in mine if k in theirs]
    return [float(mine[k][score]) for k in keys], [float(theirs[k][score]) for k in keys]


def evaluate_gate(metrics: Mapping[str, Any], thresholds: Mapping[str, Any],
                  current: Mapping[str, Any] | None = None, *, max_regression: float = 0.0,
                  rows: Sequence[Mapping[str, Any]] | None = None,
                  current_rows: Sequence[Mapping[str, Any]] | None = None) -> GateDecision:
    """Compare ``metrics`` with the floors in ``thresholds`` and with the deployed release.

    Every metric named in ``thresholds`` must be present in ``metrics``, a number, and at or above its
    floor. Against the deployed release: when ``rows`` and ``current_rows`` (per-question results with a
    ``key`` and the per-question score, see :data:`PER_QUESTION`) share questions, the comparison is paired
    (:func:`paired_comparison`) and fails when the whole 95% interval of the difference lies below
    ``-max_regression``; otherwise the candidate's aggregate must reach ``current - max_regression``. A
    missing or non-numeric candidate metric fails its check (it is never treated as passing). A floor that
    no score can reach (e.g. 1.5) simply fails, with its reason. Raises :class:`ConfigError` when a
    threshold is not a number or ``max_regression`` is negative.

    Args:
        metrics: the candidate's aggregate metrics.
        thresholds: metric -> floor.
        current: the deployed release's aggregate metrics (None: nothing deployed).
        max_regression: how far below the deployed release the candidate may fall.
        rows: the candidate's per-question results.
        current_rows: the deployed release's per-question results.

    Returns:
        A :class:`GateDecision` whose ``checks`` state every comparison (for paired ones: n, the
        difference and its interval) and whose ``comparisons`` hold the paired statistics.
    """
    if not thresholds:
        raise ConfigError("the gate needs at least one threshold, e.g. {'recall@5': 0.5}")
    if _number(max_regression) is None or max_regression < 0:
        raise ConfigError(f"max_regression must be a number >= 0, got {max_regression!r}")
    reasons: list[str] = []
    checks: list[str] = []
    comparisons: list[dict[str, Any]] = []
    for name, floor in thresholds.items():
        floor_value = _number(floor)
        if floor_value is None:
            raise ConfigError(f"gate threshold {name} must be a number, got {floor!r}")
        value = _number(metrics.get(name))
        if value is None:
            reason = f"{name} is missing from the evaluation metrics (got {metrics.get(name)!r})"
            reasons.append(reason)
            checks.append(reason)
            continue
        ok = value >= floor_value
        text = f"{name} {value:.4f} {'>=' if ok else '<'} floor {floor_value:.4f}"
        checks.append(text)
        if not ok:
            reasons.append(text)
        score = PER_QUESTION.get(name)
        if rows and current_rows and score:
            mine, theirs = _paired_scores(rows, current_rows, score)
            if mine:
                comparison = paired_comparison(name, mine, theirs)
                comparisons.append(asdict(comparison))
                ok = comparison.high >= -max_regression
                bound = f"{-max_regression:+.4f}" if max_regression else "0"
                text = comparison.describe() + (" ok" if ok else f": worse beyond doubt (CI below {bound})")
                checks.append(text)
                if not ok:
                    reasons.append(text)
                continue
        deployed = _number((current or {}).get(name))
        if deployed is None:
            continue
        needed = deployed - max_regression
        ok = value >= needed
        text = (f"{name} {value:.4f} {'>=' if ok else '<'} deployed {deployed:.4f}"
                + (f" - {max_regression:.4f}" if max_regression else ""))
        checks.append(text)
        if not ok:
            reasons.append(text)
    return GateDecision(passed=not reasons, reasons=reasons, checks=checks, comparisons=comparisons)


def load_current_metrics(source: str | Path | None) -> dict[str, float] | None:
    """Metrics of the deployed release from a JSON file (``{"metrics": {...}}`` or a flat mapping).

    An empty ``source`` or a file that does not exist yet (nothing deployed) gives ``None``. A file that
    exists but is not such JSON, or a storage URI (never fetched), raises :class:`ConfigError`.
    """
    if source is None or str(source).strip() == "":
        return None
    if "://" in str(source):
        # Not fetched: treating an unreadable URI as "nothing deployed" would pass the regression check blindly.
        raise ConfigError(f"deployed metrics {source} is a URI: pass a file path the gate step can read (e.g. the "
                          "deploy volume's current.json), or empty when nothing is deployed yet")
    path = Path(source)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"deployed metrics file {path} is not readable JSON ({exc}): fix or remove it") from exc
    metrics = payload.get("metrics", payload) if isinstance(payload, dict) else None
    if not isinstance(metrics, dict):
        raise ConfigError(f"deployed metrics file {path} holds no metrics object: fix or remove it")
    return {k: float(v) for k, v in metrics.items() if _number(v) is not None}


def load_current_rows(source: str | Path | None) -> list[dict[str, Any]] | None:
    """The deployed release's per-question results: the file its record (``current.json``) names under
    ``per_question``, a JSON ``{"rows": [...]}``; None when there is none (an older release)."""
    if source is None or str(source).strip() == "" or "://" in str(source) or not Path(source).is_file():
        return None
    try:
        record = json.loads(Path(source).read_text(encoding="utf-8"))
        path = record.get("per_question") if isinstance(record, dict) else None
        if not path:
            return None
        rows = json.loads(Path(path).read_text(encoding="utf-8")).get("rows")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"the deployed release's per-question results are unreadable ({exc}): "
                          "fix or remove the deployed release") from exc
    return rows if isinstance(rows, list) else None


def decide(metrics: Mapping[str, Any], thresholds: Mapping[str, Any], current_source: str | Path | None, *,
           max_regression: float = 0.0, decision_path: str | Path | None = None,
           rows: Sequence[Mapping[str, Any]] | None = None) -> GateDecision:
    """The pipeline's gate step: the deployed release's metrics and per-question results + :func:`evaluate_gate`.

    With ``decision_path`` the decision (plus the metrics, thresholds and deployed metrics it compared)
    is written there as JSON.
    """
    current = load_current_metrics(current_source)
    current_rows = load_current_rows(current_source)
    decision = evaluate_gate(metrics, thresholds, current, max_regression=max_regression, rows=rows,
                             current_rows=current_rows)
    if decision_path is not None:
        from coderag.atomic_files import write_json_atomic

        write_json_atomic(Path(decision_path), {**decision.to_dict(), "metrics": dict(metrics),
                                                "thresholds": dict(thresholds), "deployed_metrics": current,
                                                "max_regression": max_regression})
    return decision

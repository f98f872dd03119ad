"""The quality gate: a candidate (encoder + index) is deployed only when its evaluation passes every check.

A check is either a floor (``thresholds``: metric -> minimum) or a comparison with the model deployed now
(``current``: its metrics; the candidate may not fall below them by more than ``max_regression``).
:func:`evaluate_gate` is pure; :func:`load_current_metrics` reads the deployed release's metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coderag.errors import ConfigError

# Metrics the pipeline's gate compares (Recall@5 of the schema retriever, Execution Accuracy of the SQL).
GATED_METRICS = ("recall@5", "ex")


@dataclass(frozen=True)
class GateDecision:
    """``passed`` is True only when every check held; ``reasons`` says why each failed check failed.

    ``checks`` describes every comparison made (passed or not), for the run's outcome record.
    """

    passed: bool
    reasons: list[str]
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def evaluate_gate(metrics: Mapping[str, Any], thresholds: Mapping[str, Any],
                  current: Mapping[str, Any] | None = None, *, max_regression: float = 0.0) -> GateDecision:
    """Compare ``metrics`` with the floors in ``thresholds`` and with the ``current`` deployed metrics.

    Every metric named in ``thresholds`` must be present in ``metrics``, a number, and at or above its
    floor. For every metric of ``thresholds`` that ``current`` also holds, the candidate must reach
    ``current - max_regression``. A missing or non-numeric candidate metric fails its check (it is never
    treated as passing). A floor that no score can reach (e.g. 1.5) simply fails, with its reason.
    Raises :class:`ConfigError` when a threshold is not a number or ``max_regression`` is negative.
    """
    if not thresholds:
        raise ConfigError("the gate needs at least one threshold, e.g. {'recall@5': 0.5}")
    if _number(max_regression) is None or max_regression < 0:
        raise ConfigError(f"max_regression must be a number >= 0, got {max_regression!r}")
    reasons: list[str] = []
    checks: list[str] = []
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
    return GateDecision(passed=not reasons, reasons=reasons, checks=checks)


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


def decide(metrics: Mapping[str, Any], thresholds: Mapping[str, Any], current_source: str | Path | None, *,
           max_regression: float = 0.0, decision_path: str | Path | None = None) -> GateDecision:
    """The pipeline's gate step: :func:`load_current_metrics` + :func:`evaluate_gate`.

    With ``decision_path`` the decision (plus the metrics, thresholds and deployed metrics it compared)
    is written there as JSON.
    """
    current = load_current_metrics(current_source)
    decision = evaluate_gate(metrics, thresholds, current, max_regression=max_regression)
    if decision_path is not None:
        from coderag.atomic_files import write_json_atomic

        write_json_atomic(Path(decision_path), {**decision.to_dict(), "metrics": dict(metrics),
                                                "thresholds": dict(thresholds), "deployed_metrics": current,
                                                "max_regression": max_regression})
    return decision

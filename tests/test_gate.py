"""The quality gate: floors, the deployed baseline, missing metrics, and the decision file."""

from __future__ import annotations

import json
import math

import pytest

from coderag.errors import ConfigError
from coderag.release.gate import GateDecision, decide, evaluate_gate, load_current_metrics

FLOORS = {"recall@5": 0.5, "ex": 0.2}


def test_passes_when_every_floor_holds():
    decision = evaluate_gate({"recall@5": 0.9, "ex": 0.2, "em": 0.0}, FLOORS)
    assert decision == GateDecision(True, [], ["recall@5 0.9000 >= floor 0.5000", "ex 0.2000 >= floor 0.2000"])


def test_each_failed_floor_is_a_reason():
    decision = evaluate_gate({"recall@5": 0.4, "ex": 0.1}, FLOORS)
    assert not decision.passed
    assert decision.reasons == ["recall@5 0.4000 < floor 0.5000", "ex 0.1000 < floor 0.2000"]


def test_impossible_floor_fails_with_its_reason():
    decision = evaluate_gate({"recall@5": 1.0, "ex": 1.0}, {"recall@5": 1.01})
    assert not decision.passed
    assert decision.reasons == ["recall@5 1.0000 < floor 1.0100"]


@pytest.mark.parametrize("value", [None, "0.9", math.nan, True])
def test_missing_or_non_numeric_metric_never_passes(value):
    metrics = {"ex": 0.5} if value is None else {"recall@5": value, "ex": 0.5}
    decision = evaluate_gate(metrics, FLOORS)
    assert not decision.passed
    assert decision.reasons[0].startswith("recall@5 is missing")


def test_below_deployed_fails_and_tolerance_admits_small_regressions():
    metrics, current = {"recall@5": 0.80, "ex": 0.30}, {"recall@5": 0.85, "ex": 0.30}
    strict = evaluate_gate(metrics, FLOORS, current)
    assert not strict.passed
    assert strict.reasons == ["recall@5 0.8000 < deployed 0.8500"]
    assert evaluate_gate(metrics, FLOORS, current, max_regression=0.05).passed
    # Equal to the deployed release is not a regression: rerunning the same config passes.
    assert evaluate_gate(current, FLOORS, current).passed


def test_deployed_metrics_outside_the_thresholds_are_ignored():
    assert evaluate_gate({"recall@5": 0.9, "ex": 0.3}, FLOORS, {"mrr": 0.99, "em": 0.9}).passed


@pytest.mark.parametrize("thresholds, regression", [({}, 0.0), ({"ex": "high"}, 0.0), (FLOORS, -0.1)])
def test_bad_configuration_raises(thresholds, regression):
    with pytest.raises(ConfigError):
        evaluate_gate({"recall@5": 1.0, "ex": 1.0}, thresholds, max_regression=regression)


def test_load_current_metrics_reads_release_or_flat_json(tmp_path):
    assert load_current_metrics("") is None
    assert load_current_metrics(tmp_path / "absent.json") is None
    release = tmp_path / "current.json"
    release.write_text(json.dumps({"release_id": "r1", "metrics": {"recall@5": 0.7, "ex": 0.25, "n": "x"}}))
    assert load_current_metrics(release) == {"recall@5": 0.7, "ex": 0.25}
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"recall@5": 0.6}))
    assert load_current_metrics(flat) == {"recall@5": 0.6}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_current_metrics(broken)
    with pytest.raises(ConfigError, match="s3://bucket/deployed/current.json is a URI: pass a file path"):
        load_current_metrics("s3://bucket/deployed/current.json")


def test_decide_writes_the_decision_with_its_inputs(tmp_path):
    current = tmp_path / "current.json"
    current.write_text(json.dumps({"metrics": {"recall@5": 0.95, "ex": 0.1}}))
    out = tmp_path / "decision.json"
    decision = decide({"recall@5": 0.9, "ex": 0.3}, FLOORS, current, decision_path=out)
    assert not decision.passed
    written = json.loads(out.read_text())
    assert written["passed"] is False
    assert written["reasons"] == ["recall@5 0.9000 < deployed 0.9500"]
    assert written["deployed_metrics"] == {"recall@5": 0.95, "ex": 0.1}
    assert written["thresholds"] == FLOORS

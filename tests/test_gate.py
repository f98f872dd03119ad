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


def _rows(ex: list[int], hit: list[int] | None = None) -> list[dict]:
    hit = hit or [1] * len(ex)
    return [{"key": f"q{i}", "ex": bool(e), "hit@5": bool(h)} for i, (e, h) in enumerate(zip(ex, hit))]


def test_paired_comparison_interval_and_mcnemar_are_hand_checkable():
    from coderag.release.gate import paired_comparison

    same = paired_comparison("ex", [1, 0] * 50, [1, 0] * 50)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    worse = paired_comparison("ex", [0] * 20 + [1] * 80, [1] * 100)
    assert worse.difference == pytest.approx(-0.2) and worse.high < 0 and worse.champion_only == 20
    assert worse.p_value == pytest.approx(2 * 0.5**20)
    assert paired_comparison("ex", [0] * 20 + [1] * 80, [1] * 100, seed=0) == worse  # reproducible


def test_a_worse_candidate_is_refused_per_question_even_above_the_floors():
    champion = _rows([1] * 60 + [0] * 40)
    candidate = _rows([1] * 45 + [0] * 55)  # loses 15 questions the champion answered
    decision = evaluate_gate({"recall@5": 0.9, "ex": 0.45}, FLOORS, {"recall@5": 0.9, "ex": 0.6},
                             rows=candidate, current_rows=champion)
    assert not decision.passed and len(decision.reasons) == 1
    reason = decision.reasons[0]
    assert reason.startswith("ex paired on n=100: candidate 0.4500 vs deployed 0.6000, difference -0.1500 (95% CI ")
    assert "worse beyond doubt" in reason and "0 won / 15 lost" in reason
    assert [c["metric"] for c in decision.comparisons] == ["recall@5", "ex"]


def test_noise_on_a_few_questions_does_not_block_and_tolerance_applies_to_the_interval():
    champion = _rows([1] * 30 + [0] * 70)
    candidate = _rows([1] * 28 + [0] * 2 + [1] * 1 + [0] * 69)  # 2 lost, 1 won: not a real regression
    decision = evaluate_gate({"recall@5": 0.9, "ex": 0.29}, FLOORS, {"ex": 0.30}, rows=candidate,
                             current_rows=champion)
    assert decision.passed, decision.reasons
    # The aggregate comparison (no per-question rows) would have refused the same numbers.
    assert not evaluate_gate({"recall@5": 0.9, "ex": 0.29}, FLOORS, {"ex": 0.30}).passed
    clearly_worse = _rows([1] * 10 + [0] * 90)
    assert evaluate_gate({"recall@5": 0.9, "ex": 0.2}, FLOORS, {"ex": 0.3}, rows=clearly_worse,
                         current_rows=champion, max_regression=0.5).passed


def test_decide_pairs_with_the_deployed_release_per_question_file(tmp_path):
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"metrics": {"ex": 0.6}, "rows": _rows([1] * 60 + [0] * 40)}))
    current = tmp_path / "current.json"
    current.write_text(json.dumps({"metrics": {"recall@5": 0.9, "ex": 0.6}, "per_question": str(evaluation)}))
    out = tmp_path / "decision.json"
    decision = decide({"recall@5": 0.9, "ex": 0.4}, FLOORS, current, rows=_rows([1] * 40 + [0] * 60),
                      decision_path=out)
    assert not decision.passed
    saved = json.loads(out.read_text())
    assert saved["comparisons"][1]["n"] == 100 and saved["comparisons"][1]["high"] < 0
    evaluation.write_text("not json")
    with pytest.raises(ConfigError, match="per-question results are unreadable"):
        decide({"recall@5": 0.9, "ex": 0.4}, FLOORS, current, rows=[])

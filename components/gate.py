"""Component: the quality gate (coderag.release.gate.decide): floors plus a paired comparison with the champion."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Metrics, Output

from components.image import coderag_component


@coderag_component()
def gate(metrics: Input[Metrics], details: Input[Artifact], min_recall_at_5: float, min_execution_accuracy: float,
         max_regression: float, current_metrics: str,
         decision: Output[Artifact]) -> NamedTuple("GateOutput", passed=bool, reasons=str):
    """Compare the evaluation with the floors and, per question, with the deployed release; ``passed`` drives
    ``dsl.If``. The decision (every check, n, differences and their intervals) is printed and saved."""
    import json
    from collections import namedtuple

    from coderag.release.gate import decide

    with open(details.path, encoding="utf-8") as fh:
        rows = json.load(fh).get("rows")
    verdict = decide(dict(metrics.metadata), {"recall@5": min_recall_at_5, "ex": min_execution_accuracy},
                     current_metrics, max_regression=max_regression, decision_path=decision.path, rows=rows)
    print(f"gate {'PASSED' if verdict.passed else 'FAILED'}: " + "; ".join(verdict.checks))
    return namedtuple("GateOutput", ["passed", "reasons"])(verdict.passed, json.dumps(verdict.reasons))

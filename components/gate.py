"""Component: the quality gate (coderag.release.gate.decide): passes only when every threshold holds."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Metrics, Output

from components.image import coderag_component


@coderag_component()
def gate(metrics: Input[Metrics], min_recall_at_5: float, min_execution_accuracy: float, max_regression: float,
         current_metrics: str, decision: Output[Artifact]) -> NamedTuple("GateOutput", passed=bool, reasons=str):
    """Compare the evaluation with the floors and the deployed release; ``passed`` drives ``dsl.If``."""
    import json
    from collections import namedtuple

    from coderag.release.gate import decide

    verdict = decide(dict(metrics.metadata), {"recall@5": min_recall_at_5, "ex": min_execution_accuracy},
                     current_metrics, max_regression=max_regression, decision_path=decision.path)
    print(f"gate {'PASSED' if verdict.passed else 'FAILED'}: " + "; ".join(verdict.checks))
    return namedtuple("GateOutput", ["passed", "reasons"])(verdict.passed, json.dumps(verdict.reasons))

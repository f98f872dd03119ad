"""Components that record how a run ended: deploy skipped by the gate, and the run's final status."""

from kfp.dsl import Artifact, Input, Output, PipelineTaskFinalStatus

from components.image import coderag_component


@coderag_component()
def skip_deploy(decision: Input[Artifact], outcome: Output[Artifact]):
    """The gate failed: record that nothing was deployed, and why (coderag.release.publish.record_skipped)."""
    from coderag.release.publish import record_skipped

    print(record_skipped(decision_path=decision.path, outcome_path=outcome.path)["message"])


@coderag_component()
def record_run_status(status: PipelineTaskFinalStatus, run_status: Output[Artifact]):
    """Exit handler: record SUCCEEDED / FAILED (and the error) of the whole run (coderag.release.publish.write_outcome)."""
    from coderag.release.publish import write_outcome

    write_outcome(run_status.path, status=status.state,
                  reasons=[status.error_message] if status.error_message else [],
                  pipeline_job=status.pipeline_job_resource_name, task=status.pipeline_task_name)

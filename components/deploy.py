"""Component: publish / promote a release that passed the gate (coderag.release.publish.deploy_release)."""

from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def deploy(model: Input[Model], index: Input[Artifact], metrics: Input[Metrics], details: Input[Artifact],
           decision: Input[Artifact],
           deploy_dir: str, promote_repo: str, promote_env: str, outcome: Output[Artifact]):
    """Copy model + index into ``deploy_dir`` and/or promote their URIs via GitOps; record the outcome."""
    from coderag.release.publish import deploy_release

    deploy_release(model_dir=model.path, index_dir=index.path, metrics=dict(metrics.metadata),
                   deploy_dir=deploy_dir or None, model_uri=model.uri, index_uri=index.uri,
                   promote_repo=promote_repo, promote_env=promote_env, decision_path=decision.path,
                   details_path=details.path,
                   outcome_path=outcome.path)

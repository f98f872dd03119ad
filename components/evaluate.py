"""Component: score the candidate on held-out questions (coderag.pipeline.stages.evaluate_stage)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def evaluate(corpus_split: Input[Dataset], model: Input[Model], index: Input[Artifact], k: int, n_eval: int,
             max_new_tokens: int, llm_base_url: str, llm_model: str, seed: int, metrics: Output[Metrics],
             details: Output[Artifact]):
    """Recall@1/5/10, MRR, nDCG@10 over the whole index and EM/EX with retrieval, logged as KFP metrics."""
    from coderag.pipeline.stages import evaluate_stage

    scores = evaluate_stage(corpus_dir=corpus_split.path, model_dir=model.path, index_dir=index.path, k=k,
                            n_eval=n_eval, max_new_tokens=max_new_tokens, llm_base_url=llm_base_url,
                            llm_model=llm_model, seed=seed, details_path=details.path)
    for name, value in scores.items():
        metrics.log_metric(name, float(value))

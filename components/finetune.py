"""Component: fine-tune the bi-encoder with MNRL (coderag.pipeline_stages.finetune_stage)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def finetune(pairs: Input[Dataset], corpus: Input[Dataset], base_model: str, epochs: float, batch_size: int,
             max_steps: int, learning_rate: float, seed: int, model: Output[Model],
             training_metrics: Output[Metrics]):
    """Train on the pairs, save the model; log held-out retrieval before/after so the KFP UI shows both."""
    from coderag.pipeline_stages import finetune_stage

    report = finetune_stage(pairs_dir=pairs.path, corpus_dir=corpus.path, model_dir=model.path,
                            base_model=base_model, epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                            lr=learning_rate, seed=seed)
    for phase in ("before", "after"):
        for name, value in report[phase].items():
            training_metrics.log_metric(f"{phase}/{name}", float(value))
    training_metrics.log_metric("train_pairs", float(report["train_size"]))
    model.metadata.update({"base_model": report["base_model"], "train_size": report["train_size"],
                           "framework": "sentence-transformers"})

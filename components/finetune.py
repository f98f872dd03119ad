"""Component: fine-tune the bi-encoder with MNRL (coderag.pipeline.stages.finetune_stage)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def finetune(pairs: Input[Dataset], corpus_split: Input[Dataset], encoder: str, profile: str, epochs: float,
             batch_size: int, max_steps: int, learning_rate: float, cached: bool, seed: int, model: Output[Model],
             training_metrics: Output[Metrics]):
    """Train on the pairs, save the model; log held-out retrieval before/after so the KFP UI shows both."""
    from coderag.pipeline.stages import finetune_stage

    report = finetune_stage(pairs_dir=pairs.path, corpus_dir=corpus_split.path, model_dir=model.path,
                            encoder=encoder, epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                            learning_rate=learning_rate, cached=cached, profile=profile, seed=seed)
    for phase in ("before", "after"):
        for name, value in report[phase].items():
            training_metrics.log_metric(f"{phase}/{name}", float(value))
    training_metrics.log_metric("train_pairs", float(report["train_size"]))
    training_metrics.log_metric("train_steps", float(report["training"]["steps"]))
    training_metrics.log_metric("train_minutes", float(report["minutes"]))
    model.metadata.update({"base_model": report["base_model"], "train_size": report["train_size"],
                           "profile": report["profile"], "device": report["device_name"],
                           "framework": "sentence-transformers"})

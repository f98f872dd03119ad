"""Component: fine-tune the SQL generator with LoRA (coderag.pipeline.stages.finetune_generator_stage)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def finetune_generator(corpus_split: Input[Dataset], base_model: str, max_steps: int, batch_size: int,
                       learning_rate: float, k: int, seed: int, generator: Output[Model],
                       training_metrics: Output[Metrics]):
    """Train a LoRA adapter on the train side's question -> SQL records; log the loss so the KFP UI shows it.

    The adapter directory is what the vLLM generator loads with ``--lora-modules`` (manifests/components/
    generator-lora).
    """
    from coderag.pipeline.stages import finetune_generator_stage

    report = finetune_generator_stage(corpus_dir=corpus_split.path, model_dir=generator.path, max_steps=max_steps,
                                      base_model=base_model, batch_size=batch_size, learning_rate=learning_rate,
                                      k=k, seed=seed)
    for name in ("loss_first", "loss_last", "samples_per_s", "minutes"):
        training_metrics.log_metric(name, float(report[name]))
    training_metrics.log_metric("train_examples", float(report["examples"]))
    generator.metadata.update({"base_model": report["base_name"], "format": report["output_kind"],
                               "examples": report["examples"], "steps": report["steps"], "framework": "peft"})

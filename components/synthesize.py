"""Component: corpus -> held-out split -> synthesized training pairs (coderag.pipeline.stages.synthesize_stage)."""

from kfp.dsl import Dataset, Output

from components.image import coderag_component


@coderag_component()
def synthesize(corpus: str, n_records: int, eval_fraction: float, seed: int, synth_backend: str,
               llm_base_url: str, llm_model: str, max_train_pairs: int, n_negatives: int,
               corpus_split: Output[Dataset], pairs: Output[Dataset]):
    """Write the split corpus (train/held-out JSONL) and the training pairs (a datasets Dataset)."""
    from coderag.pipeline.stages import synthesize_stage

    report = synthesize_stage(corpus=corpus, n_records=n_records, eval_fraction=eval_fraction,
                              seed=seed, corpus_dir=corpus_split.path, pairs_dir=pairs.path, backend=synth_backend,
                              llm_base_url=llm_base_url, llm_model=llm_model, max_train_pairs=max_train_pairs,
                              n_negatives=n_negatives)
    corpus_split.metadata.update({k: v for k, v in report["corpus"].items() if isinstance(v, (int, str))})
    pairs.metadata["train_pairs"] = report["train_pairs"]

"""Component: corpus -> held-out split -> synthesized training pairs (coderag.pipeline_stages.synthesize_stage)."""

from kfp.dsl import Dataset, Output

from components.image import coderag_component


@coderag_component()
def synthesize(corpus_source: str, n_records: int, eval_fraction: float, seed: int, synth_backend: str,
               llm_base_url: str, llm_model: str, max_train_pairs: int, n_negatives: int,
               corpus: Output[Dataset], pairs: Output[Dataset]):
    """Write the split corpus (train/held-out JSONL) and the training pairs (a datasets Dataset)."""
    from coderag.pipeline_stages import synthesize_stage

    report = synthesize_stage(corpus_source=corpus_source, n_records=n_records, eval_fraction=eval_fraction,
                              seed=seed, corpus_dir=corpus.path, pairs_dir=pairs.path, backend=synth_backend,
                              llm_base_url=llm_base_url, llm_model=llm_model, max_train_pairs=max_train_pairs,
                              n_negatives=n_negatives)
    corpus.metadata.update({k: v for k, v in report["corpus"].items() if isinstance(v, (int, str))})
    pairs.metadata["train_pairs"] = report["train_pairs"]

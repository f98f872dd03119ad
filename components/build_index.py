"""Component: embed the corpus schemas with the tuned encoder (coderag.pipeline.stages.build_index_stage)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import coderag_component


@coderag_component()
def build_index(corpus_split: Input[Dataset], model: Input[Model], index: Output[Artifact]):
    """Write the schema index (FAISS IndexFlatIP + corpus map + manifest) as a directory artifact."""
    from coderag.pipeline.stages import build_index_stage

    report = build_index_stage(corpus_dir=corpus_split.path, model_dir=model.path, index_dir=index.path)
    index.metadata.update(report)

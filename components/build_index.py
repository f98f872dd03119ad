"""Component: embed the corpus schemas with the tuned encoder (coderag.pipeline_stages.build_index_stage)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import coderag_component


@coderag_component()
def build_index(corpus: Input[Dataset], model: Input[Model], index: Output[Artifact]):
    """Write the schema index (FAISS IndexFlatIP + corpus map + manifest) as a directory artifact."""
    from coderag.pipeline_stages import build_index_stage

    report = build_index_stage(corpus_dir=corpus.path, model_dir=model.path, index_dir=index.path)
    index.metadata.update(report)

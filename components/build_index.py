"""Components: plan the shards, embed each shard (one pod each, under ``dsl.ParallelFor``), merge into the index.

``build_index`` is the merge step: it reads every shard the loop collected and writes the schema index
(coderag.pipeline.stages: plan_shards_stage, embed_shard_stage, merge_shards_stage).
"""

from typing import List  # noqa: UP035 - KFP reads typing.List in component signatures

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import coderag_component


@coderag_component()
def plan_shards(corpus_split: Input[Dataset], shard_size: int) -> List[int]:  # noqa: UP006 - KFP reads typing.List
    """The shard numbers to embed in parallel: one per ``shard_size`` unique schemas (at least one)."""
    from coderag.pipeline.stages import plan_shards_stage

    return plan_shards_stage(corpus_dir=corpus_split.path, shard_size=shard_size)


@coderag_component()
def embed_shard(corpus_split: Input[Dataset], model: Input[Model], shard: int, shard_size: int, device: str,
                vectors: Output[Artifact]):
    """Embed shard ``shard`` of the corpus's unique schemas (``device`` "cuda" on a GPU node, "" for plain encode)."""
    from coderag.pipeline.stages import embed_shard_stage

    report = embed_shard_stage(corpus_dir=corpus_split.path, model_dir=model.path, shard=shard,
                               shard_size=shard_size, shard_dir=vectors.path, device=device or None)
    vectors.metadata.update({key: report[key] for key in ("shard", "shards", "start", "stop", "dim")})


@coderag_component()
def build_index(corpus_split: Input[Dataset], model: Input[Model], shards: Input[List[Artifact]],  # noqa: UP006
                index_type: str, lexical_weight: float, examples: int, index: Output[Artifact]):
    """Merge the embedded shards into the schema index (FAISS flat / IVF / HNSW + corpus map + manifest; its
    hybrid ``lexical_weight`` recorded in the manifest), with the training split's question -> SQL examples
    beside it when ``examples`` > 0 (the pipeline's setting)."""
    from coderag.pipeline.stages import merge_shards_stage

    report = merge_shards_stage(corpus_dir=corpus_split.path, model_dir=model.path,
                                shard_dirs=[shard.path for shard in shards], index_dir=index.path,
                                index_type=index_type, lexical_weight=lexical_weight,
                                with_examples=examples > 0)
    index.metadata.update(report)

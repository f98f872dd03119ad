"""Sharded embedding: two shards merged give the index an unsharded build gives (real MiniLM, real FAISS, KFP)."""

import json
from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.ann import IndexSpec
from coderag.retrieval.index import SchemaIndex
from coderag.retrieval.shards import SHARD_MANIFEST, embed_shard, merge_shards, shard_count

_RESHARD = "re-run the embed-shard steps with one encoder and one shard size"


@pytest.fixture(scope="module")
def two_shards(encoder_model, schema_snippets, tmp_path_factory):
    snippets, _ = schema_snippets
    root = tmp_path_factory.mktemp("shards")
    # Written in reverse order: the merge orders shards by number, not by argument order.
    manifests = [embed_shard(encoder_model, snippets, shard, 120, root / f"shard-{shard}") for shard in (1, 0)]
    return [root / "shard-1", root / "shard-0"], manifests


def _vectors(index: SchemaIndex) -> np.ndarray:
    return index.faiss_index.reconstruct_n(0, index.count)


def test_shard_manifests_cover_the_corpus(two_shards):
    _, manifests = two_shards
    assert [(m["shard"], m["shards"], m["start"], m["stop"], m["dim"]) for m in manifests] == [
        (1, 2, 120, 240, 384), (0, 2, 0, 120, 384)]


def test_two_shards_merge_to_the_unsharded_index(two_shards, built_schema_index, schema_snippets):
    snippets, domains = schema_snippets
    shard_dirs, _ = two_shards
    merged = merge_shards(shard_dirs, snippets, domains)
    assert merged.snippets == built_schema_index.snippets and merged.domains == built_schema_index.domains
    assert merged.encoder_fingerprint == built_schema_index.encoder_fingerprint
    # Batches of different make-up round differently in the last float32 bits, nothing more.
    np.testing.assert_allclose(_vectors(merged), _vectors(built_schema_index), atol=1e-6, rtol=0)
    queries = _vectors(built_schema_index)[::7]
    assert merged.search(queries, 10)[1].tolist() == built_schema_index.search(queries, 10)[1].tolist()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_sharded_ann_index_equals_one_built_from_the_same_vectors(two_shards, schema_snippets, kind):
    snippets, domains = schema_snippets
    shard_dirs, _ = two_shards
    merged = merge_shards(shard_dirs, snippets, domains, spec=IndexSpec(kind))
    vectors = np.concatenate([np.load(Path(d) / "vectors.npy") for d in reversed(shard_dirs)])
    direct = SchemaIndex.from_vectors(vectors, snippets, domains, spec=IndexSpec(kind))
    assert merged.spec == direct.spec
    queries = vectors[::5]
    assert merged.search(queries, 10)[1].tolist() == direct.search(queries, 10)[1].tolist()


def test_a_missing_or_repeated_shard_is_refused(two_shards, schema_snippets):
    snippets, _ = schema_snippets
    shard_dirs, _ = two_shards
    with pytest.raises(SchemaIndexError) as excinfo:
        merge_shards(shard_dirs[:1], snippets)
    assert str(excinfo.value) == f"got shards [1] of 2: each shard must be merged exactly once; {_RESHARD}"
    with pytest.raises(SchemaIndexError) as excinfo:
        merge_shards([shard_dirs[0], *shard_dirs], snippets)
    assert str(excinfo.value) == f"got shards [0, 1, 1] of 2: each shard must be merged exactly once; {_RESHARD}"


def test_shards_of_another_corpus_are_refused(two_shards, schema_snippets):
    snippets, _ = schema_snippets
    shard_dirs, _ = two_shards
    with pytest.raises(SchemaIndexError) as excinfo:
        merge_shards(shard_dirs, snippets[:200])
    assert str(excinfo.value) == f"shards were cut from a corpus of 240 snippets, not 200: {_RESHARD}"


def test_a_modified_shard_is_refused(two_shards, schema_snippets, tmp_path):
    import shutil

    snippets, _ = schema_snippets
    shard_dirs, _ = two_shards
    copy = tmp_path / "shard-0"
    shutil.copytree(shard_dirs[1], copy)
    np.save(copy / "vectors.npy", np.zeros((120, 384), dtype=np.float32))
    with pytest.raises(SchemaIndexError) as excinfo:
        merge_shards([shard_dirs[0], copy], snippets)
    assert str(excinfo.value) == f"{copy / 'vectors.npy'} does not match its shard manifest checksum: {_RESHARD}"
    manifest = json.loads((shard_dirs[1] / SHARD_MANIFEST).read_text())
    assert manifest["sha256"] != ""


def test_shard_numbers_outside_the_corpus_are_refused(encoder_model, tmp_path):
    assert shard_count(240, 120) == 2 and shard_count(241, 120) == 3 and shard_count(0, 10) == 1
    with pytest.raises(ConfigError) as excinfo:
        embed_shard(encoder_model, ["CREATE TABLE a (x INT);"], 1, 10, tmp_path / "s")
    assert str(excinfo.value) == "shard 1 is outside the 1 shards of 1 snippets"
    with pytest.raises(ConfigError) as excinfo:
        shard_count(10, 0)
    assert str(excinfo.value) == "shard size must be a positive integer, got 0"


@dsl.component
def stage_inputs(corpus_src: str, model_src: str, corpus_split: dsl.Output[dsl.Dataset], model: dsl.Output[dsl.Model]):
    """Publish a corpus dir and an encoder dir as the artifacts the index steps take."""
    import shutil

    shutil.copytree(corpus_src, corpus_split.path)
    shutil.copytree(model_src, model.path)


@pytest.mark.slow
def test_kfp_local_parallel_for_with_two_shards_equals_the_unsharded_build(tmp_path, training_records):
    """plan-shards -> dsl.ParallelFor(embed-shard) -> build-index on KFP's local runner, against build_index_stage."""
    import shutil

    from kfp import local

    import components
    from coderag.atomic_files import write_jsonl_atomic
    from coderag.pipeline.stages import HELDOUT_FILE, TRAIN_FILE, _corpus_schemas, build_index_stage
    from coderag.retrieval.encoder import resolve_encoder_path

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    write_jsonl_atomic(corpus_dir / TRAIN_FILE, training_records[:12])
    write_jsonl_atomic(corpus_dir / HELDOUT_FILE, training_records[12:])
    n_schemas = len(_corpus_schemas(corpus_dir).snippets)
    assert n_schemas == 6
    # kfp.local rewrites "python3" inside string arguments (site-packages paths hold it): pass a copy.
    model_dir = str(tmp_path / "encoder")
    shutil.copytree(resolve_encoder_path(None), model_dir)

    @dsl.pipeline(name="sharded-index")
    def sharded_index(shard_size: int):
        inputs = stage_inputs(corpus_src=str(corpus_dir), model_src=model_dir)
        corpus, model = inputs.outputs["corpus_split"], inputs.outputs["model"]
        plan = components.plan_shards(corpus_split=corpus, shard_size=shard_size)
        with dsl.ParallelFor(plan.output) as shard:
            embedded = components.embed_shard(corpus_split=corpus, model=model, shard=shard,
                                              shard_size=shard_size, device="")
        components.build_index(corpus_split=corpus, model=model,
                               shards=dsl.Collected(embedded.outputs["vectors"]), index_type="flat")

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    sharded_index(shard_size=3)
    built = sorted((tmp_path / "root").glob("sharded-index-*/build-index/index"))
    assert len(built) == 1
    merged = SchemaIndex.load(built[0])
    shard_manifests = sorted((tmp_path / "root").glob("sharded-index-*/for-loop-*-iteration-*/embed-shard/vectors/"
                                                      "shard.json"))
    assert sorted(json.loads(p.read_text())["shard"] for p in shard_manifests) == [0, 1]

    build_index_stage(corpus_dir=corpus_dir, model_dir=model_dir, index_dir=tmp_path / "unsharded")
    unsharded = SchemaIndex.load(tmp_path / "unsharded")
    assert merged.snippets == unsharded.snippets and merged.domains == unsharded.domains
    assert merged.encoder_fingerprint == unsharded.encoder_fingerprint
    np.testing.assert_allclose(_vectors(merged), _vectors(unsharded), atol=1e-6, rtol=0)
    assert merged.search(_vectors(unsharded), 6)[1].tolist() == unsharded.search(_vectors(unsharded), 6)[1].tolist()

"""SchemaIndex: real FAISS over real MiniLM embeddings of a few hundred CREATE TABLE snippets."""

from __future__ import annotations

import hashlib
import json

import faiss
import numpy as np
import pytest

from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.encoder import DEFAULT_ENCODER, encode
from coderag.retrieval.index import CORPUS_MAP_FILE, INDEX_FILE, MANIFEST_FILE, SchemaIndex

DIM_MISMATCH = "index dim 384 does not match encoder dim 768: rebuild the index with `coderag index build`"


@pytest.fixture()
def saved_index(built_schema_index, tmp_path):
    return built_schema_index.save(tmp_path / "index")


def _stored_vectors(index: SchemaIndex) -> np.ndarray:
    return index.faiss_index.reconstruct_n(0, index.count)


def test_build_indexes_every_snippet_as_a_unit_vector(built_schema_index, schema_snippets):
    snippets, domains = schema_snippets
    assert isinstance(built_schema_index.faiss_index, faiss.IndexFlatIP)
    assert (built_schema_index.count, built_schema_index.dim) == (len(snippets), 384)
    assert built_schema_index.snippets == snippets and built_schema_index.domains == domains
    assert built_schema_index.encoder_name == DEFAULT_ENCODER
    np.testing.assert_allclose(np.linalg.norm(_stored_vectors(built_schema_index), axis=1), 1.0, atol=1e-5)


def test_each_snippet_retrieves_itself_first(built_schema_index, encoder_model, schema_snippets):
    snippets, _ = schema_snippets
    sample = list(range(0, len(snippets), 7))
    scores, ids = built_schema_index.search(encode(encoder_model, [snippets[i] for i in sample]), k=3)
    assert ids[:, 0].tolist() == sample
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_search_clips_k_to_index_size(built_schema_index):
    queries = _stored_vectors(built_schema_index)[:2]
    scores, ids = built_schema_index.search(queries, k=10_000)
    assert scores.shape == ids.shape == (2, built_schema_index.count)
    assert sorted(ids[0].tolist()) == list(range(built_schema_index.count))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_search_rejects_bad_k(built_schema_index, k):
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        built_schema_index.search(_stored_vectors(built_schema_index)[:1], k=k)


def test_search_rejects_query_of_wrong_dim(built_schema_index):
    with pytest.raises(SchemaIndexError, match="index dim is 384"):
        built_schema_index.search(np.ones((1, 768), dtype=np.float32), k=1)


def test_from_vectors_normalizes_rows():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 16)) * 7.0
    index = SchemaIndex.from_vectors(vectors, [f"CREATE TABLE t{i} (a INT);" for i in range(50)])
    np.testing.assert_allclose(np.linalg.norm(_stored_vectors(index), axis=1), 1.0, atol=1e-5)
    assert index.domains == [""] * 50
    _, ids = index.search(vectors[[3, 17]].astype(np.float32), k=1)
    assert ids[:, 0].tolist() == [3, 17]


@pytest.mark.parametrize(
    ("vectors", "snippets", "domains", "error", "fragment"),
    [
        (np.ones((2, 4)), ["a"], None, ConfigError, "one row per snippet"),
        (np.ones((1, 4)), ["a"], ["x", "y"], ConfigError, "one domain per snippet"),
        (np.full((1, 4), np.nan), ["a"], None, ConfigError, "NaN"),
        (np.ones((1, 4)), ["  "], None, ConfigError, "empty"),
        (np.ones((0, 4)), [], None, SchemaIndexError, "0 schema snippets"),
    ],
)
def test_from_vectors_validates_input(vectors, snippets, domains, error, fragment):
    with pytest.raises(error, match=fragment):
        SchemaIndex.from_vectors(vectors, snippets, domains)


def test_save_writes_three_files_and_a_manifest(built_schema_index, saved_index):
    assert sorted(p.name for p in saved_index.iterdir()) == sorted([INDEX_FILE, CORPUS_MAP_FILE, MANIFEST_FILE])
    assert [p.name for p in saved_index.parent.iterdir()] == ["index"]  # no temp leftovers
    assert saved_index.stat().st_mode & 0o755 == 0o755  # readable by a server running as another user
    manifest = json.loads((saved_index / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1
    assert manifest["encoder"] == DEFAULT_ENCODER
    assert manifest["encoder_fingerprint"] == built_schema_index.encoder_fingerprint
    assert (manifest["dim"], manifest["count"], manifest["metric"]) == (384, built_schema_index.count, "cosine")
    assert manifest["created_at"]
    for name in (INDEX_FILE, CORPUS_MAP_FILE):
        assert manifest["files"][name] == hashlib.sha256((saved_index / name).read_bytes()).hexdigest()
    corpus_map = json.loads((saved_index / CORPUS_MAP_FILE).read_text())
    assert corpus_map == {"snippets": built_schema_index.snippets, "domains": built_schema_index.domains}


def test_roundtrip_gives_identical_search_results(built_schema_index, saved_index, encoder_model):
    loaded = SchemaIndex.load(saved_index, expected_dim=384)
    assert loaded.snippets == built_schema_index.snippets and loaded.domains == built_schema_index.domains
    assert (loaded.encoder_name, loaded.encoder_fingerprint) == (DEFAULT_ENCODER, built_schema_index.encoder_fingerprint)
    queries = encode(encoder_model, ["patients by ward", "albums released per year"])
    for a, b in zip(loaded.search(queries, 5), built_schema_index.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    loaded.check_compatible(encoder_model, strict=True)


def test_save_replaces_an_existing_index_without_leftovers(built_schema_index, saved_index):
    small = SchemaIndex.from_vectors(np.eye(3, 384), ["a", "b", "c"], encoder_name="tiny")
    small.save(saved_index)
    assert SchemaIndex.load(saved_index).count == 3
    assert [p.name for p in saved_index.parent.iterdir()] == ["index"]


def test_failed_save_keeps_old_index_and_leaves_no_temp_files(built_schema_index, saved_index, monkeypatch):
    before = (saved_index / MANIFEST_FILE).read_bytes()

    def broken_write(index, path):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(SchemaIndexError, match="could not write the index"):
        built_schema_index.save(saved_index)
    assert [p.name for p in saved_index.parent.iterdir()] == ["index"]
    assert (saved_index / MANIFEST_FILE).read_bytes() == before
    monkeypatch.undo()
    assert SchemaIndex.load(saved_index).count == built_schema_index.count


def test_save_refuses_to_overwrite_foreign_directory(built_schema_index, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SchemaIndexError, match="refusing to overwrite"):
        built_schema_index.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_save_to_a_file_path_is_refused(built_schema_index, tmp_path):
    target = tmp_path / "index"
    target.write_text("")
    with pytest.raises(SchemaIndexError, match="is a file"):
        built_schema_index.save(target)


def test_load_missing_directory(tmp_path):
    with pytest.raises(SchemaIndexError, match="does not exist: build one with `coderag index build"):
        SchemaIndex.load(tmp_path / "nowhere")


@pytest.mark.parametrize("name", [MANIFEST_FILE, INDEX_FILE, CORPUS_MAP_FILE])
def test_load_missing_file(saved_index, name):
    (saved_index / name).unlink()
    with pytest.raises(SchemaIndexError, match="manifest.json|is missing"):
        SchemaIndex.load(saved_index)


def test_load_corrupt_faiss_file(saved_index):
    (saved_index / INDEX_FILE).write_bytes(b"not a faiss index")
    with pytest.raises(SchemaIndexError, match="checksum"):
        SchemaIndex.load(saved_index)
    with pytest.raises(SchemaIndexError, match="not a readable FAISS index"):
        SchemaIndex.load(saved_index, verify_checksums=False)


def test_load_modified_corpus_map(saved_index):
    path = saved_index / CORPUS_MAP_FILE
    data = json.loads(path.read_text())
    data["snippets"] = data["snippets"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaIndexError, match="checksum"):
        SchemaIndex.load(saved_index)
    with pytest.raises(SchemaIndexError, match="but its manifest says"):
        SchemaIndex.load(saved_index, verify_checksums=False)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"count": 7}, "but its manifest says 7"),
        ({"dim": 768}, "has dim 384 but its manifest says 768"),
        ({"format_version": 99}, "format version 99"),
        ({"metric": "l2"}, "only 'cosine'"),
    ],
)
def test_load_inconsistent_manifest(saved_index, edit, fragment):
    path = saved_index / MANIFEST_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(SchemaIndexError, match=fragment):
        SchemaIndex.load(saved_index)


def test_load_manifest_that_is_not_json(saved_index):
    (saved_index / MANIFEST_FILE).write_text("{truncated")
    with pytest.raises(SchemaIndexError, match="not valid JSON"):
        SchemaIndex.load(saved_index)


def test_load_with_wrong_expected_dim_says_what_to_do(saved_index):
    with pytest.raises(SchemaIndexError) as info:
        SchemaIndex.load(saved_index, expected_dim=768)
    assert str(info.value) == DIM_MISMATCH


def test_check_compatible_rejects_encoder_of_other_dim(encoder_model):
    index = SchemaIndex.from_vectors(np.eye(2, 8), ["a", "b"])
    with pytest.raises(SchemaIndexError, match="index dim 8 does not match encoder dim 384: rebuild"):
        index.check_compatible(encoder_model)


def test_check_compatible_flags_other_weights_when_strict(encoder_model):
    index = SchemaIndex.from_vectors(np.eye(2, 384), ["a", "b"], encoder_name="my-finetuned", encoder_fingerprint="0" * 16)
    index.check_compatible(encoder_model)  # same dim: only a warning
    with pytest.raises(SchemaIndexError, match="built with encoder my-finetuned"):
        index.check_compatible(encoder_model, strict=True)

"""IVF and HNSW schema indexes: built, saved atomically with their parameters, loaded and queried (real MiniLM)."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

import coderag.cli
from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.ann import IndexSpec
from coderag.retrieval.index import MANIFEST_FILE, SchemaIndex
from coderag.retrieval.search import retrieve_schemas

SPECS = {
    "ivf": (IndexSpec("ivf", nlist=4, nprobe=2), faiss.IndexIVFFlat, {"nlist": 4, "nprobe": 2}),
    "hnsw": (IndexSpec("hnsw", hnsw_m=8, ef_search=32), faiss.IndexHNSWFlat,
             {"hnsw_m": 8, "ef_construction": 80, "ef_search": 32}),
}


@pytest.fixture(scope="module")
def flat_vectors(built_schema_index):
    return built_schema_index.faiss_index.reconstruct_n(0, built_schema_index.count)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_saves_loads_and_answers(kind, built_schema_index, flat_vectors, schema_snippets, encoder_model, tmp_path):
    snippets, domains = schema_snippets
    spec, faiss_class, params = SPECS[kind]
    index = SchemaIndex.from_vectors(flat_vectors, snippets, domains, encoder_name="builtin:all-MiniLM-L6-v2",
                                     encoder_fingerprint=built_schema_index.encoder_fingerprint, spec=spec)
    saved = index.save(tmp_path / kind)
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert (manifest["index_type"], manifest["index_params"], manifest["count"]) == (kind, params, 240)
    assert manifest["faiss_index"] == faiss_class.__name__

    loaded = SchemaIndex.load(saved)
    assert isinstance(loaded.faiss_index, faiss_class)
    assert loaded.spec == IndexSpec(kind, **params)
    if kind == "ivf":
        assert faiss.extract_index_ivf(loaded.faiss_index).nprobe == 2
    else:
        assert loaded.faiss_index.hnsw.efSearch == 32
    # Each snippet's own vector finds that snippet first.
    scores, ids = loaded.search(flat_vectors, 1)
    assert ids[:, 0].tolist() == list(range(240))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # A question gets the flat index's top hit.
    question = ["Which patients were born before 1990 and stay in ward B?"]
    ann = retrieve_schemas(loaded, encoder_model, question, k=3)[0]
    exact = retrieve_schemas(built_schema_index, encoder_model, question, k=3)[0]
    assert ann[0].snippet_id == exact[0].snippet_id and ann[0].domain == "hospital"


def test_same_vectors_and_seed_give_the_same_ivf_index(flat_vectors, schema_snippets):
    snippets, _ = schema_snippets
    first = SchemaIndex.from_vectors(flat_vectors, snippets, spec=IndexSpec("ivf", nlist=6), seed=3)
    second = SchemaIndex.from_vectors(flat_vectors, snippets, spec=IndexSpec("ivf", nlist=6), seed=3)
    assert faiss.serialize_index(first.faiss_index).tobytes() == faiss.serialize_index(second.faiss_index).tobytes()


def test_tokenise_ahead_build_adds_windows_to_a_trained_ivf(encoder_model, schema_snippets, flat_vectors):
    snippets, domains = schema_snippets
    built = SchemaIndex.build(encoder_model, snippets, domains, spec=IndexSpec("ivf", nlist=4, nprobe=4),
                              device="cpu", encode_workers=0, batch_size=32)
    assert built.spec == IndexSpec("ivf", nlist=4, nprobe=4)
    assert built.count == 240 and built.faiss_index.is_trained
    # nprobe = nlist searches every cell: exactly the flat ranking.
    _, ids = built.search(flat_vectors[::10], 5)
    _, exact = SchemaIndex.from_vectors(flat_vectors, snippets).search(flat_vectors[::10], 5)
    assert ids.tolist() == exact.tolist()


def test_a_manifest_that_names_another_type_is_refused(built_schema_index, tmp_path):
    saved = built_schema_index.save(tmp_path / "index")
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    manifest["index_type"] = "hnsw"
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SchemaIndexError) as excinfo:
        SchemaIndex.load(saved)
    assert str(excinfo.value) == (f"index file in {saved} is a IndexFlatIP but its manifest says type 'hnsw': "
                                  "rebuild the index with `coderag index build`")


def test_old_manifests_without_a_type_load_as_flat(built_schema_index, tmp_path):
    saved = built_schema_index.save(tmp_path / "index")
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    del manifest["index_type"], manifest["index_params"]
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert SchemaIndex.load(saved).spec == IndexSpec("flat")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"index_type": "pq"}, "index type must be one of flat, ivf, hnsw, got 'pq'"),
    ({"index_type": "ivf", "nlist": 0}, "nlist must be a positive integer, got 0"),
    ({"index_type": "ivf", "nlist": 4, "nprobe": 8}, "nprobe 8 exceeds nlist 4: search at most every cell"),
    ({"index_type": "hnsw", "ef_search": True}, "ef_search must be a positive integer, got True"),
])
def test_bad_specs_are_one_sentence(kwargs, message):
    with pytest.raises(ConfigError) as excinfo:
        IndexSpec(**kwargs)
    assert str(excinfo.value) == message


def test_more_cells_than_vectors_is_refused(flat_vectors, schema_snippets):
    snippets, _ = schema_snippets
    with pytest.raises(ConfigError) as excinfo:
        SchemaIndex.from_vectors(flat_vectors, snippets, spec=IndexSpec("ivf", nlist=500))
    assert str(excinfo.value) == "nlist 500 exceeds the 240 vectors to index: use at most 240 cells or type flat"


def test_defaults_follow_the_corpus_size():
    assert IndexSpec("ivf").resolved(1_000_000) == IndexSpec("ivf", nlist=1000, nprobe=62)
    assert IndexSpec("ivf").resolved(100) == IndexSpec("ivf", nlist=2, nprobe=1)
    assert IndexSpec("hnsw").resolved(10) == IndexSpec("hnsw", hnsw_m=32, ef_construction=80, ef_search=128)


def test_cli_builds_an_hnsw_index_with_the_tokenise_ahead_encoder(tmp_path, capsys):
    rc = coderag.cli.main(["index", "build", "--corpus", "builtin", "--n-records", "40", "--out",
                           str(tmp_path / "index"), "--index-type", "hnsw", "--ef-search", "40", "--device", "cpu",
                           "--encode-workers", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "index hnsw hnsw_m=32 ef_construction=80 ef_search=40" in out
    loaded = SchemaIndex.load(tmp_path / "index")
    assert isinstance(loaded.faiss_index, faiss.IndexHNSWFlat) and loaded.faiss_index.hnsw.efSearch == 40


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--device", "tpu"], "invalid setting device"),
    (["--nprobe", "0"], "invalid setting nprobe"),
])
def test_cli_bad_index_settings_are_one_error_line(tmp_path, capsys, flags, fragment):
    assert coderag.cli.main(["index", "build", "--out", str(tmp_path / "index"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("coderag: error: ") and fragment in err[0], err
    assert not (tmp_path / "index").exists()


def test_cli_unknown_index_type_is_an_argparse_choice_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        coderag.cli.main(["index", "build", "--out", str(tmp_path / "index"), "--index-type", "annoy"])
    assert excinfo.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "coderag index build: error: argument --index-type: invalid choice: 'annoy' (choose from 'flat', 'ivf', 'hnsw')")

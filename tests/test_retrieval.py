"""Question -> schemas with the real encoder and FAISS, plus the `index build` / `retrieve` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import coderag.cli
import coderag.retrieval.search
from coderag.errors import ConfigError, QuestionError, SchemaIndexError
from coderag.retrieval.index import SchemaIndex
from coderag.retrieval.search import RetrievedSchema, retrieve_schemas, validate_question


def test_validate_question_strips_whitespace():
    assert validate_question("  How many orders?\n") == "How many orders?"


@pytest.mark.parametrize(
    ("question", "fragment"),
    [("", "empty"), (" \t\n ", "empty"), ("x" * 2001, "2001 characters long, the limit is 2000"), (None, "must be text"),
     (42, "must be text"), ("orders\x00?", "NUL character"), ("orders \ud800?", "lone surrogate at position 7")],
)
def test_validate_question_rejects_bad_input(question, fragment):
    with pytest.raises(QuestionError, match=fragment):
        validate_question(question)


def test_retrieves_the_matching_domain_first(built_schema_index, encoder_model):
    questions = [
        "Which patients were admitted to the cardiology ward?",
        "What is the total amount of transactions per account?",
        "List albums released by each artist after 2010.",
    ]
    results = retrieve_schemas(built_schema_index, encoder_model, questions, k=4)
    assert [hits[0].domain for hits in results] == ["hospital", "finance", "music"]
    for hits in results:
        assert [h.rank for h in hits] == [1, 2, 3, 4]
        assert all(a.hybrid >= b.hybrid for a, b in zip(hits, hits[1:]))
        weight = built_schema_index.lexical_weight
        assert all(h.hybrid == pytest.approx(h.score + weight * h.lexical) and 0 <= h.lexical <= 1 for h in hits)
        assert all(h.text == built_schema_index.snippets[h.snippet_id] for h in hits)
        assert all(h.domain == built_schema_index.domains[h.snippet_id] for h in hits)


def test_all_questions_are_encoded_in_one_call(built_schema_index, encoder_model, monkeypatch):
    calls = []
    real_encode = coderag.retrieval.search.encode

    def counting_encode(model, texts, *args, **kwargs):
        calls.append(len(texts))
        return real_encode(model, texts, *args, **kwargs)

    monkeypatch.setattr(coderag.retrieval.search, "encode", counting_encode)
    results = retrieve_schemas(built_schema_index, encoder_model, ["orders per customer", "flights from Paris"], k=2)
    assert calls == [2] and len(results) == 2


def test_min_score_drops_weak_results(built_schema_index, encoder_model):
    question = ["Which patients were admitted to the cardiology ward?"]
    (unfiltered,) = retrieve_schemas(built_schema_index, encoder_model, question, k=50)
    cosines = sorted((h.score for h in unfiltered), reverse=True)
    floor = (cosines[4] + cosines[5]) / 2  # the floor is on the cosine, whatever the hybrid order
    (filtered,) = retrieve_schemas(built_schema_index, encoder_model, question, k=50, min_score=floor)
    assert [h.snippet_id for h in filtered] == [h.snippet_id for h in unfiltered if h.score >= floor]
    assert len(filtered) == 5 and [h.rank for h in filtered] == [1, 2, 3, 4, 5]
    assert retrieve_schemas(built_schema_index, encoder_model, question, k=5, min_score=1.0) == [[]]


def test_k_is_clipped_to_index_size(encoder_model):
    snippets = ["CREATE TABLE a (x INT);", "CREATE TABLE b (y TEXT);", "CREATE TABLE c (z REAL);"]
    index = SchemaIndex.build(encoder_model, snippets)
    (hits,) = retrieve_schemas(index, encoder_model, ["which table has y?"], k=50)
    assert sorted(h.snippet_id for h in hits) == [0, 1, 2]


def test_to_dict_is_json_ready(built_schema_index, encoder_model):
    (hits,) = retrieve_schemas(built_schema_index, encoder_model, ["flights by origin"], k=1)
    payload = json.loads(json.dumps(hits[0].to_dict()))
    assert set(payload) == {"rank", "snippet_id", "score", "text", "domain", "lexical", "hybrid"}
    assert isinstance(hits[0], RetrievedSchema) and isinstance(payload["score"], float)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"k": 0}, ConfigError, "k must be a positive integer"),
        ({"k": "5"}, ConfigError, "k must be a positive integer"),
        ({"min_score": 2.0}, ConfigError, "outside the cosine range"),
        ({"min_score": float("nan")}, ConfigError, "between -1 and 1"),
        ({"questions": "one string"}, QuestionError, "list of strings"),
        ({"questions": ["fine", "  "]}, QuestionError, "empty"),
    ],
)
def test_retrieve_rejects_bad_arguments(built_schema_index, encoder_model, kwargs, error, fragment):
    args = {"questions": ["orders per customer"], "k": 5, **kwargs}
    with pytest.raises(error, match=fragment):
        retrieve_schemas(built_schema_index, encoder_model, **args)


def test_no_questions_give_no_results(built_schema_index, encoder_model):
    assert retrieve_schemas(built_schema_index, encoder_model, [], k=3) == []


def test_encoder_of_other_dim_is_refused(encoder_model):
    index = SchemaIndex.from_vectors(np.eye(2, 8), ["a", "b"])
    with pytest.raises(SchemaIndexError, match="does not match encoder dim 384"):
        retrieve_schemas(index, encoder_model, ["anything"], k=1)


# --- CLI -----------------------------------------------------------------------------------------


@pytest.fixture()
def cli():
    """The shipped ``coderag.cli.main``, exactly as the console script calls it."""
    return coderag.cli.main


def test_shipped_cli_has_index_build_and_retrieve():
    """The installed entry point (not an import in this process) lists both commands and their flags."""
    import subprocess
    import sys

    top = subprocess.run([sys.executable, "-m", "coderag.cli", "--help"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in top.split("COMMAND", 2)[2].splitlines() if line.startswith("    ") and
              not line.startswith("     ")}
    assert {"index", "retrieve"} <= listed, listed
    build = subprocess.run([sys.executable, "-m", "coderag.cli", "index", "build", "--help"], capture_output=True,
                           text=True, check=True).stdout
    assert "--out" in build and "--n-records" in build
    retrieve = subprocess.run([sys.executable, "-m", "coderag.cli", "retrieve", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "--index" in retrieve and "--question" in retrieve


def _single_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("coderag: error: ")
    return err[0]


def test_cli_retrieve_prints_json(cli, built_schema_index, tmp_path, capsys):
    index_dir = built_schema_index.save(tmp_path / "index")
    rc = cli(["retrieve", "--index", str(index_dir), "--question", "Which patients are in ward 3?", "-k", "3", "--json"])
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["question"] == "Which patients are in ward 3?"
    assert [s["rank"] for s in payload["schemas"]] == [1, 2, 3]
    assert payload["schemas"][0]["domain"] == "hospital"


def test_cli_retrieve_missing_index_is_one_error_line(cli, tmp_path, capsys):
    rc = cli(["retrieve", "--index", str(tmp_path / "missing"), "--question", "orders?"])
    assert rc == 2
    assert "does not exist" in _single_error_line(capsys)


def test_cli_retrieve_corrupt_index_is_one_error_line(cli, built_schema_index, tmp_path, capsys):
    index_dir = built_schema_index.save(tmp_path / "index")
    (index_dir / "sql_rag_faiss_index.bin").write_bytes(b"garbage")
    assert cli(["retrieve", "--index", str(index_dir), "--question", "orders?"]) == 2
    assert "checksum" in _single_error_line(capsys)


@pytest.mark.parametrize(("extra", "fragment"), [(["--question", "   "], "question is empty"), (["--question", "q", "-k", "0"], "invalid setting k")])
def test_cli_retrieve_bad_input_is_one_error_line(cli, tmp_path, capsys, extra, fragment):
    assert cli(["retrieve", "--index", str(tmp_path), *extra]) == 2
    assert fragment in _single_error_line(capsys)


def test_cli_index_build_writes_a_loadable_index(cli, tmp_path, capsys):
    out = tmp_path / "idx"
    assert cli(["index", "build", "--n-records", "40", "--out", str(out), "--batch-size", "32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "duplicates dropped" in printed and "snippets/s" in printed
    index = SchemaIndex.load(out, expected_dim=384)
    assert f"indexed {index.count} schema snippets from 40 records" in printed


def test_cli_index_build_bad_encoder_path_is_one_error_line(cli, tmp_path, capsys):
    out = tmp_path / "idx"
    assert cli(["index", "build", "--n-records", "5", "--encoder", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in _single_error_line(capsys)
    assert not out.exists() and list(tmp_path.iterdir()) == []

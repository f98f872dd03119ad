"""The main job end to end on a tiny config (real encoder, FAISS, SQLite, SmolLM2) and its bad inputs."""

from __future__ import annotations

import json

import pytest

from coderag.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, encoder_model, local_llm):
    """One tiny main job; the session fixtures make sure the models are loaded once."""
    out = tmp_path_factory.mktemp("main") / "run"
    code = main(["run", "--n-records", "150", "--n-eval", "2", "--max-new-tokens", "48",
                 "--out-dir", str(out), "--question", "How many patients are there?"])
    return code, out


def test_main_job_writes_index_and_results(tiny_run, capsys):
    code, out = tiny_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["corpus"]["records"] == 150
    assert results["corpus"]["unique_schemas"] + results["corpus"]["duplicates_dropped"] == 150
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"):
        assert 0.0 <= results["retrieval"][key] <= 1.0
    # The builtin questions name their domain's entities: the real encoder must find most own schemas.
    assert results["retrieval"]["recall@10"] > 0.5
    assert results["generation"]["n"] == 2 and results["baseline_no_retrieval"]["n"] == 2
    assert 0.0 <= results["generation"]["ex"] <= 1.0
    assert results["sample"]["question"] == "How many patients are there?"
    assert len(results["sample"]["snippets"]) == 3
    assert (out / "index" / "manifest.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_ask_answers_from_the_built_index(tiny_run, capsys):
    _, out = tiny_run
    code = main(["ask", "How many patients are there?", "--index", str(out / "index"), "--json",
                 "--max-new-tokens", "48", "-k", "2"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["snippets"]) == 2
    assert answer["snippets"][0]["score"] >= answer["snippets"][1]["score"]
    assert isinstance(answer["sql"], str)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("coderag: error: ")
    return err[0]


def test_empty_question_is_one_clear_line(tiny_run, capsys):
    _, out = tiny_run
    assert main(["ask", "   ", "--index", str(out / "index")]) == 2
    assert "question" in _one_error_line(capsys).lower()


def test_missing_index_is_one_clear_line(tmp_path, capsys):
    assert main(["ask", "How many rows?", "--index", str(tmp_path / "nope")]) == 2
    assert "index" in _one_error_line(capsys).lower()


def test_corrupt_index_is_one_clear_line(tiny_run, tmp_path, capsys):
    import shutil

    _, out = tiny_run
    broken = tmp_path / "index"
    shutil.copytree(out / "index", broken)
    (broken / "sql_rag_faiss_index.bin").write_bytes(b"not a faiss index")
    assert main(["ask", "How many rows?", "--index", str(broken)]) == 2
    assert "index" in _one_error_line(capsys).lower()


def test_corpus_with_missing_columns_fails_before_writing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "sql_prompt": "q", "sql": "SELECT 1"}) + "\n")
    out = tmp_path / "out"
    assert main(["run", "--corpus", str(bad), "--out-dir", str(out), "--n-eval", "1"]) == 2
    line = _one_error_line(capsys)
    assert "sql_context" in line
    assert not out.exists() or not any(out.iterdir())


def test_bad_setting_is_one_clear_line(tmp_path, capsys):
    assert main(["run", "-k", "0", "--out-dir", str(tmp_path / "o")]) == 2
    assert "k" in _one_error_line(capsys)

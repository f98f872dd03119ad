"""The main job end to end on a tiny config (real encoder, FAISS, SQLite, SmolLM2) and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from expected import brute_force_retrieval

from coderag.cli import main
from coderag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT


@pytest.fixture(scope="module", autouse=True)
def shared_local_llm(local_llm):
    """The CLI's default local generator is the session's loaded SmolLM2 (a fresh GGUF load costs ~50 s on
    2 cores per command); what the settings ask for is still checked: the default local model, nothing else.
    ``make_generator`` itself is tested in test_generation.py."""
    import coderag.cli.run as run_cli

    asked = []

    def make_generator(settings):
        asked.append(settings)
        assert settings.llm_backend == "local" and not settings.llm_model, settings
        return local_llm

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_cli, "make_generator", make_generator)
        yield asked


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, encoder_model, shared_local_llm):
    """One tiny main job; the session fixtures make sure the models are loaded once."""
    out = tmp_path_factory.mktemp("main") / "run"
    code = main(["run", "--n-records", "150", "--n-eval", "2", "--max-new-tokens", "48",
                 "--out-dir", str(out), "--question", "How many patients are there?"])
    return code, out


def _brute_force_retrieval(index_dir, encoder_model) -> dict[str, float]:
    """The tiny run's retrieval metrics from scratch: numpy dot products over the same corpus."""
    from coderag.corpus import dedupe_schemas, load_corpus

    records = load_corpus("builtin", limit=150, seed=0)
    corpus = dedupe_schemas(records)
    weight = json.loads((Path(index_dir) / "manifest.json").read_text())["lexical_weight"]
    assert weight == DEFAULT_LEXICAL_WEIGHT  # the main job ranks as it serves: hybrid at the default weight
    return brute_force_retrieval(encoder_model, corpus.snippets, [r["sql_prompt"] for r in records],
                                 corpus.record_to_snippet, weight)


class GoldGenerator:
    """Answers every prompt with the gold SQL of the question it carries (or a wrong constant)."""

    def __init__(self, gold: dict[str, str], wrong: bool = False):
        self.gold, self.wrong = gold, wrong

    def complete(self, messages, *, max_tokens=128, temperature=0.0):
        prompt = messages[-1]["content"]
        sql = "SELECT 42 AS wrong" if self.wrong else next(
            (sql for q, sql in self.gold.items() if q in prompt), "SELECT 42 AS wrong")
        return f"```sql\n{sql}\n```"


@pytest.mark.parametrize(("wrong", "expected_ex"), [(False, 1.0), (True, 0.0)])
def test_main_job_scores_ex_of_what_the_generator_wrote(tmp_path, encoder_model, wrong, expected_ex):
    """EX is the main job's own scoring of the generator's SQL: gold SQL scores 1.0, a wrong constant 0.0."""
    from coderag.corpus import load_corpus
    from coderag.pipeline.main_job import run_main_job

    gold = {r["sql_prompt"]: r["sql"] for r in load_corpus("builtin", limit=60, seed=0)}
    report = run_main_job(corpus_source="builtin", n_records=60, encoder=None, out_dir=tmp_path, k=3, n_eval=4,
                          question="How many patients are there?",
                          generator_factory=lambda: GoldGenerator(gold, wrong))
    assert report.generation["n"] == 4 and report.generation["ex"] == expected_ex
    assert report.baseline["ex"] == expected_ex  # the no-retrieval baseline runs on each question's own database
    assert json.loads((tmp_path / "results.json").read_text())["generation"]["ex"] == expected_ex


def test_main_job_writes_index_and_results(tiny_run, capsys, encoder_model):
    code, out = tiny_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["corpus"]["records"] == 150
    assert results["corpus"]["unique_schemas"] + results["corpus"]["duplicates_dropped"] == 150
    expected = _brute_force_retrieval(out / "index", encoder_model)
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10"):
        assert results["retrieval"][key] == pytest.approx(expected[key], abs=1e-3), key
    # The builtin questions name their domain's entities: the real encoder must find most own schemas.
    assert results["retrieval"]["recall@10"] > 0.5
    assert results["generation"]["n"] == 2 and results["baseline_no_retrieval"]["n"] == 2
    generation = results["generation"]
    assert generation["ex"] * 2 == int(generation["ex"] * 2)  # 0, 1 or 2 correct of 2
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
    missing = tmp_path / "nope"
    assert main(["ask", "How many rows?", "--index", str(missing)]) == 2
    assert _one_error_line(capsys) == (f"coderag: error: index directory {missing} does not exist: "
                                       f"build one with `coderag index build --out {missing}`")


def test_corrupt_index_is_one_clear_line(tiny_run, tmp_path, capsys):
    import shutil

    _, out = tiny_run
    broken = tmp_path / "index"
    shutil.copytree(out / "index", broken)
    (broken / "sql_rag_faiss_index.bin").write_bytes(b"not a faiss index")
    assert main(["ask", "How many rows?", "--index", str(broken)]) == 2
    line = _one_error_line(capsys)
    assert "sql_rag_faiss_index.bin" in line and "checksum" in line and "coderag index build" in line, line


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
    assert _one_error_line(capsys) == ("coderag: error: invalid setting k: Input should be greater than or equal "
                                       "to 1 (flag --k or CODERAG_K)")

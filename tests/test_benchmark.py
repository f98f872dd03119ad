"""`coderag evaluate`: a benchmark in Spider's layout or gretel records, scored as the field scores it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from expected import expected_status

from coderag.cli import main
from coderag.errors import ConfigError
from coderag.evaluation.benchmark import (
    evaluate_benchmark,
    evaluate_modes,
    load_gretel_benchmark,
    load_spider_benchmark,
    read_predictions,
)

ROW_FIELDS = {"db_id", "question", "gold", "pred", "ex", "em", "hardness", "status"}


class ScriptedGenerator:
    """An SQL generator that answers from a script (question -> SQL); counts its prompts' schemas."""

    def __init__(self, script: dict[str, str]):
        self.script, self.schema_counts = script, []

    def complete(self, messages, *, max_tokens=128, temperature=0.0) -> str:
        prompt = messages[-1]["content"]
        self.schema_counts.append(prompt.count("CREATE TABLE"))
        sql = next((sql for q, sql in self.script.items() if q in prompt), "SELECT 1")
        return f"```sql\n{sql}\n```"


@pytest.fixture(scope="module")
def spider_small(spider_dir: Path, tmp_path_factory) -> Path:
    """A Spider-layout benchmark of 12 dev questions over 2 real databases (concert_singer, poker_player) (its own questions file)."""
    dev = json.loads((spider_dir / "dev.json").read_text())
    picked = [q for q in dev if q["db_id"] == "concert_singer"][:8] + [q for q in dev if q["db_id"] == "poker_player"][:4]
    path = tmp_path_factory.mktemp("bench") / "questions.json"
    path.write_text(json.dumps(picked))
    return path


def test_gold_predictions_score_one_on_all_of_spider_dev(spider_dir, tmp_path, capsys):
    dev = json.loads((spider_dir / "dev.json").read_text())
    gold = tmp_path / "gold.sql"
    gold.write_text("".join(" ".join(q["query"].split()) + "\t" + q["db_id"] + "\n" for q in dev))
    out = tmp_path / "out"
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--predictions", str(gold), "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == len(dev) == 493
    assert summary["ex"] == summary["em"] == summary["em_semantic"] == 1.0
    assert {h: g["n"] for h, g in summary["by_hardness"].items()} == {"easy": 124, "medium": 226, "hard": 87,
                                                                      "extra": 56}
    rows = [json.loads(line) for line in (out / "per_question.jsonl").read_text().splitlines()]
    assert len(rows) == 493 and set(rows[0]) >= ROW_FIELDS
    assert [r["question"] for r in rows] == [q["question"] for q in dev]
    assert {r["status"] for r in rows} == {"ok"}
    assert (out / "summary.json").is_file() and (out / "report.md").is_file()


def test_predictions_that_differ_get_the_test_suite_verdict(spider_dir, spider_small, tmp_path):
    bench = load_spider_benchmark(spider_dir, spider_small)
    gold = [q.gold for q in bench.questions]
    assert gold[0] == "SELECT count(*) FROM singer"
    preds = list(gold)
    preds[0] = "SELECT count(*) FROM singer WHERE age > 30"           # WHERE changes the result: 0
    preds[1] = "SELECT count(*) FROM singer LIMIT 0"                   # LIMIT changes the result: 0
    q2 = bench.questions[2].gold                                       # "SELECT name ,  country ,  age FROM singer ORDER BY age DESC"
    assert "ORDER BY age DESC" in q2
    preds[2] = q2.replace("DESC", "ASC")                               # gold orders: direction counts: 0
    preds[3] = "SELECT DISTINCT " + bench.questions[3].gold[len("SELECT "):]  # DISTINCT added, same rows: 1
    q4 = bench.questions[4].gold
    assert q4.startswith("SELECT avg(age) ,  min(age) ,  max(age) FROM singer")
    preds[4] = q4.replace("avg(age) ,  min(age) ,  max(age)", "max(age), avg(age), min(age)")  # column order: 1
    result = evaluate_benchmark(bench, predictions=preds)
    assert [r.ex for r in result.rows[:5]] == [False, False, False, True, True]
    assert [r.em for r in result.rows[:5]] == [False, False, False, False, False]
    strict = evaluate_benchmark(bench, predictions=preds, ex_mode="strict")
    assert [r.ex for r in strict.rows[:5]] == [False, False, False, True, False]  # strict: column order counts
    assert all(r.ex for r in result.rows[5:]) and result.summary["n"] == 12


def test_predictions_file_must_cover_every_question(tmp_path):
    path = tmp_path / "p.sql"
    path.write_text("SELECT 1\nSELECT 2\n")
    assert read_predictions(path, 2) == ["SELECT 1", "SELECT 2"]
    with pytest.raises(ConfigError, match="2 lines but 3 questions"):
        read_predictions(path, 3)


def test_schemas_modes_prompt_with_retrieved_gold_or_no_schemas(spider_dir, spider_small, encoder_model, tmp_path):
    bench = load_spider_benchmark(spider_dir, spider_small)
    script = {q.question: q.gold for q in bench.questions[:6]}
    generator = ScriptedGenerator(script)
    results = evaluate_modes(bench, ["retrieved", "oracle", "none"], encoder_model=encoder_model,
                             generator=generator, k=2)
    assert generator.schema_counts[:12] and all(c >= 2 for c in generator.schema_counts[:12])  # top-2 dbs
    assert generator.schema_counts[24:] == [0] * 12                                             # none
    for mode, result in results.items():
        assert [r.ex for r in result.rows] == [True] * 6 + [False] * 6, mode
        assert result.summary["ex"] == 0.5 and result.summary["schemas"] == mode
    retrieval = results["retrieved"].summary["retrieval"]
    assert set(retrieval) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    rows = results["retrieved"].rows
    assert all(r.gold_rank is None or 1 <= r.gold_rank <= 10 for r in rows)
    assert retrieval["recall@10"] == sum(r.gold_rank is not None for r in rows) / len(rows)

    from coderag.evaluation.report import write_benchmark_report

    files = write_benchmark_report(results, tmp_path / "report")
    for name in ("recall_at_k.png", "ex_by_hardness.png", "top1_scores.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = files["report"].read_text()
    assert "| retrieved | 12 | 0.500 |" in text and "![EX by hardness](ex_by_hardness.png)" in text
    row = json.loads((tmp_path / "report" / "per_question.jsonl").read_text().splitlines()[0])
    assert set(row["by_schemas"]) == {"retrieved", "oracle", "none"}


def test_gretel_records_are_scored_on_their_own_context(training_records):
    bench = load_gretel_benchmark(training_records[:6], corpus_records=training_records)
    preds = [r["sql"] for r in training_records[:6]]
    preds[1] = "SELECT 42"
    result = evaluate_benchmark(bench, predictions=preds)
    assert [r.ex for r in result.rows] == [True, False, True, True, True, True]
    by_complexity = result.summary["by_sql_complexity"]
    assert sum(g["n"] for g in by_complexity.values()) == 6
    assert set(by_complexity) == {r["sql_complexity"] for r in training_records[:6]}


def test_guard_refuses_a_write_prediction_even_when_scoring_given_sql(spider_dir, spider_small):
    bench = load_spider_benchmark(spider_dir, spider_small).limit(1)
    result = evaluate_benchmark(bench, predictions=["DELETE FROM singer"])
    assert result.rows[0].status == "guard_refused" and not result.rows[0].ex


def test_bad_benchmark_inputs_are_one_line(tmp_path, capsys, spider_dir):
    assert main(["evaluate", "--spider-dir", str(tmp_path)]) == 2
    assert "not a Spider directory" in capsys.readouterr().err
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps([{"db_id": "concert_singer"}]))
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--questions-file", str(bad),
                 "--predictions", str(bad)]) == 2
    assert "lacks a db_id, question or query" in capsys.readouterr().err
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--schemas", "gold"]) == 2
    assert "invalid setting schemas" in capsys.readouterr().err


def test_real_generator_end_to_end_on_three_questions(spider_dir, spider_small, tmp_path, capsys, local_llm,
                                                      monkeypatch):
    """The shipped path: real encoder, real SmolLM2 (batched), real Spider databases.

    The CLI gets the session's already-loaded SmolLM2 (loading the GGUF again costs ~50 s on 2 cores);
    ``make_generator`` building it from the settings is tested in test_generation.py.
    """
    import coderag.generation.llm

    made = []
    monkeypatch.setattr(coderag.generation.llm, "make_generator", lambda s: made.append(s) or local_llm)
    out = tmp_path / "ev"
    assert main(["evaluate", "--spider-dir", str(spider_dir), "--questions-file", str(spider_small),
                 "--limit", "3", "--schemas", "oracle", "--max-new-tokens", "48", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "per_question.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["schemas"] == "oracle" and r["pred"] is not None for r in rows)
    for r in rows:
        database = str(spider_dir / "database" / r["db_id"] / f"{r['db_id']}.sqlite")
        assert r["status"] == expected_status(r["pred"], r["ex"], database), r
    assert "EX by hardness" in capsys.readouterr().out
    assert [(s.llm_backend, s.max_new_tokens) for s in made] == [("local", 48)]


def test_ask_runs_guarded_sql_read_only_on_a_database_file(tmp_path, capsys, monkeypatch):
    import coderag.cli.run as run_cli

    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE orders (id INTEGER, total REAL); INSERT INTO orders VALUES (1, 2.5), (2, 4.0);")
    conn.commit()
    conn.close()
    index_dir = tmp_path / "index"
    assert main(["index", "build", "--n-records", "40", "--out", str(index_dir), "--no-progress"]) == 0
    capsys.readouterr()
    replies = iter(["```sql\nSELECT id, total FROM orders ORDER BY id\n```", "```sql\nDELETE FROM orders\n```"])
    monkeypatch.setattr(run_cli, "make_generator", lambda s: ScriptedReply(replies))
    questions = tmp_path / "q.txt"
    questions.write_text("Which orders are there?\n\nDelete every order\n")
    assert main(["ask", "--index", str(index_dir), "--db", str(db), "--questions-file", str(questions)]) == 0
    out = capsys.readouterr().out
    assert "rows (2):\n1\t2.5\n2\t4.0" in out
    assert "SQL (refused:" in out and out.count("Q: ") == 2
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    assert main(["ask", "q?", "--index", str(index_dir), "--db", str(tmp_path / "absent.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


class ScriptedReply:
    def __init__(self, replies):
        self.replies = replies

    def complete(self, messages, *, max_tokens=128, temperature=0.0):
        return next(self.replies)

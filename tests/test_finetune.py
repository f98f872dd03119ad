"""Fine-tuning: split by domain, a tiny end-to-end run with the real encoder, the CLI's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from coderag.cli import main as cli_main
from coderag.errors import ConfigError, CorpusError
from coderag.evaluation.ranking import RetrievalEvaluator
from coderag.training.finetune import finetune_encoder, train_encoder
from coderag.training.heldout import split_by_domain
from coderag.training.synthesis import synthesize_pairs


def test_split_by_domain_holds_out_whole_domains(training_records):
    train, held_out = split_by_domain(training_records, eval_fraction=0.34, seed=1)
    assert {r["domain"] for r in train}.isdisjoint({r["domain"] for r in held_out})
    assert len(train) + len(held_out) == len(training_records) and len({r["domain"] for r in held_out}) == 3
    assert split_by_domain(training_records, 0.34, seed=1) == (train, held_out)
    with pytest.raises(ConfigError):
        split_by_domain(training_records, eval_fraction=1.0)
    with pytest.raises(CorpusError, match="2 domains"):
        split_by_domain([dict(r, domain="one") for r in training_records])


def test_evaluator_corpus_holds_every_unique_snippet(training_records, encoder_model):
    train, held_out = split_by_domain(training_records, 0.34, seed=0)
    evaluator = RetrievalEvaluator(held_out, train)
    assert evaluator.info == {"queries": len(held_out), "corpus": 6}
    metrics = evaluator(encoder_model)
    assert set(metrics) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "cosine_recall@1",
                            "cosine_mrr@10"}
    assert 0.0 <= metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"] == 1.0


def test_tiny_finetune_lowers_loss_and_saves_a_reloadable_model(training_records, tmp_path):
    train, held_out = split_by_domain(training_records, 0.34, seed=0)
    synthesize_pairs(train, tmp_path / "pairs", categories=("text2code", "hybrid"), show_progress=False)
    pairs = Dataset.load_from_disk(str(tmp_path / "pairs"))
    out = tmp_path / "model"
    report = finetune_encoder(pairs, held_out, out, corpus_records=train, batch_size=8, max_steps=5, learning_rate=1e-4,
                              max_seq_length=64, show_progress=False)
    assert report["loss_after"] < report["loss_before"]
    assert report["training"]["steps"] == 5 and report["train_size"] == len(pairs)
    assert set(report["before"]) == set(report["after"]) == {"recall@1", "recall@5", "recall@10", "mrr@10",
                                                             "cosine_recall@1", "cosine_mrr@10",
                                                             "ndcg@10"}
    card = (out / "README.md").read_text()
    assert "Held-out retrieval" in card and str(len(pairs)) in card and "MultipleNegativesRankingLoss" in card
    assert json.loads((out / "training_report.json").read_text())["after"] == report["after"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]
    reloaded = SentenceTransformer(str(out), device="cpu")
    vectors = reloaded.encode(["How many orders per city?"], normalize_embeddings=True)
    assert vectors.shape == (1, 384) and np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-4)


def test_cached_loss_trains_with_hard_negative_columns(training_records, tmp_path):
    from coderag.retrieval.encoder import load_encoder

    rows = {"anchor": [r["sql_prompt"] for r in training_records[:8]],
            "positive": [r["sql"] for r in training_records[:8]],
            "negative_1": [r["sql"] for r in training_records[8:16]]}
    model = load_encoder(None, device="cpu")
    model.max_seq_length = 32
    stats = train_encoder(model, Dataset.from_dict(rows), batch_size=4, max_steps=2, cached=True,
                          mini_batch_size=4, show_progress=False)
    assert stats["steps"] == 2 and stats["samples_per_s"] > 0 and np.isfinite(stats["train_loss"])


def test_training_that_runs_no_step_is_an_error_not_an_untouched_model(training_records):
    """One schema for every pair: no batch of 4 distinct texts exists, so no step can run."""
    from coderag.retrieval.encoder import load_encoder
    from coderag.training.artifacts import TrainingDataError

    rows = {"anchor": [r["sql_prompt"] for r in training_records[:8]], "positive": ["CREATE TABLE t (a INT);"] * 8}
    model = load_encoder(None, device="cpu")
    with pytest.raises(TrainingDataError, match=r"no training step ran: .* one batch of 4 pairs.*\(8 pairs hold"):
        train_encoder(model, Dataset.from_dict(rows), batch_size=4, max_steps=2, show_progress=False)


def test_cli_finetune_reports_a_missing_pairs_dataset(tmp_path, capsys):
    code = cli_main(["finetune", "--pairs", str(tmp_path / "absent"), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("coderag: error:") and "coderag synth" in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_spider_schema_retrieval_evaluator(spider_dir, encoder_model):
    """Real outside data: each Spider dev question against all 166 Spider database schemas."""
    from coderag.corpus.spider import load_spider

    data = load_spider(spider_dir, "dev")
    corpus = [{"sql_context": schema, "domain": db_id} for db_id, schema in data.schemas.items()]
    evaluator = RetrievalEvaluator(data.records, corpus, name="spider", max_queries=120)
    assert evaluator.info == {"queries": 120, "corpus": len(data.schemas)}
    metrics = evaluator(encoder_model)
    assert metrics["recall@10"] >= metrics["recall@1"] > 0.3


def test_outside_data_is_scored_before_and_after_training(training_records, spider_dir, tmp_path):
    """Spider (real schemas the synthetic corpus never saw) is scored in the same run as the held-out split."""
    from coderag.corpus.spider import load_spider

    train, held_out = split_by_domain(training_records, 0.34, seed=0)
    synthesize_pairs(train, tmp_path / "pairs", categories=("text2code",), show_progress=False)
    spider = load_spider(spider_dir, "dev")
    corpus = [{"sql_context": schema, "domain": db_id} for db_id, schema in spider.schemas.items()]
    report = finetune_encoder(Dataset.load_from_disk(str(tmp_path / "pairs")), held_out, tmp_path / "model",
                              corpus_records=train, batch_size=8, max_steps=2, max_seq_length=64,
                              max_eval_queries=40, outside_evals={"spider": (spider.records, corpus)},
                              show_progress=False)
    scores = report["outside"]["spider"]
    assert (scores["queries"], scores["corpus"]) == (40, len(spider.schemas))
    assert set(scores["before"]) == set(scores["after"]) == set(report["before"])
    assert scores["before"]["recall@1"] > 0.2  # the base model already finds real schemas
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"## Outside data: spider (40 questions, {len(spider.schemas)} schemas)" in card


def test_cli_finetune_refuses_a_spider_dir_that_is_not_one(tmp_path, capsys):
    from datasets import Dataset as HFDataset

    HFDataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]}).save_to_disk(str(tmp_path / "pairs"))
    capsys.readouterr()
    code = cli_main(["finetune", "--pairs", str(tmp_path / "pairs"), "--output", str(tmp_path / "m"),
                     "--n-records", "200", "--spider-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"coderag: error: {tmp_path} is not a Spider directory (no tables.json): " \
                                "point at the unpacked release."
    assert not (tmp_path / "m").exists()

"""Outside check on real Spider data (../shared): the same loader, index, retriever and EX scorer."""

from __future__ import annotations

import pytest

from coderag.evaluation.ranking import retrieval_metrics
from coderag.evaluation.sql_metrics import evaluate_text_to_sql
from coderag.retrieval.index import SchemaIndex
from coderag.retrieval.search import retrieve_schemas
from coderag.sql.execution import open_sqlite_readonly


@pytest.fixture(scope="module")
def spider_index(spider_dir, encoder_model):
    from coderag.corpus.spider import load_spider

    data = load_spider(spider_dir)
    db_ids = sorted(data.schemas)
    index = SchemaIndex.build(encoder_model, [data.schemas[d] for d in db_ids], domains=db_ids)
    return data, index, db_ids


def test_spider_schema_retrieval_among_all_166_databases(spider_index, encoder_model):
    data, index, db_ids = spider_index
    assert index.count == 166
    records = data.records[::5]  # ~100 dev questions over all 10 dev databases
    hits = retrieve_schemas(index, encoder_model, [r["sql_prompt"] for r in records], k=10)
    ranked = [[h.snippet_id for h in row] for row in hits]
    gold = [db_ids.index(r["domain"]) for r in records]
    metrics = retrieval_metrics(ranked, gold)
    # Base MiniLM finds the right database for most Spider questions; chance would be ~0.03 at 5.
    assert metrics["recall@5"] > 0.7, metrics
    assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"]


def test_spider_execution_accuracy_with_retrieved_schemas_and_the_real_llm(spider_index, encoder_model, local_llm):
    data, index, _ = spider_index
    records = [r for r in data.records if r["sql"].upper().startswith("SELECT COUNT(*) FROM")][:1]
    hits = retrieve_schemas(index, encoder_model, [r["sql_prompt"] for r in records], k=1)
    result = evaluate_text_to_sql(records, local_llm, [[h.text for h in row] for row in hits], max_tokens=32,
                                  conn_factory=lambda r: open_sqlite_readonly(data.db_paths[r["domain"]]),
                                  show_progress=False)
    agg = result["aggregate"]
    assert agg["n"] == 1 and agg["gold_failures"] == 0
    assert 0.0 <= agg["ex"] <= 1.0
    for row in result["rows"]:
        assert row["status"]  # every question was generated, guarded and scored with a reason

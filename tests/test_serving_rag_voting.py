"""The RAG endpoint with execution-guided voting and retrieved examples (n_candidates, examples)."""

from __future__ import annotations

import httpx
import pytest
from kserve.errors import InvalidInput
from serving_harness import ScriptedChatServer, start_service

from coderag.errors import ConfigError
from coderag.retrieval.examples import ExampleIndex, training_examples
from coderag.retrieval.index import SchemaIndex

MODEL = "coderag-rag"
CONTEXT = (
    "CREATE TABLE patients (patient_id INT PRIMARY KEY, name TEXT, ward TEXT); "
    "INSERT INTO patients VALUES (1, 'ann', 'a'), (2, 'bob', 'b'), (3, 'cy', 'a');"
)


def _post(service, body) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/models/{MODEL}:predict", json=body, timeout=120)


def test_rag_votes_over_n_candidates_with_examples_in_the_prompt(serving_index_dir, encoder_model,
                                                                 training_records, tmp_path):
    index = SchemaIndex.load(serving_index_dir)
    train, _ = training_examples(training_records, eval_fraction=0.34)
    index.examples = ExampleIndex.build(encoder_model, train)
    index_dir = index.save(tmp_path / "index")
    llm = ScriptedChatServer([
        ("```sql\nSELECT name FROM patients WHERE ward = 'a'\n```", -0.8),
        ("```sql\nSELECT name FROM patients WHERE patient_id IN (1, 3)\n```", -0.2),  # same rows, likelier
        ("```sql\nSELECT nme FROM patients\n```", -0.1),  # fails to execute: dropped, no repair
        "```sql\nSELECT name FROM patients ORDER BY patient_id\n```",  # the plain request's greedy reply
    ])
    service = start_service("rag", ["--index_dir", str(index_dir), "--llm_base_url", llm.url, "--llm_model",
                                    "scripted", "--sampling_temperature", "0.5"], tmp_path, model_name=MODEL)
    try:
        response = _post(service, {"question": "Which patients are in ward a?", "sql_context": CONTEXT,
                                   "n_candidates": 3, "examples": 2})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["sql"] == "SELECT name FROM patients WHERE patient_id IN (1, 3)"
        assert body["rows"] == [["ann"], ["cy"]] and body["repaired"] is False
        vote = body["vote"]
        assert (vote["n"], vote["chosen"], vote["votes"], vote["survivors"]) == (3, 1, 2, 2)
        assert [c["status"] for c in vote["candidates"]] == ["ok", "ok", "execution_failure"]
        assert [c["mean_logprob"] for c in vote["candidates"]] == [-0.8, -0.2, -0.1]
        assert len(body["examples"]) == 2 and {e["question"] for e in body["examples"]} <= {r["sql_prompt"]
                                                                                          for r in train}
        sent = llm.requests[0]
        assert (sent["n"], sent["temperature"], sent["logprobs"]) == (3, 0.5, True)  # one request for all three
        assert all(f"Question: {e['question']}" in sent["messages"][-1]["content"] for e in body["examples"])

        plain = _post(service, {"question": "List the patients.", "sql_context": CONTEXT})
        assert plain.status_code == 200 and "vote" not in plain.json() and "examples" not in plain.json()
        assert "n" not in llm.requests[1] and "Similar questions" not in llm.requests[1]["messages"][-1]["content"]
        assert len(llm.requests) == 2 and not llm.replies

        for bad, problem in (({"n_candidates": 0}, "n_candidates must be an integer between 1 and 8, got 0"),
                             ({"n_candidates": 9}, "n_candidates must be an integer between 1 and 8, got 9"),
                             ({"n_candidates": "3"}, "n_candidates must be an integer between 1 and 8, got '3'"),
                             ({"n_candidates": True}, "n_candidates must be an integer between 1 and 8, got True"),
                             ({"examples": 17}, "examples must be an integer between 0 and 16, got 17"),
                             ({"examples": -1}, "examples must be an integer between 0 and 16, got -1")):
            refused = _post(service, {"question": "Which patients?", **bad})
            assert refused.status_code == 400 and refused.json()["error"] == problem
        assert len(llm.requests) == 2  # refused before any generation
    finally:
        assert service.stop() == 0
        llm.close()


def test_examples_need_an_index_that_holds_them(built_schema_index, encoder_model):
    from serving.rag import RagModel
    from serving.retriever import RetrieverModel
    from serving.settings import RagSettings, RetrieverSettings

    def model(**values):
        retriever = RetrieverModel("r", RetrieverSettings.from_values(index_dir="unused"), index=built_schema_index,
                                   encoder_model=encoder_model)
        return RagModel(MODEL, RagSettings.from_values(index_dir="unused", llm_base_url="http://127.0.0.1:9/v1",
                                                       **values), retriever=retriever)

    with pytest.raises(InvalidInput, match="no question -> SQL examples"):
        model().parse_request({"question": "Which patients?", "examples": 1})
    assert model().parse_request({"question": "Which patients?"})["examples"] == 0
    with pytest.raises(ConfigError, match="holds no question -> SQL examples"):
        model(examples=2).load()
    with pytest.raises(ValueError, match="n_candidates 9 is larger than max_n_candidates 8"):
        RagSettings.from_values(index_dir="unused", n_candidates=9)

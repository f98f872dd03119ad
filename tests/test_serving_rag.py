"""The question -> SQL endpoint over real retriever and generator services (and in-process retrieval)."""

from __future__ import annotations

import asyncio

import httpx
from kserve import InferenceRESTClient, RESTConfig
from serving_harness import free_port, metric_value, scrape_metrics, start_service

from serving import metrics

MODEL = "coderag-rag"
CONTEXT = (
    "CREATE TABLE patients (patient_id INT PRIMARY KEY, name TEXT, ward TEXT); "
    "INSERT INTO patients VALUES (1, 'ann', 'a'), (2, 'bob', 'b'), (3, 'cy', 'a');"
)


def _ask(service, body, model=MODEL):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=180))
        try:
            return await client.infer(service.url, body, model_name=model)
        finally:
            await client._client.aclose()

    return asyncio.run(call())


def test_question_to_guarded_sql_with_snippets_and_timings(rag_service):
    # repair=false bounds the test to one generation; the repair loop itself is the core's (coderag.generation.answer).
    answer = _ask(
        rag_service,
        {"question": "How many patients are in each hospital ward?", "k": 2, "sql_context": CONTEXT, "repair": False},
    )
    assert answer["question"] == "How many patients are in each hospital ward?"
    assert len(answer["snippets"]) == 2 and answer["snippets"][0]["domain"] == "hospital"
    assert answer["snippets"][0]["score"] >= answer["snippets"][1]["score"]
    guard = answer["guard"]
    assert isinstance(guard["allowed"], bool) and guard["reason"].startswith(("allowed:", "refused:"))
    if guard["allowed"]:
        assert guard["statement_type"] in ("SELECT", "WITH", "UNION") and answer["sql"]
        # Executed against the provided schema: either rows or SQLite's error.
        assert answer["rows"] is not None or answer["execution_error"]
    assert answer["timings_ms"]["retrieve"] > 0 and answer["timings_ms"]["generate"] > 0
    assert "reply" in answer and answer["repaired"] is False


def test_rag_metrics_after_a_question(rag_service):
    _ask(rag_service, {"question": "Show the names of all patients."})
    samples = scrape_metrics(rag_service.url)
    for stage in ("retrieve", "generate"):
        assert metric_value(samples, f"{metrics.STAGE_LATENCY}_count", service="rag", stage=stage) > 0
    assert metric_value(samples, f"{metrics.TOP1_SCORE}_count", service="rag") > 0
    # Present (created at zero) even when every answer was allowed: metric_value raises KeyError otherwise.
    for name in (metrics.SQL_PARSE_FAILURES, metrics.GUARD_REFUSALS):
        metric_value(samples, name, service="rag")
    assert metric_value(samples, metrics.MODEL_INFO, service="rag", llm="coderag-generator") == 1
    assert metric_value(samples, metrics.REQUESTS, service="rag", route="v1_predict", code="200") >= 1


def test_generator_unreachable_is_503_with_retrieval_included(serving_index_dir, tmp_path):
    # In-process retrieval (index_dir) and a generator URL on which nothing listens.
    dead = f"http://127.0.0.1:{free_port()}/openai/v1"
    service = start_service(
        "rag",
        ["--index_dir", str(serving_index_dir), "--llm_base_url", dead, "--llm_timeout_s", "5"],
        tmp_path,
        model_name=MODEL,
    )
    try:
        response = httpx.post(
            f"{service.url}/v1/models/{MODEL}:predict",
            timeout=120,
            json={"question": "Which flights leave from each origin?", "k": 2},
        )
        assert response.status_code == 503
        body = response.json()
        # The client learns what failed, never the internal URL (the log has it).
        assert body["error"] == ("generator unavailable: the generator service cannot be reached: check "
                                 "--llm_base_url and that it is running")
        assert dead in service.log_tail(200)
        assert [s["rank"] for s in body["snippets"]] == [1, 2]
        assert body["snippets"][0]["domain"] == "aviation"
        assert "Traceback" not in response.text
        samples = scrape_metrics(service.url)
        assert metric_value(samples, metrics.GENERATOR_ERRORS, service="rag", kind="unavailable") == 1
        assert metric_value(samples, f"{metrics.STAGE_LATENCY}_count", service="rag", stage="embed") >= 1
    finally:
        assert service.stop() == 0


def test_retriever_unreachable_is_503(generator_service, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    service = start_service(
        "rag",
        ["--retriever_url", dead, "--llm_base_url", f"{generator_service.url}/openai/v1"],
        tmp_path,
        model_name=MODEL,
    )
    try:
        response = httpx.post(f"{service.url}/v1/models/{MODEL}:predict", json={"question": "hi there"}, timeout=60)
        assert response.status_code == 503
        assert response.json() == {
            "error": "the retriever service cannot be reached (ConnectError): "
            "check --retriever_url and that it is running",
            "question": "hi there",
            "snippets": [],
        }
    finally:
        service.stop()


def test_repair_guard_and_parse_paths_with_a_scripted_llm(serving_index_dir, tmp_path):
    """Replies chosen to take each path: repaired after an SQLite error, refused by the guard, unparseable."""
    from serving_harness import ScriptedChatServer

    llm = ScriptedChatServer([
        "```sql\nSELECT nme FROM patients\n```",  # SQLite: no such column -> one repair
        "Fixed:\n```sql\nSELECT name FROM patients ORDER BY patient_id\n```",
        "```sql\nDROP TABLE patients\n```",
        "```sql\nSELECT FROM WHERE (\n```",
    ])
    service = start_service(
        "rag",
        ["--index_dir", str(serving_index_dir), "--llm_base_url", llm.url, "--llm_model", "scripted"],
        tmp_path,
        model_name=MODEL,
    )
    try:
        repaired = _ask(service, {"question": "List the patients' names.", "sql_context": CONTEXT})
        assert repaired["repaired"] is True and repaired["execution_error"] is None
        assert repaired["sql"] == "SELECT name FROM patients ORDER BY patient_id"
        assert repaired["rows"] == [["ann"], ["bob"], ["cy"]] and repaired["timings_ms"]["repair"] > 0
        # The repair prompt carried the failed SQL and SQLite's complaint.
        assert "no such column: nme" in llm.requests[1]["messages"][-1]["content"]

        refused = _ask(service, {"question": "Remove the patients table.", "sql_context": CONTEXT})
        assert refused["guard"]["allowed"] is False and refused["guard"]["statement_type"] == "DROP"
        assert refused["rows"] is None and refused["repaired"] is False
        garbled = _ask(service, {"question": "Which patients?", "repair": False})
        assert garbled["guard"]["allowed"] is False and garbled["guard"]["reason"].startswith("refused:")

        samples = scrape_metrics(service.url)
        assert metric_value(samples, metrics.GUARD_REFUSALS, service="rag") == 1
        assert metric_value(samples, metrics.SQL_PARSE_FAILURES, service="rag") == 1
        assert metric_value(samples, metrics.EXECUTION_ERRORS, service="rag") == 0  # the repair succeeded
        assert metric_value(samples, f"{metrics.STAGE_LATENCY}_count", service="rag", stage="repair") == 1
        assert not llm.replies  # every scripted reply was used, none twice
    finally:
        assert service.stop() == 0
        llm.close()


def test_in_process_retriever_takes_its_settings_from_the_rag_settings_only(serving_index_dir, monkeypatch):
    """One settings object per service: a stray CODERAG_RETRIEVER_* variable must not reach the RAG endpoint."""
    from serving.rag import RagModel
    from serving.settings import RagSettings

    monkeypatch.setenv("CODERAG_RETRIEVER_MAX_BATCH_SIZE", "not-a-number")
    monkeypatch.setenv("CODERAG_RETRIEVER_MIN_SCORE", "0.99")
    model = RagModel(MODEL, RagSettings(index_dir=serving_index_dir, llm_base_url="http://127.0.0.1:9/v1", max_k=7, k=2))
    assert model.load() and model.local_retriever.ready
    retriever_settings = model.local_retriever.settings
    assert (retriever_settings.max_k, retriever_settings.k) == (7, 2)
    assert retriever_settings.min_score is None and retriever_settings.max_batch_size == 64
    model.stop()


def test_rag_can_load_in_the_background():
    from serving.entrypoints import build_service_parser, settings_from_args

    args = build_service_parser("rag").parse_args(["--index_dir", "/srv/index", "--background_load", "true"])
    assert settings_from_args("rag", args).background_load is True

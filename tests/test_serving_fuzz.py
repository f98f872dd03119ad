"""Property-based fuzzing (hypothesis) of the guard and of request bodies sent to the running services.

Properties: the guard never raises and never allows more than one statement or a write; a request body,
however malformed, gets a 2xx or a 4xx with a JSON error, never a 5xx, and the service stays ready.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_harness import ScriptedChatServer, start_service

from coderag.sql.guard import sql_guard
from coderag.sql.text import extract_sql, split_statements

WRITES = ["INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "DROP TABLE t", "CREATE TABLE x (a)",
          "ATTACH DATABASE 'x.db' AS x", "PRAGMA writable_schema = 1", "ALTER TABLE t ADD b", "VACUUM",
          "REPLACE INTO t VALUES (1)", "BEGIN", "DETACH x", "REINDEX"]
READS = ["SELECT a FROM t", "SELECT count(*) FROM t WHERE a > 1", "WITH c AS (SELECT 1 AS n) SELECT n FROM c",
         "SELECT a FROM t UNION SELECT 2", "SELECT x'ff00'"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_guard_never_raises_on_any_text(text):
    verdict = sql_guard(text)
    assert verdict.reason.startswith(("allowed: ", "refused: "))
    if verdict.allowed:
        assert len(split_statements(text)) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(READS + WRITES), min_size=1, max_size=4),
       st.sampled_from(["; ", ";\n", " ;  ", ";-- note\n"]), st.booleans())
def test_guard_allows_only_a_single_read(statements, separator, fenced):
    reply = separator.join(statements)
    sql = extract_sql(f"```sql\n{reply}\n```" if fenced else reply)
    verdict = sql_guard(sql)
    only_one_read = len(statements) == 1 and statements[0] in READS
    assert verdict.allowed is only_one_read, (sql, verdict)
    if len(statements) > 1 and sql:
        assert verdict.statement_type in ("MULTIPLE", "")


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.sampled_from(["(", "(SELECT "]))
def test_guard_survives_any_nesting(depth, opener):
    closer = ")"
    sql = "SELECT " + opener * depth + "1" + closer * depth
    verdict = sql_guard(sql)
    assert verdict.reason.startswith(("allowed: ", "refused: "))


# --- request bodies against running services -------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
RAG_FIELDS = st.fixed_dictionaries({}, optional={
    "question": st.text(max_size=60) | JSON_VALUES,
    "k": st.integers(min_value=-3, max_value=30) | JSON_VALUES,
    "sql_context": st.sampled_from(["CREATE TABLE t (a); INSERT INTO t VALUES (1);", "PRAGMA x", "CREATE TABLE ("])
    | st.text(max_size=60) | JSON_VALUES,
    "database": st.text(max_size=10) | JSON_VALUES,
    "repair": st.booleans() | JSON_VALUES,
    "n_candidates": st.integers(min_value=-1, max_value=20) | JSON_VALUES,
    "examples": st.integers(min_value=-1, max_value=20) | JSON_VALUES,
    "extra": JSON_VALUES,
})
V2_INPUT = st.fixed_dictionaries(
    {"name": st.sampled_from(["query", "k", "other"]) | st.text(max_size=8),
     "shape": st.lists(st.integers(min_value=-1, max_value=4), max_size=3),
     "datatype": st.sampled_from(["BYTES", "INT32", "INT64", "FP32", "BOOL", "junk"])},
    optional={"data": st.lists(st.text(max_size=20) | st.integers(-5, 50), max_size=4) | JSON_VALUES,
              "parameters": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)},
)


@pytest.fixture(scope="module")
def fuzz_rag(retriever_service, tmp_path_factory):
    llm = ScriptedChatServer({"": "```sql\nSELECT 1\n```"})  # the empty marker matches every question
    flags = ["--retriever_url", retriever_service.url, "--llm_base_url", llm.url, "--llm_model", "scripted",
             "--request_timeout_s", "10"]
    service = start_service("rag", flags, tmp_path_factory.mktemp("fuzz-logs"), model_name="coderag-rag")
    yield service
    service.stop()
    llm.close()


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str) and "Traceback" not in response.text


@FUZZ
@given(body=RAG_FIELDS | JSON_VALUES)
def test_rag_never_answers_5xx_to_any_json_body(fuzz_rag, body):
    _check(httpx.post(f"{fuzz_rag.url}/v1/models/coderag-rag:predict", content=json.dumps(body), timeout=30,
                      headers={"content-type": "application/json"}))


@FUZZ
@given(body=st.binary(max_size=200))
def test_rag_never_answers_5xx_to_any_bytes(fuzz_rag, body):
    _check(httpx.post(f"{fuzz_rag.url}/v1/models/coderag-rag:predict", content=body, timeout=30,
                      headers={"content-type": "application/json"}))


@FUZZ
@given(body=st.fixed_dictionaries({"instances": st.lists(
    st.fixed_dictionaries({}, optional={"query": st.text(max_size=40) | JSON_VALUES, "k": JSON_VALUES})
    | JSON_VALUES, max_size=3)}) | JSON_VALUES)
def test_retriever_v1_never_answers_5xx(retriever_service, body):
    _check(httpx.post(f"{retriever_service.url}/v1/models/coderag-retriever:predict", content=json.dumps(body),
                      timeout=30, headers={"content-type": "application/json"}))


@FUZZ
@given(body=st.fixed_dictionaries({"inputs": st.lists(V2_INPUT, max_size=3)},
                                  optional={"id": st.text(max_size=5), "parameters": JSON_VALUES}),
       binary=st.none() | st.binary(max_size=40))
def test_retriever_v2_never_answers_5xx(retriever_service, body, binary):
    header = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    content = header
    if binary is not None:  # the binary tensor extension: JSON header, then raw bytes
        content, headers["inference-header-content-length"] = header + binary, str(len(header))
    _check(httpx.post(f"{retriever_service.url}/v2/models/coderag-retriever/infer", content=content, timeout=30,
                      headers=headers))


def test_services_are_ready_after_the_fuzzing(fuzz_rag, retriever_service):
    for service in (fuzz_rag, retriever_service):
        assert httpx.get(f"{service.url}/v2/health/ready", timeout=10).json() == {"ready": True}

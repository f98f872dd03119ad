"""Bad input to every service -> HTTP 4xx with a JSON body that names the problem, never a traceback."""

from __future__ import annotations

import json

import httpx
import pytest

RETRIEVER_V1 = "/v1/models/coderag-retriever:predict"
RETRIEVER_V2 = "/v2/models/coderag-retriever/infer"
RAG = "/v1/models/coderag-rag:predict"
EXAMPLE = '{"instances": [{"query": "How many orders were placed in 2023?", "k": 5}]}'
EMPTY_QUESTION = "question is empty: ask a question in words, e.g. 'How many orders were placed in 2023?'"


def _q(**extra):
    return json.dumps({"instances": [{"query": "orders per customer", **extra}]}).encode()


def _v2(*inputs):
    return json.dumps({"inputs": list(inputs)}).encode()


QUERY = {"name": "query", "shape": [1], "datatype": "BYTES", "data": ["orders per customer"]}

# (path, raw body, expected status, expected "error" message)
RETRIEVER_CASES = [
    (RETRIEVER_V1, b'{"instances": [', 400, "request body is not valid JSON (Expecting value at line 1 column 16)"),
    (
        RETRIEVER_V1,
        b"\xff\xfe{}",
        400,
        "request body is not valid UTF-8 (byte 0xff at position 0): encode the JSON as UTF-8",
    ),
    (RETRIEVER_V1, b"", 400, "request body is empty: send a JSON object"),
    (RETRIEVER_V1, b"[1, 2]", 400, "request body must be a JSON object, got a JSON array"),
    (RETRIEVER_V1, b"{}", 400, f'request body lacks "instances": send {EXAMPLE}'),
    (
        RETRIEVER_V1,
        b'{"instances": {"query": "x"}}',
        400,
        '"instances" must be a list of {"query": ..., "k": ...} objects, got dict',
    ),
    (RETRIEVER_V1, b'{"instances": []}', 400, f'"instances" is empty: send at least one query, e.g. {EXAMPLE}'),
    (RETRIEVER_V1, b'{"instances": [{"k": 2}]}', 400, f'instances[0] lacks "query": send {EXAMPLE}'),
    (RETRIEVER_V1, b'{"instances": [{"query": "   "}]}', 400, f"instances[0].query: {EMPTY_QUESTION}"),
    (
        RETRIEVER_V1,
        json.dumps({"instances": [{"query": "x" * 2001}]}).encode(),
        400,
        "instances[0].query: question is 2001 characters long, the limit is 2000: shorten it",
    ),
    (
        RETRIEVER_V1,
        b'{"instances": [{"query": 5}]}',
        400,
        "instances[0].query: question must be text, got int: pass the question as a string",
    ),
    (RETRIEVER_V1, _q(k=0), 400, "instances[0].k must be an integer between 1 and 20, got 0"),
    (RETRIEVER_V1, _q(k=21), 400, "instances[0].k must be an integer between 1 and 20, got 21"),
    (RETRIEVER_V1, _q(k="3"), 400, "instances[0].k must be an integer between 1 and 20, got '3'"),
    (RETRIEVER_V1, _q(top=3), 400, "instances[0] has unknown field(s) top: only query and k are accepted"),
    (RETRIEVER_V2, b"{}", 400, "invalid request: inputs: Field required"),
    (RETRIEVER_V2, b'{"inputs": ', 400, "request body is not valid JSON (Expecting value at line 1 column 12)"),
    (
        RETRIEVER_V2,
        _v2({"name": "k", "shape": [1], "datatype": "INT32", "data": [3]}),
        400,
        "input 'query' is missing: send a BYTES input named 'query' with one question per element",
    ),
    (
        RETRIEVER_V2,
        _v2(QUERY, {"name": "k", "shape": [1], "datatype": "INT32", "data": [99]}),
        400,
        "k must be an integer between 1 and 20, got 99",
    ),
    (
        RETRIEVER_V2,
        _v2({**QUERY, "datatype": "INT32", "data": [1]}),
        400,
        "input 'query' must have datatype BYTES, got INT32",
    ),
    (RETRIEVER_V2, _v2({**QUERY, "data": [""]}), 400, f"query[0]: {EMPTY_QUESTION}"),
    # JSON's "\ud800" escape decodes to a lone surrogate the tokenizer cannot take; "\u0000" to NUL.
    (
        RETRIEVER_V2,
        _v2({**QUERY, "data": ["orders \ud800"]}),
        400,
        "query[0]: question is not valid Unicode (lone surrogate at position 7): send UTF-8 text",
    ),
    (
        RETRIEVER_V1,
        b'{"instances": [{"query": "orders\\u0000"}]}',
        400,
        "instances[0].query: question holds a NUL character: send plain text",
    ),
]

RAG_CASES = [
    (
        RAG,
        b'{"question": "x",',
        400,
        "request body is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 18)",
    ),
    (RAG, b"\xc3\x28", 400, "request body is not valid UTF-8 (byte 0xc3 at position 0): encode the JSON as UTF-8"),
    (
        RAG,
        b'{"k": 2}',
        400,
        'request body lacks "question": send {"question": "How many orders were placed in 2023?", "k": 3}',
    ),
    (RAG, b'{"question": ""}', 400, f"question: {EMPTY_QUESTION}"),
    (
        RAG,
        json.dumps({"question": "y" * 301}).encode(),
        400,
        "question: question is 301 characters long, the limit is 300: shorten it",
    ),
    (RAG, b'{"question": "orders?", "k": 50}', 400, "k must be an integer between 1 and 20, got 50"),
    (RAG, b'{"question": "orders?", "k": true}', 400, "k must be an integer between 1 and 20, got True"),
    (
        RAG,
        b'{"question": "orders?", "sql_context": "CREATE TABLE ("}',
        400,
        'sql_context: the sql_context does not build an SQLite database (near "(": syntax error): '
        "fix its CREATE TABLE / INSERT statements.",
    ),
    (
        RAG,
        b'{"question": "orders?", "sql_context": "ATTACH DATABASE \'/tmp/coderag-escape.db\' AS p"}',
        400,
        "sql_context: the sql_context does not build an SQLite database (it may only create tables and insert "
        "rows; ATTACH, DETACH and VACUUM INTO are refused): fix its CREATE TABLE / INSERT statements.",
    ),
    (
        RAG,
        b'{"question": "orders?", "execute": true}',
        400,
        "unknown field(s) execute: accepted fields are database, examples, k, n_candidates, question, repair, sql_context",
    ),
]


def _check(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": message}
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path, body, status, message", RETRIEVER_CASES)
def test_retriever_bad_input(retriever_service, path, body, status, message):
    response = httpx.post(
        retriever_service.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )
    _check(response, status, message)


@pytest.mark.parametrize("path, body, status, message", RAG_CASES)
def test_rag_bad_input(rag_service, path, body, status, message):
    response = httpx.post(
        rag_service.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )
    _check(response, status, message)


def test_unknown_model_is_404_json(retriever_service):
    response = httpx.post(f"{retriever_service.url}/v1/models/nope:predict", json={"instances": ["x"]}, timeout=30)
    assert response.status_code == 404 and response.json() == {"error": "Model with name nope does not exist."}


def test_openai_route_bad_json_uses_openai_error_shape(generator_service):
    response = httpx.post(
        f"{generator_service.url}/openai/v1/chat/completions",
        content=b"{oops",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "request body is not valid JSON "
            "(Expecting property name enclosed in double quotes at line 1 column 2)",
            "type": "invalid_request_error",
            "param": None,
            "code": 400,
        }
    }


def test_bad_requests_are_counted_by_status(retriever_service):
    from serving_harness import metric_value, scrape_metrics

    httpx.post(retriever_service.url + RETRIEVER_V1, content=b"[", timeout=30)
    samples = scrape_metrics(retriever_service.url)
    assert metric_value(samples, "coderag_requests_total", service="retriever", route="v1_predict", code="400") >= 1


@pytest.mark.parametrize("service_name, path, length, body, message", [
    ("retriever_service", RETRIEVER_V2, "abc", b'{"inputs": []}',
     "inference-header-content-length 'abc' must be the byte length of the JSON header at the start of the body "
     "(1 to 14)"),
    ("retriever_service", RETRIEVER_V2, "999", b'{"inputs": []}',
     "inference-header-content-length '999' must be the byte length of the JSON header at the start of the body "
     "(1 to 14)"),
    ("retriever_service", RETRIEVER_V2, "5", b'{"inputs": []}',
     "request body is not valid JSON (Unterminated string starting at at line 1 column 2)"),
    # Only v2 has the binary extension: elsewhere the header changes nothing and the body is checked.
    ("rag_service", RAG, "3", b'{"question": ', "request body is not valid JSON (Expecting value at line 1 column 14)"),
])
def test_binary_extension_header_is_checked_not_trusted(request, service_name, path, length, body, message):
    service = request.getfixturevalue(service_name)
    response = httpx.post(service.url + path, content=body, timeout=30,
                          headers={"content-type": "application/json", "inference-header-content-length": length})
    _check(response, 400, message)


@pytest.mark.parametrize("error, status", [
    ("QuestionError", 400), ("ConfigError", 400), ("GeneratorUnavailable", 503), ("SchemaIndexError", 503),
    ("EncoderError", 503), ("GenerationError", 502), ("CodeRAGError", 400),
])
def test_coderag_errors_map_to_statuses_through_the_handler(error, status):
    """Each CodeRAG error class, raised by a route, reaches the client with its status and message."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import coderag.errors
    from serving.errors import install_error_handlers, status_for

    exc = getattr(coderag.errors, error)(f"{error} happened at /srv/models/index")
    assert status_for(exc) == status
    app = FastAPI()
    install_error_handlers(app, "test")

    @app.post("/v1/models/m:predict")
    async def predict():
        raise exc

    response = TestClient(app).post("/v1/models/m:predict", json={"question": "x"})
    assert response.status_code == status
    assert response.json() == {"error": f"{error} happened at <path>"}  # never the server's paths

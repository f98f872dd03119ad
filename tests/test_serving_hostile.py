"""Hostile and careless input to the running services: every case is one request, answered with a clear
status and message, and the service is healthy after it (ready, and a normal request still answers 200).

The generated-SQL cases use a scripted OpenAI-compatible server: the marker in the question picks the
reply (``ScriptedChatServer``), so each case gets exactly the SQL it needs.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
import time

import httpx
import psutil
import pytest
from serving_harness import ScriptedChatServer, metric_value, scrape_metrics, start_service

from serving import metrics

RAG = "/v1/models/coderag-rag:predict"
RETRIEVER_V1 = "/v1/models/coderag-retriever:predict"
RETRIEVER_V2 = "/v2/models/coderag-retriever/infer"
CHAT = "/openai/v1/chat/completions"
BUDGET_S = 4
CONTEXT = "CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);"


def _fix(reason: str) -> str:
    return (f"sql_context: the sql_context does not build an SQLite database ({reason}): fix its "
            "CREATE TABLE / INSERT statements.")


REPLIES = {
    "Q-bytes": "```sql\nSELECT x'ff00' AS b, 'text' AS s\n```",
    "Q-deep": "```sql\nSELECT " + "(" * 60 + "1" + ")" * 60 + "\n```",
    "Q-huge": "```sql\nSELECT hex(zeroblob(50000000))\n```",
    "Q-wide": "```sql\nSELECT printf('%.600000c', 'a') FROM t\n```",
    "Q-multi": "SELECT count(*) FROM t; DROP TABLE t",
    "Q-hang": ScriptedChatServer.HANG,
    "Q-count": "```sql\nSELECT count(*) FROM t\n```",
    "Q-nocol": "```sql\nSELECT nme FROM t\n```",
    "Q-repair": "```sql\nSELECT nme FROM t\n```",
    "Q-repair (repair)": "```sql\nSELECT a FROM t ORDER BY a\n```",
    "Q-repdrop": "```sql\nSELECT nme FROM t\n```",
    "Q-repdrop (repair)": "```sql\nDROP TABLE t\n```",
}


@pytest.fixture(scope="module")
def scripted_llm():
    llm = ScriptedChatServer(REPLIES)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("registered") / "demo.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2), (3);")
    conn.close()
    return path


@pytest.fixture(scope="module")
def hostile_rag(retriever_service, scripted_llm, demo_db, tmp_path_factory):
    flags = ["--retriever_url", retriever_service.url, "--llm_base_url", scripted_llm.url, "--llm_model", "scripted",
             "--request_timeout_s", str(BUDGET_S), "--body_timeout_s", "2"]
    service = start_service("rag", flags, tmp_path_factory.mktemp("hostile-logs"), model_name="coderag-rag",
                            env={"CODERAG_RAG_DATABASES": f"demo={demo_db}"})
    yield service
    service.stop()


def _post(service, path: str, body, *, headers: dict | None = None, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(service.url + path, content=content, timeout=timeout,
                      headers={"content-type": "application/json", **(headers or {})})


def _assert_healthy(service, rag: bool = False) -> None:
    assert httpx.get(f"{service.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    if rag:
        answer = _post(service, RAG, {"question": "Q-count", "sql_context": CONTEXT})
        assert answer.status_code == 200 and answer.json()["rows"] == [[2]], answer.text


# (case, request body, expected status, expected subset of the JSON answer)
RAG_TABLE = [
    ("pragma heap limit", {"question": "Q-count", "sql_context": "PRAGMA hard_heap_limit=200000"}, 400,
     {"error": _fix("PRAGMA statements are refused in a context")}),
    ("pragma temp_store_directory", {"question": "Q-count", "sql_context": "PRAGMA temp_store_directory = '/tmp'"},
     400, {"error": _fix("PRAGMA statements are refused in a context")}),
    ("ten 100 MB zeroblobs", {"question": "Q-count", "sql_context": "CREATE TABLE z (b BLOB); "
                              + "INSERT INTO z VALUES (zeroblob(100000000)); " * 10}, 400,
     {"error": _fix("it builds a string or BLOB larger than 8388608 bytes")}),
    ("context growing without end", {"question": "Q-count", "sql_context": "CREATE TABLE z (x); WITH RECURSIVE c(x) AS "
                                     "(SELECT 1 UNION ALL SELECT x + 1 FROM c) INSERT INTO z SELECT randomblob(64) FROM c;"},
     400, {"error": _fix("it builds a database larger than 67108864 bytes")}),
    ("bytes in a result row", {"question": "Q-bytes", "sql_context": CONTEXT}, 200,
     {"rows": [["\\xff00", "text"]], "execution_error": None}),
    ("SQL nested 60 parentheses deep", {"question": "Q-deep", "k": 2}, 200,
     {"guard": {"allowed": False, "statement_type": "",
                "reason": "refused: the SQL is nested too deeply to parse (too many parentheses or subqueries)."},
      "rows": None}),
    ("generated hex(zeroblob(50 MB))", {"question": "Q-huge", "sql_context": CONTEXT, "repair": False}, 200,
     {"rows": None, "execution_error": "SQLite error: a value is larger than 8388608 bytes (string or blob too big)."}),
    ("result over the byte cap", {"question": "Q-wide", "sql_context": CONTEXT, "repair": False}, 200,
     {"rows": None, "execution_error": "the result is larger than 1048576 bytes: select fewer columns or add a LIMIT."}),
    ("a reply with two statements", {"question": "Q-multi", "sql_context": CONTEXT}, 200,
     {"sql": "SELECT count(*) FROM t; DROP TABLE t", "rows": None,
      "guard": {"allowed": False, "statement_type": "MULTIPLE",
                "reason": "refused: 2 statements (SELECT, DROP); only a single query may run."}}),
    ("repaired SQL that drops a table", {"question": "Q-repdrop", "sql_context": CONTEXT}, 200,
     {"sql": "DROP TABLE t", "repaired": True, "rows": None, "execution_error": None,
      "guard": {"allowed": False, "statement_type": "DROP",
                "reason": "refused: DROP is not a read-only query; only SELECT / WITH ... SELECT may run."}}),
    ("a generator that never answers", {"question": "Q-hang", "k": 2}, 503,
     {"error": f"generator unavailable: the generator did not answer within the request's budget of {BUDGET_S} s"}),
    ("a registered database", {"question": "Q-count", "database": "demo"}, 200, {"rows": [[3]]}),
    ("an unknown database", {"question": "Q-count", "database": "nope"}, 400,
     {"error": "database 'nope' is not registered here: use one of demo"}),
    ("context and database together", {"question": "Q-count", "database": "demo", "sql_context": CONTEXT}, 400,
     {"error": "send sql_context or database, not both"}),
    ("a string where repair wants a boolean", {"question": "Q-count", "repair": "yes"}, 400,
     {"error": "repair must be true or false, got 'yes'"}),
    ("an unknown field beside a valid question", {"question": "Q-count", "junk": 1}, 400,
     {"error": "unknown field(s) junk: accepted fields are database, examples, k, n_candidates, question, repair, "
               "sql_context"}),
]


def _subset(actual, expected) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            _subset(actual[key], value)
        else:
            assert actual[key] == value, (key, actual[key])


@pytest.mark.parametrize("case, body, status, expected", RAG_TABLE, ids=[c[0] for c in RAG_TABLE])
def test_rag_hostile_table(hostile_rag, case, body, status, expected):
    response = _post(hostile_rag, RAG, body)
    assert response.status_code == status, response.text
    answer = response.json()
    _subset(answer, expected)
    if status in (200, 503):
        assert len(answer["snippets"]) == body.get("k", 3)  # retrieval is kept, also on a 503
    assert "Traceback" not in response.text and "/tmp" not in response.text and "127.0.0.1" not in response.text
    _assert_healthy(hostile_rag, rag=True)


def test_slow_context_is_built_once_off_the_event_loop(hostile_rag):
    """A context that computes until the deadline: one 400 at the budget; liveness answers all along."""
    probes, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            try:
                probes.append(httpx.get(f"{hostile_rag.url}/v2/health/live", timeout=1.0).status_code)
            except httpx.HTTPError as exc:
                probes.append(type(exc).__name__)
            time.sleep(0.1)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        response = _post(hostile_rag, RAG, {"question": "Q-count", "repair": True, "sql_context":
                         "CREATE TABLE z (x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                         "SELECT count(*) FROM c;"})
    finally:
        stop.set()
        thread.join()
    assert response.status_code == 400
    assert response.json() == {"error": _fix("building it ran past the request's deadline")}
    assert len(probes) >= 10 and set(probes) == {200}, probes
    _assert_healthy(hostile_rag, rag=True)


def test_repair_runs_on_the_same_database_and_is_timed(hostile_rag):
    before = scrape_metrics(hostile_rag.url)
    answer = _post(hostile_rag, RAG, {"question": "Q-repair", "sql_context": CONTEXT}).json()
    assert answer["repaired"] is True and answer["rows"] == [[1], [2]] and answer["execution_error"] is None
    assert set(answer["timings_ms"]) == {"retrieve", "generate", "execute", "repair", "execute_repaired"}
    after = scrape_metrics(hostile_rag.url)
    count = f"{metrics.STAGE_LATENCY}_count"
    # Both executions (the failed one and the repaired one) are observed; the failure was repaired.
    assert metric_value(after, count, service="rag", stage="execute") - metric_value(
        before, count, service="rag", stage="execute") == 2
    assert metric_value(after, metrics.EXECUTION_ERRORS, service="rag") == metric_value(
        before, metrics.EXECUTION_ERRORS, service="rag")


def test_failed_execution_is_counted(hostile_rag):
    before = scrape_metrics(hostile_rag.url)
    answer = _post(hostile_rag, RAG, {"question": "Q-nocol", "sql_context": CONTEXT, "repair": False}).json()
    assert answer["execution_error"] == "SQLite error: no such column: nme" and answer["repaired"] is False
    after = scrape_metrics(hostile_rag.url)
    assert metric_value(after, metrics.EXECUTION_ERRORS, service="rag") - metric_value(
        before, metrics.EXECUTION_ERRORS, service="rag") == 1
    count = f"{metrics.STAGE_LATENCY}_count"
    assert metric_value(after, count, service="rag", stage="execute") - metric_value(
        before, count, service="rag", stage="execute") == 1


def test_memory_attacks_leave_the_server_rss_flat(hostile_rag):
    """Three zeroblob contexts at once: each is refused inside its worker; the server's RSS stays put."""
    server = psutil.Process(hostile_rag.process.pid)
    body = {"question": "Q-count", "sql_context": "CREATE TABLE z (b BLOB); "
            + "INSERT INTO z VALUES (zeroblob(100000000)); " * 10}
    _post(hostile_rag, RAG, body)  # warm-up: first-use allocations are not growth
    before = server.memory_info().rss
    results = []
    threads = [threading.Thread(target=lambda: results.append(_post(hostile_rag, RAG, body).status_code))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [400, 400, 400]
    grown = server.memory_info().rss - before
    assert grown < 20 * 2**20, f"server RSS grew by {grown / 2**20:.1f} MiB"
    _assert_healthy(hostile_rag, rag=True)


def _raw_http(port: int, head: str, body: bytes, *, read_timeout: float = 15) -> tuple[int, dict]:
    """Send ``head`` and ``body`` as they are (possibly less than Content-Length), return (status, JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def _head(path: str, length: int) -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}")


SERVICE_PATHS = [("retriever_service", RETRIEVER_V1), ("generator_service", CHAT), ("hostile_rag", RAG)]


@pytest.mark.parametrize("fixture, path", SERVICE_PATHS)
def test_every_service_refuses_deep_json_huge_numbers_and_huge_bodies(request, fixture, path):
    service = request.getfixturevalue(fixture)
    deep = _post(service, path, b'{"question": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert deep.status_code == 400
    assert json.dumps(deep.json()).count("request body nests arrays/objects deeper than 32 levels") == 1
    number = _post(service, path, b'{"question": ' + b"7" * 5000 + b"}")
    assert number.status_code == 400
    assert "request body holds the integer 777777777777...(5000 digits), outside the 64-bit range" in number.text
    # 50 MB announced with an unknown field: refused from its Content-Length, before the bytes are read.
    status, answer = _raw_http(service.port, _head(path, 50_000_000), b'{"junk": "' + b"x" * 1000)
    assert status == 413
    assert "request body is larger than 1048576 bytes: send a smaller request" in json.dumps(answer)
    assert httpx.get(f"{service.url}/v2/health/ready", timeout=10).json() == {"ready": True}


def test_half_sent_body_times_out_with_408(hostile_rag):
    status, answer = _raw_http(hostile_rag.port, _head(RAG, 100), b'{"question": ')
    assert status == 408
    assert answer == {"error": "the request body was not received within 2 s: send it whole and promptly"}
    _assert_healthy(hostile_rag, rag=True)


def _binary(elements: bytes, shape: int = 1) -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "query", "shape": [shape], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(elements)}}]}).encode()
    return header + elements, str(len(header))


BINARY_TABLE = [
    ("a length prefix past the end", struct.pack("<I", 100) + b"hello", 400,
     "input 'query': element 0 claims 100 bytes, only 5 remain"),
    ("a truncated length prefix", b"\x05\x00", 400, "input 'query': element 0 has a truncated 4-byte length prefix"),
    ("bytes that are not UTF-8", struct.pack("<I", 2) + b"\xff\xfe", 400, "input 'query': element 0 is not valid UTF-8"),
    ("fewer elements than the shape", struct.pack("<I", 2) + b"hi", 400,
     "input 'query': shape holds 2 elements, the binary data 1"),
]


@pytest.mark.parametrize("case, elements, status, message", BINARY_TABLE, ids=[c[0] for c in BINARY_TABLE])
def test_v2_binary_extension_is_checked(retriever_service, case, elements, status, message):
    body, length = _binary(elements, shape=2 if "fewer" in case else 1)
    response = _post(retriever_service, RETRIEVER_V2, body, headers={"inference-header-content-length": length})
    assert response.status_code == status and response.json() == {"error": message}
    _assert_healthy(retriever_service)


def test_v2_binary_extension_that_is_well_formed_is_answered(retriever_service):
    question = b"average order total per city"
    body, length = _binary(struct.pack("<I", len(question)) + question)
    response = _post(retriever_service, RETRIEVER_V2, body, headers={"inference-header-content-length": length,
                                                                      "content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"][0] == 1


def test_v2_shape_must_match_the_data(retriever_service):
    body = {"inputs": [{"name": "query", "shape": [3], "datatype": "BYTES", "data": ["orders per city"]}]}
    response = _post(retriever_service, RETRIEVER_V2, body)
    assert response.status_code == 400
    assert response.json() == {"error": "input 'query': shape [3] holds 3 elements but data has 1"}
    extra = _post(retriever_service, RETRIEVER_V2, {**body, "junk": True})
    assert extra.json() == {"error": "invalid request: unknown field(s) junk"}


def test_retriever_v1_refuses_unknown_top_level_fields(retriever_service):
    response = _post(retriever_service, RETRIEVER_V1, {"instances": ["orders"], "junk": "x" * 1000})
    assert response.status_code == 400
    assert response.json() == {"error": 'unknown field(s) junk: a v1 request holds only "instances"'}


def test_failed_index_load_is_503_without_paths_and_not_ready(tmp_path):
    missing = tmp_path / "secret-location" / "index"
    service = start_service("retriever", ["--index_dir", str(missing), "--background_load", "true"], tmp_path,
                            model_name="coderag-retriever", wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.post(f"{service.url}{RETRIEVER_V1}", json={"instances": ["orders"]}, timeout=10)
            if "still loading" not in answer.text or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert answer.status_code == 503
        ready = httpx.get(f"{service.url}/v2/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        for text in (answer.text, ready.text):
            assert "secret-location" not in text and str(tmp_path) not in text and "<path>" in text
        assert "secret-location" in service.log_tail(200)  # the operator still sees where
    finally:
        service.stop()


def test_client_errors_are_logged_in_one_line(hostile_rag):
    _post(hostile_rag, RAG, {"question": "Q-count", "k": 99})
    log = hostile_rag.log_tail(2000)
    assert "Traceback" not in log
    assert "refused InvalidInput: k must be an integer between 1 and 20, got 99" in log


def test_openapi_documents_the_request_models(hostile_rag, retriever_service):
    rag = httpx.get(f"{hostile_rag.url}/openapi.json", timeout=10).json()
    body = rag["paths"]["/v1/models/{model_name}:predict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RagRequest"}
    schema = rag["components"]["schemas"]["RagRequest"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["properties"]) == ["database", "examples", "k", "n_candidates", "question", "repair",
                                            "sql_context"]
    assert "hex" in rag["paths"]["/v1/models/{model_name}:predict"]["post"]["description"]
    retriever = httpx.get(f"{retriever_service.url}/openapi.json", timeout=10).json()
    assert retriever["components"]["schemas"]["V2InferenceRequest"]["additionalProperties"] is False


def test_client_contexts_can_be_turned_off(retriever_service, scripted_llm, demo_db, tmp_path):
    flags = ["--retriever_url", retriever_service.url, "--llm_base_url", scripted_llm.url, "--llm_model", "scripted",
             "--allow_sql_context", "false"]
    service = start_service("rag", flags, tmp_path, model_name="coderag-rag",
                            env={"CODERAG_RAG_DATABASES": f"demo={demo_db}"})
    try:
        refused = _post(service, RAG, {"question": "Q-count", "sql_context": CONTEXT})
        assert refused.status_code == 400
        assert refused.json() == {"error": 'this server does not accept sql_context: name a registered database '
                                           'with "database" (one of demo)'}
        answered = _post(service, RAG, {"question": "Q-count", "database": "demo"})
        assert answered.status_code == 200 and answered.json()["rows"] == [[3]]
    finally:
        service.stop()

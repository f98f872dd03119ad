"""Request validation and error responses shared by the CodeRAG servers.

KServe decodes a request body inside its route handlers and answers a body it cannot use with an opaque
500 (``TypeError : ...``) or FastAPI's 422. :class:`RequestGuardMiddleware` checks every inference body
first (non-empty, UTF-8, JSON, a JSON object) and answers HTTP 400 with a JSON body that names the
problem; :func:`install_error_handlers` maps FastAPI validation errors and
:class:`~coderag.errors.CodeRAGError` to 4xx/5xx JSON; an unexpected exception is logged with its
traceback and answered with a one-line 500, never with the traceback itself.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from coderag.errors import (
    CodeRAGError,
    ConfigError,
    EncoderError,
    GenerationError,
    GeneratorUnavailable,
    QuestionError,
    SchemaIndexError,
)
from serving import metrics

log = logging.getLogger(__name__)

# Route families whose POST bodies must be JSON objects.
_INFERENCE_PREFIXES = ("/v1/models/", "/v2/models/", "/openai/")
# KServe's binary tensor extension sends a JSON header followed by raw bytes: not a JSON body.
_BINARY_HEADER = b"inference-header-content-length"


def route_family(path: str) -> str:
    """A low-cardinality route label for metrics: v1_predict, v2_infer, openai, health, metrics, other."""
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "v1_predict"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_infer"
    if path.startswith("/openai/"):
        return "openai"
    if path == "/metrics":
        return "metrics"
    if path in ("/", "/v2/health/live", "/v2/health/ready") or path.startswith(("/v1/models", "/v2/models")):
        return "health"
    return "other"


def error_body(path: str, status: int, message: str) -> dict:
    """The JSON error body: KServe's ``{"error": msg}``; on /openai routes OpenAI's ``{"error": {"message": ...}}``."""
    if path.startswith("/openai/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}


def describe_json_problem(body: bytes) -> str | None:
    """Why ``body`` is not a usable JSON object, as one sentence; ``None`` when it is one."""
    if not body.strip():
        return "request body is empty: send a JSON object"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{body[exc.start]:02x} at position {exc.start}"
        return f"request body is not valid UTF-8 ({where}): encode the JSON as UTF-8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if not isinstance(value, dict):
        return f"request body must be a JSON object, got a JSON {_json_type(value)}"
    return None


def describe_binary_problem(body: bytes, header_length: str) -> str | None:
    """Why a v2 binary-extension body is unusable (its JSON header length or JSON part); ``None`` if fine."""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        return (f"inference-header-content-length {header_length!r} must be the byte length of the JSON "
                f"header at the start of the body (1 to {len(body)})")
    return describe_json_problem(body[:length])


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


class RequestGuardMiddleware:
    """ASGI middleware: 400 for unusable inference bodies, request counting, no tracebacks in responses."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = route_family(path)
        status = {"code": 500, "started": False}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        started = time.perf_counter()
        try:
            if scope.get("method") == "POST" and path.startswith(_INFERENCE_PREFIXES):
                body = await _read_body(receive)
                # KServe's binary tensor extension (v2 only): a JSON header of the given length, then raw bytes.
                binary = _header(scope, _BINARY_HEADER) if path.startswith("/v2/models/") else None
                problem = describe_json_problem(body) if binary is None else describe_binary_problem(body, binary)
                if problem is not None:
                    await _send_json(counting_send, HTTPStatus.BAD_REQUEST, error_body(path, 400, problem))
                    return
                receive = _replay(body)
            await self.app(scope, receive, counting_send)
        except Exception:  # noqa: BLE001 - the last line of defence: log it, answer one line
            log.exception("unhandled error service=%s path=%s", self.service, path)
            if not status["started"]:
                message = f"internal error in the {self.service} service: see the server log"
                await _send_json(counting_send, HTTPStatus.INTERNAL_SERVER_ERROR, error_body(path, 500, message))
        finally:
            metrics.requests_total.labels(service=self.service, route=route, code=str(status["code"])).inc()
            if route in ("v1_predict", "v2_infer", "openai"):
                metrics.stage_latency.labels(service=self.service, stage="total").observe(time.perf_counter() - started)


def _header(scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower-case bytes), or ``None`` when absent."""
    return next((value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name), None)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_json(send, status: int, content: dict) -> None:
    payload = json.dumps(content).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": int(status), "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class PartialResultError(Exception):
    """A request that failed part-way: answered with ``status`` and what was computed so far."""

    def __init__(self, status: int, message: str, partial: dict) -> None:
        super().__init__(message)
        self.status = status
        self.partial = partial


async def _partial_result_handler(request: Request, exc: PartialResultError) -> JSONResponse:
    log.warning("request failed part-way status=%d path=%s error=%s", exc.status, request.url.path, exc)
    return JSONResponse(
        status_code=exc.status, content={**error_body(request.url.path, exc.status, str(exc)), **exc.partial}
    )


def status_for(exc: CodeRAGError) -> int:
    """The HTTP status a CodeRAG error maps to: bad input 400, backend down 503, backend failure 502."""
    if isinstance(exc, (QuestionError, ConfigError)):
        return 400
    if isinstance(exc, (GeneratorUnavailable, SchemaIndexError, EncoderError)):
        return 503
    if isinstance(exc, GenerationError):
        return 502
    return 400


def _format_validation_error(exc: RequestValidationError) -> str:
    parts = []
    errors = list(exc.errors())
    # KServe's v2 route accepts Union[InferenceRequest, bytes]: the "not bytes" arm only repeats the problem.
    errors = [e for e in errors if tuple(e.get("loc", ()))[-1:] != ("bytes",)] or errors
    for err in errors[:5]:
        # Drop "body" and pydantic's union-member tags (class names) from the location.
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and not (isinstance(p, str) and p[:1].isupper())]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    message = _format_validation_error(exc)
    return JSONResponse(status_code=400, content=error_body(request.url.path, 400, message))


async def _coderag_error_handler(request: Request, exc: CodeRAGError) -> JSONResponse:
    status = status_for(exc)
    log.warning("request failed status=%d path=%s error=%s", status, request.url.path, exc)
    return JSONResponse(status_code=status, content=error_body(request.url.path, status, str(exc)))


def install_error_handlers(app: FastAPI, service: str) -> None:
    """Add the request guard and the CodeRAG error handlers to KServe's app (call before the server starts)."""
    app.add_middleware(RequestGuardMiddleware, service=service)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(CodeRAGError, _coderag_error_handler)
    app.add_exception_handler(PartialResultError, _partial_result_handler)

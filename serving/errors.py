"""Request validation and error responses shared by the CodeRAG servers.

KServe decodes a request body inside its route handlers and answers a body it cannot use with an opaque
500 (``TypeError : ...``) or FastAPI's 422. :class:`RequestGuardMiddleware` checks every inference body
first and answers with a JSON body that names the problem:

* 413 for a body over ``max_body_bytes`` (refused from its Content-Length, or as soon as the bytes read
  pass it), 408 for a body not received within ``body_timeout_s`` (slow or half-sent);
* 400 for a body that is empty, not UTF-8, not JSON, not a JSON object, nested deeper than
  ``MAX_JSON_DEPTH``, holding an integer outside 64 bits, or (v2) not a strict
  :class:`~serving.schemas.V2InferenceRequest` whose shapes match its data, including the binary
  tensor extension's length prefixes and UTF-8.

:func:`install_error_handlers` maps FastAPI validation errors and :class:`~coderag.errors.CodeRAGError`
to 4xx/5xx JSON; every 4xx is logged in one line; an unexpected exception is logged with its traceback
and answered with a one-line 500. Error bodies never carry a file path or an internal URL
(:func:`scrub`); the log has them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import struct
import time
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

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
from serving.schemas import V2InferenceRequest, first_problem, v2_shape_problem

log = logging.getLogger(__name__)

# Deeper JSON than this is refused before any parser recurses into it (no request needs more than ~5).
MAX_JSON_DEPTH = 32
_INT64_RANGE = (-(2**63), 2**64 - 1)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>()]+", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w.<>/-])/(?:[\w.@+-]+/)+[\w.@+-]*|(?<![\w.<>/-])/[\w.@+-]+\.[\w]+")
# Bytes per element of the v2 datatypes that have a fixed size (BYTES is length-prefixed).
_DTYPE_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
                "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8}


def scrub(message: str) -> str:
    """``message`` with URLs and absolute file paths replaced by ``<url>`` / ``<path>`` (for client bodies)."""
    return _PATH.sub("<path>", _URL.sub("<url>", message))

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


class _BadNumber(ValueError):
    pass


def _bounded_int(text: str) -> int:
    # Python refuses int() of more than 4300 digits with a ValueError json does not expect; 64 bits is
    # what every consumer here (orjson, numpy, pydantic) takes anyway.
    if len(text.lstrip("-")) > 20 or not _INT64_RANGE[0] <= int(text) <= _INT64_RANGE[1]:
        shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"
        raise _BadNumber(f"request body holds the integer {shown}, outside the 64-bit range")
    return int(text)


_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)


def _depth_problem(text: str) -> str | None:
    """Nesting deeper than MAX_JSON_DEPTH, counted without recursion (brackets inside strings ignored)."""
    depth = 0
    for ch in re.findall(r"[\[\]{}]", _JSON_STRING.sub('""', text)):
        depth += 1 if ch in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels"
    return None


def parse_json_object(body: bytes) -> tuple[dict | None, str | None]:
    """``(object, None)`` when ``body`` is a usable JSON object, else ``(None, why)`` in one sentence."""
    if not body.strip():
        return None, "request body is empty: send a JSON object"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{body[exc.start]:02x} at position {exc.start}"
        return None, f"request body is not valid UTF-8 ({where}): encode the JSON as UTF-8"
    problem = _depth_problem(text)
    if problem is not None:
        return None, problem
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        return None, f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except _BadNumber as exc:
        return None, str(exc)
    except RecursionError:
        return None, f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels"
    if not isinstance(value, dict):
        return None, f"request body must be a JSON object, got a JSON {_json_type(value)}"
    return value, None


def describe_json_problem(body: bytes) -> str | None:
    """Why ``body`` is not a usable JSON object, as one sentence; ``None`` when it is one."""
    return parse_json_object(body)[1]


def describe_v2_problem(value: dict) -> str | None:
    """Why a v2 inference request (JSON form) is unusable: strict model, shapes; ``None`` if fine."""
    try:
        request = V2InferenceRequest.model_validate(value)
    except ValidationError as exc:
        return f"invalid request: {first_problem(exc)}"
    return v2_shape_problem(request)


def describe_binary_problem(body: bytes, header_length: str) -> str | None:
    """Why a v2 binary-extension body is unusable (header length, JSON header, binary part); ``None`` if fine."""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        return (f"inference-header-content-length {header_length!r} must be the byte length of the JSON "
                f"header at the start of the body (1 to {len(body)})")
    header, problem = parse_json_object(body[:length])
    if problem is not None:
        return problem
    problem = describe_v2_problem(header)
    if problem is not None:
        return problem
    return _binary_part_problem(V2InferenceRequest.model_validate(header), body[length:])


def _binary_part_problem(request: V2InferenceRequest, data: bytes) -> str | None:
    offset = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                return f"input '{tensor.name}' has neither data nor parameters.binary_data_size"
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(data):
            return (f"input '{tensor.name}': binary_data_size {size!r} does not fit the {len(data) - offset} "
                    "bytes left after the JSON header")
        chunk, offset = data[offset : offset + size], offset + size
        count = math.prod(tensor.shape)
        if tensor.datatype == "BYTES":
            problem = _bytes_elements_problem(tensor.name, chunk, count)
            if problem is not None:
                return problem
        elif tensor.datatype in _DTYPE_BYTES and size != count * _DTYPE_BYTES[tensor.datatype]:
            return (f"input '{tensor.name}': shape {tensor.shape} of {tensor.datatype} needs "
                    f"{count * _DTYPE_BYTES[tensor.datatype]} bytes, binary_data_size is {size}")
    if offset != len(data):
        return f"the body holds {len(data) - offset} bytes after the JSON header that no input claims"
    return None


def _bytes_elements_problem(name: str, chunk: bytes, count: int) -> str | None:
    """BYTES tensors: each element is a 4-byte little-endian length, then that many UTF-8 bytes."""
    position, elements = 0, 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            return f"input '{name}': element {elements} has a truncated 4-byte length prefix"
        (size,) = struct.unpack_from("<I", chunk, position)
        if position + 4 + size > len(chunk):
            return f"input '{name}': element {elements} claims {size} bytes, only {len(chunk) - position - 4} remain"
        try:
            chunk[position + 4 : position + 4 + size].decode("utf-8")
        except UnicodeDecodeError:
            return f"input '{name}': element {elements} is not valid UTF-8"
        position, elements = position + 4 + size, elements + 1
    if elements != count:
        return f"input '{name}': shape holds {count} elements, the binary data {elements}"
    return None


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


class _BodyTooLarge(Exception):
    pass


class RequestGuardMiddleware:
    """ASGI middleware: body limits (413/408), 400 for unusable inference bodies, request counting.

    Requests to ``/metrics`` and the health probes are not counted in ``coderag_requests_total``: the
    error-rate alert and the dashboard's traffic panels are about client traffic, not scrapes.
    """

    def __init__(self, app, service: str, max_body_bytes: int = 1_048_576, body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

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

        async def refuse(code: int, message: str, headers: tuple = ()) -> None:
            log.warning("refused status=%d service=%s path=%s: %s", code, self.service, path, message)
            await _send_json(counting_send, code, error_body(path, code, message), headers)

        started = time.perf_counter()
        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                declared = _header(scope, b"content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                    await refuse(413, self._too_large(), ((b"connection", b"close"),))
                    return
                try:
                    body = await asyncio.wait_for(_read_body(receive, self.max_body_bytes), self.body_timeout_s)
                except _BodyTooLarge:
                    await refuse(413, self._too_large(), ((b"connection", b"close"),))
                    return
                except TimeoutError:
                    await refuse(408, f"the request body was not received within {self.body_timeout_s:g} s: "
                                      "send it whole and promptly", ((b"connection", b"close"),))
                    return
                if path.startswith(_INFERENCE_PREFIXES):
                    # Large bodies are parsed in a thread: the event loop keeps answering probes meanwhile.
                    if len(body) < 65536:
                        problem = self._problem(scope, path, body)
                    else:
                        problem = await asyncio.to_thread(self._problem, scope, path, body)
                    if problem is not None:
                        await refuse(400, problem)
                        return
                receive = _replay(body)
            await self.app(scope, receive, counting_send)
        except Exception:  # noqa: BLE001 - the last line of defence: log it, answer one line
            log.exception("unhandled error service=%s path=%s", self.service, path)
            if not status["started"]:
                message = f"internal error in the {self.service} service: see the server log"
                await _send_json(counting_send, HTTPStatus.INTERNAL_SERVER_ERROR, error_body(path, 500, message))
        finally:
            if route not in ("metrics", "health"):
                metrics.requests_total.labels(service=self.service, route=route, code=str(status["code"])).inc()
            if route in ("v1_predict", "v2_infer", "openai"):
                metrics.stage_latency.labels(service=self.service, stage="total").observe(time.perf_counter() - started)

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes: send a smaller request"

    def _problem(self, scope, path: str, body: bytes) -> str | None:
        # KServe's binary tensor extension (v2 only): a JSON header of the given length, then raw bytes.
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            binary = _header(scope, _BINARY_HEADER)
            if binary is not None:
                return describe_binary_problem(body, binary)
            value, problem = parse_json_object(body)
            return problem if problem is not None else describe_v2_problem(value)
        return describe_json_problem(body)


def _header(scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower-case bytes), or ``None`` when absent."""
    return next((value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name), None)


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
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


async def _send_json(send, status: int, content: dict, extra_headers: tuple = ()) -> None:
    payload = json.dumps(content).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               *extra_headers]
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
        status_code=exc.status, content={**error_body(request.url.path, exc.status, scrub(str(exc))), **exc.partial}
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
    log.warning("refused status=400 path=%s: %s", request.url.path, message)
    return JSONResponse(status_code=400, content=error_body(request.url.path, 400, message))


async def _coderag_error_handler(request: Request, exc: CodeRAGError) -> JSONResponse:
    status = status_for(exc)
    log.warning("request failed status=%d path=%s error=%s", status, request.url.path, exc)
    return JSONResponse(status_code=status, content=error_body(request.url.path, status, scrub(str(exc))))


class OneLineClientErrors(logging.Filter):
    """Turn KServe's ``logger.error("Exception:", exc_info=...)`` for client errors into one warning line.

    KServe logs every InvalidInput (HTTP 400) and every not-ready/not-found answer with a full traceback
    (~2 KB a request): a hostile client could fill the log with them. Server errors keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (InvalidInput, ModelNotFound, ModelNotReady)):
            record.msg, record.args = "refused %s: %s", (type(exc).__name__, exc)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_error_handlers(app: FastAPI, service: str, *, max_body_bytes: int = 1_048_576,
                           body_timeout_s: float = 10.0) -> None:
    """Add the request guard and the CodeRAG error handlers to KServe's app (call before the server starts)."""
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, OneLineClientErrors) for f in kserve_logger.filters):
        kserve_logger.addFilter(OneLineClientErrors())
    app.add_middleware(RequestGuardMiddleware, service=service, max_body_bytes=max_body_bytes,
                       body_timeout_s=body_timeout_s)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(CodeRAGError, _coderag_error_handler)
    app.add_exception_handler(PartialResultError, _partial_result_handler)

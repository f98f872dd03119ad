"""The local generator service: the offline transformers LLM behind the OpenAI chat route.

In the cluster the generator is vLLM behind KServe's Hugging Face runtime, which serves
``/openai/v1/chat/completions``; this service answers the same route and wire format locally, so
:class:`coderag.generation.llm.OpenAIChatGenerator` (and the ``openai`` client) talk to either unchanged.

KServe 0.21 ships ``OpenAIChatAdapterModel`` for this, but its request/response types import vLLM,
which is not installed on CPU hosts (and must not be); the route is therefore added to KServe's app
here, speaking the wire format of the ``openai`` package's types.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from coderag.config import MAX_CANDIDATES
from coderag.errors import CodeRAGError
from serving import metrics
from serving.errors import error_body
from serving.server import ServiceModel
from serving.settings import GeneratorSettings

log = logging.getLogger(__name__)
SERVICE = "generator"
CHAT_ROUTE = "/openai/v1/chat/completions"
MODELS_ROUTE = "/openai/v1/models"
_ROLES = ("system", "user", "assistant")


class ChatRequestError(ValueError):
    """A chat completion request that cannot be served as sent (HTTP 400)."""


class GeneratorModel(ServiceModel):
    """Holds a :class:`~coderag.generation.llm.LocalTransformersGenerator`; ready once it is loaded."""

    def __init__(self, name: str, settings: GeneratorSettings, *, generator=None) -> None:
        super().__init__(name)
        self.settings = settings
        self.generator = generator
        self.created = int(time.time())
        metrics.init_service_series(SERVICE)

    def load(self) -> bool:
        if self.generator is None:
            from coderag.generation.llm import LocalTransformersGenerator

            self.generator = LocalTransformersGenerator(
                model_path=self.settings.llm_model,
                gguf_file=self.settings.gguf_file,
                max_new_tokens=self.settings.max_tokens_limit,
            )
        metrics.set_model_info(SERVICE, model_name=self.name, llm=getattr(self.generator, "model_name", "unknown"))
        # vLLM-named series exist from the start (at zero), as vLLM's own do.
        metrics.vllm_waiting.labels(model_name=self.name).set(0)
        metrics.vllm_running.labels(model_name=self.name)
        metrics.vllm_e2e_latency.labels(model_name=self.name)
        metrics.vllm_prompt_tokens.labels(model_name=self.name)
        metrics.vllm_generation_tokens.labels(model_name=self.name)
        self.ready = True
        return self.ready

    def parse_chat_request(self, body: Any) -> tuple[list[dict[str, str]], int, float]:
        """(messages, max_tokens, temperature) from an OpenAI chat request body, or :class:`ChatRequestError`."""
        if not isinstance(body, dict):
            raise ChatRequestError("request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ChatRequestError('\'messages\' must be a non-empty list of {"role", "content"} objects')
        parsed, chars = [], 0
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise ChatRequestError(f"messages[{i}] must have a role in {', '.join(_ROLES)}")
            content = message.get("content")
            if isinstance(content, list):  # the content-parts form: only text parts can be served here
                if not all(
                    isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
                ):
                    raise ChatRequestError(f"messages[{i}].content may only hold text parts")
                content = "".join(p["text"] for p in content)
            if not isinstance(content, str):
                raise ChatRequestError(f"messages[{i}].content must be a string")
            chars += len(content)
            parsed.append({"role": message["role"], "content": content})
        if chars > self.settings.max_prompt_chars:
            raise ChatRequestError(
                f"the messages hold {chars} characters, the limit is {self.settings.max_prompt_chars}: shorten them"
            )
        if body.get("stream"):
            raise ChatRequestError("streaming is not supported by this server: send stream=false")
        limit = self.settings.max_tokens_limit
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = min(self.settings.max_new_tokens, limit)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
            raise ChatRequestError(f"max_tokens must be an integer between 1 and {limit}, got {max_tokens!r}")
        temperature = body.get("temperature")
        temperature = 0.0 if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise ChatRequestError(f"temperature must be a number between 0 and 2, got {temperature!r}")
        return parsed, max_tokens, float(temperature)

    @staticmethod
    def parse_n(body: dict) -> int:
        """The request's ``n`` (choices wanted): 1 to :data:`~coderag.config.MAX_CANDIDATES`, else
        :class:`ChatRequestError`."""
        n = body.get("n")
        n = 1 if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
            raise ChatRequestError(f"n must be an integer between 1 and {MAX_CANDIDATES}, got {n!r}")
        return n

    async def chat_completion(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                              n: int = 1) -> dict:
        """A chat completion with ``n`` choices in the OpenAI wire format (``openai.types.chat.ChatCompletion``);
        several choices are decoded in one batch."""
        t0 = time.perf_counter()
        running = metrics.vllm_running.labels(model_name=self.name)
        running.inc()
        try:
            if n == 1:
                results = [await asyncio.to_thread(
                    self.generator.generate_chat, messages, max_tokens=max_tokens, temperature=temperature
                )]
            else:
                results = await asyncio.to_thread(
                    self.generator.generate_batch, [messages] * n, max_tokens=max_tokens, temperature=temperature
                )
        except Exception:
            metrics.generator_errors.labels(service=SERVICE, kind="error").inc()
            raise
        finally:
            running.dec()
            elapsed = time.perf_counter() - t0
            metrics.stage_latency.labels(service=SERVICE, stage="generate").observe(elapsed)
            metrics.vllm_e2e_latency.labels(model_name=self.name).observe(elapsed)
        result = results[0]
        completion_tokens = sum(r.completion_tokens for r in results)
        metrics.vllm_prompt_tokens.labels(model_name=self.name).inc(result.prompt_tokens)
        metrics.vllm_generation_tokens.labels(model_name=self.name).inc(completion_tokens)
        metrics.vllm_request_success.labels(model_name=self.name, finished_reason=result.finish_reason or "stop").inc()
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": r.finish_reason,
                    "logprobs": None,
                }
                for i, r in enumerate(results)
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": result.prompt_tokens + completion_tokens,
            },
        }


def add_openai_routes(app, server) -> None:
    """Add ``POST /openai/v1/chat/completions`` and ``GET /openai/v1/models`` for the server's generator models."""

    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content=error_body(CHAT_ROUTE, status, message))

    def _generators() -> dict[str, GeneratorModel]:
        return {n: m for n, m in server.registered_models.get_models().items() if isinstance(m, GeneratorModel)}

    async def chat_completions(request: Request):
        body = await request.json()  # the request guard already answered 400 for non-JSON bodies
        models = _generators()
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return _error(400, f"'model' is required: use one of {', '.join(sorted(models))}")
        model = models.get(name)
        if model is None:
            return _error(404, f"model {name!r} is not served here: use one of {', '.join(sorted(models))}")
        if model.load_error is not None or not model.ready:
            detail = model.load_error or "it is still loading, retry shortly"
            return _error(503, f"model {name!r} is not ready: {detail}")
        try:
            messages, max_tokens, temperature = model.parse_chat_request(body)
            n = model.parse_n(body)
        except ChatRequestError as exc:
            return _error(400, str(exc))
        try:
            return JSONResponse(await model.chat_completion(messages, max_tokens, temperature, n))
        except CodeRAGError as exc:
            log.warning("generation failed: %s", exc)
            return _error(500, str(exc))

    async def list_models():
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": m.created, "owned_by": "coderag"}
                for name, m in _generators().items()
            ],
        }

    app.add_api_route(CHAT_ROUTE, chat_completions, methods=["POST"], response_model=None)
    app.add_api_route(MODELS_ROUTE, list_models, methods=["GET"], response_model=None)

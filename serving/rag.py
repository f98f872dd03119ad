"""The question -> SQL endpoint: retrieve schemas, prompt the LLM, extract and guard SQL, optionally run it.

``POST /v1/models/NAME:predict`` with::

    {"question": "How many orders ...?", "k": 3, "sql_context": "CREATE TABLE ...; INSERT ...;", "repair": true}

(``k``, ``sql_context`` and ``repair`` are optional; instead of ``sql_context``, ``"database": "shop"`` runs
the SQL read-only on a database registered by name in the ``databases`` setting) answers::

    {"question", "sql", "guard": {"allowed", "reason", "statement_type"}, "snippets": [{rank, snippet_id, score,
     text, domain}], "reply", "rows", "execution_error", "repaired", "timings_ms": {retrieve, generate, ...}}

Retrieval goes to the retriever service over KServe's v1 protocol (``retriever_url``) or runs in-process
(``index_dir``); generation goes to any OpenAI-compatible endpoint through
:class:`coderag.generation.llm.OpenAIChatGenerator`. When the generator cannot be reached the answer is a
503 that still carries the retrieved snippets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from kserve.errors import InvalidInput

from coderag.errors import CodeRAGError, GenerationError, GeneratorUnavailable, QuestionError
from coderag.generation.answer import Answer, answer_from_schemas
from coderag.retrieval.search import validate_question
from coderag.sql.execution import sqlite_from_context
from serving import metrics
from serving.errors import PartialResultError
from serving.retriever import RetrieverModel
from serving.server import ServiceModel
from serving.settings import DEFAULT_GENERATOR_NAME, RagSettings, RetrieverSettings

log = logging.getLogger(__name__)
SERVICE = "rag"
_EXAMPLE = '{"question": "How many orders were placed in 2023?", "k": 3}'
_FIELDS = {"question", "k", "sql_context", "repair", "database"}


class RetrieverUnavailable(CodeRAGError):
    """The retriever service cannot be reached or failed."""


class RagModel(ServiceModel):
    """Question -> SQL over a retriever (HTTP or in-process) and an OpenAI-compatible generator."""

    def __init__(
        self, name: str, settings: RagSettings, *, generator=None, retriever: RetrieverModel | None = None
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.generator = generator
        self.local_retriever = retriever
        self._client = None
        self.databases = None
        metrics.init_service_series(SERVICE)

    def load(self) -> bool:
        """Prepare the generator client and, without a retriever URL, load the index in-process."""
        settings = self.settings
        settings.check_retrieval_source()
        self.databases = settings.database_registry()
        if self.generator is None:
            from coderag.generation.llm import OpenAIChatGenerator

            # One retry: an unreachable generator should turn into a 503 within seconds, not minutes.
            self.generator = OpenAIChatGenerator(
                base_url=settings.llm_base_url,
                model=settings.llm_model or DEFAULT_GENERATOR_NAME,
                api_key=settings.api_key(),
                timeout=settings.llm_timeout_s,
                max_retries=1,
            )
        if settings.retriever_url is None and self.local_retriever is None:
            retriever_settings = RetrieverSettings.from_values(
                index_dir=settings.index_dir,
                encoder=settings.encoder,
                max_k=settings.max_k,
                k=min(settings.k, settings.max_k),
                max_question_chars=settings.max_question_chars,
            )
            self.local_retriever = RetrieverModel(f"{self.name}-retriever", retriever_settings, service=SERVICE)
        if self.local_retriever is not None and not self.local_retriever.ready:
            self.local_retriever.load()
        metrics.set_model_info(
            SERVICE,
            model_name=self.name,
            llm=settings.llm_model or DEFAULT_GENERATOR_NAME,
            retriever=settings.retriever_url or "in-process",
        )
        self.ready = True
        return self.ready

    # --- request parsing ----------------------------------------------------------------------------
    def parse_request(self, payload: Any) -> dict:
        """The validated request fields, or :class:`InvalidInput` naming the problem."""
        if not isinstance(payload, dict):
            raise InvalidInput(
                f"request body must be a JSON object like {_EXAMPLE} (send Content-Type: application/json)"
            )
        if "question" not in payload:
            raise InvalidInput(f'request body lacks "question": send {_EXAMPLE}')
        unknown = sorted(set(payload) - _FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(unknown)}: accepted fields are {', '.join(sorted(_FIELDS))}"
            )
        try:
            question = validate_question(payload["question"], max_chars=self.settings.max_question_chars)
        except QuestionError as exc:
            raise InvalidInput(f"question: {exc}") from None
        k = payload.get("k", self.settings.k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be an integer between 1 and {self.settings.max_k}, got {k!r}")
        sql_context = payload.get("sql_context")
        if sql_context is not None:
            if not isinstance(sql_context, str) or not sql_context.strip():
                raise InvalidInput("sql_context must be a non-empty string of CREATE TABLE / INSERT statements")
            if len(sql_context) > self.settings.max_sql_context_chars:
                raise InvalidInput(
                    f"sql_context is {len(sql_context)} characters long, the limit is "
                    f"{self.settings.max_sql_context_chars}"
                )
            try:  # a broken schema is the caller's error, not something the LLM should be asked to repair
                sqlite_from_context(sql_context, timeout_s=self.settings.execute_timeout_s).close()
            except CodeRAGError as exc:
                raise InvalidInput(f"sql_context: {exc}") from None
        repair = payload.get("repair", self.settings.repair)
        if not isinstance(repair, bool):
            raise InvalidInput(f"repair must be true or false, got {repair!r}")
        database = payload.get("database")
        if database is not None:
            if sql_context is not None:
                raise InvalidInput("send sql_context or database, not both")
            if self.databases is None:
                raise InvalidInput("database: no databases are configured on this server")
            try:
                database = self.databases.get(database)
            except CodeRAGError as exc:
                raise InvalidInput(f"database: {exc}") from None
        return {"question": question, "k": k, "sql_context": sql_context, "repair": repair, "database": database}

    # --- retrieval ----------------------------------------------------------------------------------
    async def retrieve(self, question: str, k: int) -> list[dict]:
        """The top-``k`` snippets as dicts (rank, snippet_id, score, text, domain)."""
        if self.local_retriever is not None:
            hits = (await self.local_retriever.retrieve([question], k))[0]
            return [h.to_dict() for h in hits]
        from kserve import InferenceRESTClient, RESTConfig

        if self._client is None:
            self._client = InferenceRESTClient(
                RESTConfig(protocol="v1", retries=1, timeout=self.settings.retriever_timeout_s)
            )
        try:
            response = await self._client.infer(
                self.settings.retriever_url,
                {"instances": [{"query": question, "k": k}]},
                model_name=self.settings.retriever_model,
            )
        except httpx.HTTPStatusError as exc:
            raise RetrieverUnavailable(
                f"the retriever at {self.settings.retriever_url} answered HTTP "
                f"{exc.response.status_code}: {exc.response.text[:300]}"
            ) from exc
        except httpx.HTTPError as exc:
            raise RetrieverUnavailable(
                f"the retriever at {self.settings.retriever_url} cannot be reached "
                f"({type(exc).__name__}): check --retriever_url and that it is running"
            ) from exc
        try:
            snippets = response["predictions"][0]["results"]
        except (KeyError, IndexError, TypeError) as exc:
            raise RetrieverUnavailable(
                f"the retriever at {self.settings.retriever_url} sent an unexpected answer"
            ) from exc
        if snippets:
            metrics.top1_score.labels(service=SERVICE).observe(float(snippets[0]["score"]))
        else:
            metrics.empty_results.labels(service=SERVICE).inc()
        return snippets

    # --- the endpoint -------------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        request = self.parse_request(payload)
        question = request["question"]
        t0 = time.perf_counter()
        try:
            snippets = await self.retrieve(question, request["k"])
        except RetrieverUnavailable as exc:
            raise PartialResultError(503, str(exc), {"question": question, "snippets": []}) from None
        retrieve_s = time.perf_counter() - t0
        metrics.stage_latency.labels(service=SERVICE, stage="retrieve").observe(retrieve_s)
        try:
            answer: Answer = await asyncio.to_thread(
                answer_from_schemas,
                question,
                [s["text"] for s in snippets],
                self.generator,
                sql_context=request["sql_context"],
                database=request["database"],
                transpile=self.settings.transpile and request["database"] is not None,
                repair=request["repair"],
                max_tokens=self.settings.max_new_tokens,
                timeout_s=self.settings.execute_timeout_s,
            )
        except GeneratorUnavailable as exc:
            metrics.generator_errors.labels(service=SERVICE, kind="unavailable").inc()
            partial = {"question": question, "snippets": snippets, "timings_ms": {"retrieve": retrieve_s * 1000}}
            raise PartialResultError(503, f"generator unavailable: {exc}", partial) from None
        except GenerationError as exc:
            metrics.generator_errors.labels(service=SERVICE, kind="error").inc()
            partial = {"question": question, "snippets": snippets, "timings_ms": {"retrieve": retrieve_s * 1000}}
            raise PartialResultError(502, f"generator failed: {exc}", partial) from None
        kind = _statement_type(answer)
        self._record(answer, kind)
        result = answer.to_dict()
        return {
            "question": question,
            "sql": result["sql"],
            "guard": {"allowed": answer.allowed, "reason": answer.guard_reason, "statement_type": kind},
            "snippets": snippets,
            "reply": result["reply"],
            "rows": result["rows"],
            "execution_error": result["execution_error"],
            "repaired": result["repaired"],
            "timings_ms": {"retrieve": retrieve_s * 1000, **result["timings_ms"]},
        }

    def _record(self, answer: Answer, kind: str) -> None:
        for stage in ("generate", "execute", "repair"):
            if stage in answer.timings_ms:
                metrics.stage_latency.labels(service=SERVICE, stage=stage).observe(answer.timings_ms[stage] / 1000)
        if not answer.allowed:
            if kind:
                metrics.guard_refusals.labels(service=SERVICE).inc()
            else:  # no SQL in the reply, or SQL that does not parse
                metrics.sql_parse_failures.labels(service=SERVICE).inc()
        if answer.execution_error:
            metrics.execution_errors.labels(service=SERVICE).inc()


def _statement_type(answer: Answer) -> str:
    from coderag.sql.guard import sql_guard

    return sql_guard(answer.sql, answer.dialect).statement_type if answer.sql else ""

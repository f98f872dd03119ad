"""The question -> SQL endpoint: retrieve schemas, prompt the LLM, extract and guard SQL, optionally run it.

``POST /v1/models/NAME:predict`` with::

    {"question": "How many orders ...?", "k": 3, "sql_context": "CREATE TABLE ...; INSERT ...;", "repair": true,
     "n_candidates": 5, "examples": 3}

(``k``, ``sql_context`` / ``database``, ``repair``, ``n_candidates`` and ``examples`` are optional; the model
is :class:`serving.schemas.RagRequest`, unknown fields are refused) answers::

    {"question", "sql", "guard": {"allowed", "reason", "statement_type"}, "snippets": [{rank, snippet_id, score,
     text, domain}], "reply", "rows", "execution_error", "repaired", "timings_ms": {retrieve, generate, ...}}

plus ``"examples"`` (the retrieved question -> SQL examples in the prompt) when examples > 0 and ``"vote"``
(``{"n", "temperature", "chosen", "votes", "survivors", "candidates": [{sql, status, votes, ...}]}``) when
``n_candidates`` > 1: the candidates are sampled in one ``n=`` request to the generator, every allowed one
runs on the same sandbox session or database as a single query would, and the result most of them share
is answered (:mod:`coderag.generation.voting`), all within ``request_timeout_s``.

``rows`` are JSON values; a BLOB comes back as text ``"\\x"`` + lower-case hex (``x'ff00'`` -> ``"\\xff00"``).
The SQL runs in :class:`coderag.sql.sandbox.SqlSandbox` (a worker process per request, with CPU, memory,
size and result limits), on a database built from ``sql_context`` (unless ``allow_sql_context`` is off,
as in staging and prod) or on a server-registered SQLite database named by ``database``; a registered PostgreSQL or MariaDB
database (the ``databases`` setting, from a Secret) is queried read-only at the server itself, in its
dialect, with a server-side statement timeout. One budget,
``request_timeout_s``, covers the whole request: retrieval, generation and its retry, the context build,
execution and repair.

Retrieval goes to the retriever service over KServe's v1 protocol (``retriever_url``) or runs in-process
(``index_dir``); generation goes to any OpenAI-compatible endpoint through
:class:`coderag.generation.llm.OpenAIChatGenerator`. When the generator cannot be reached the answer is a
503 that still carries the retrieved snippets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from kserve.errors import InvalidInput
from pydantic import ValidationError

from coderag.config import MAX_EXAMPLES
from coderag.errors import CodeRAGError, ConfigError, GenerationError, GeneratorUnavailable, QuestionError
from coderag.generation.answer import Answer, answer_from_schemas
from coderag.retrieval.examples import Example, retrieve_examples
from coderag.retrieval.search import validate_question
from coderag.sql.sandbox import SandboxContextError, SandboxError, SandboxLimits, SandboxSession, SqlSandbox
from serving import metrics
from serving.errors import PartialResultError, scrub
from serving.retriever import RetrieverModel
from serving.schemas import RagRequest, first_problem
from serving.server import ServiceModel
from serving.settings import DEFAULT_GENERATOR_NAME, RagSettings, RetrieverSettings

log = logging.getLogger(__name__)
SERVICE = "rag"
_EXAMPLE = '{"question": "How many orders were placed in 2023?", "k": 3}'
_FIELDS = sorted(RagRequest.model_fields)


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
        self.sandbox: SqlSandbox | None = None
        self.databases = None  # the DatabaseRegistry of the databases setting, built by load()
        # Blocking work (sandbox I/O, generator calls) runs on the model's own threads, never the event loop's
        # small default pool: a request waiting for the LLM must not starve another one's sandbox.
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="coderag-rag")
        # Sandbox slots are awaited here, on the loop, so a request queued for one holds no thread.
        self._slots = asyncio.Semaphore(settings.sandbox_sessions)
        metrics.init_service_series(SERVICE)

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.databases is not None:
            self.databases.close()
        super().stop()

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
                max_retries=0,  # retries are spent from the request's budget (_BudgetedGenerator)
            )
        self.sandbox = SqlSandbox(SandboxLimits(
            memory_bytes=settings.sandbox_memory_mb * 2**20,
            heap_bytes=settings.sandbox_memory_mb * 2**20 // 4,
            max_result_bytes=settings.max_result_bytes,
            max_sessions=settings.sandbox_sessions,
        ))
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
        if settings.examples and self.example_store() is None:
            raise ConfigError(f"--examples {settings.examples}: the index holds no question -> SQL examples: rebuild "
                              "it with `coderag index build --examples K` (or the pipeline), or set --examples 0")
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
        """The validated request fields (:class:`~serving.schemas.RagRequest`), or :class:`InvalidInput`."""
        if not isinstance(payload, dict):
            raise InvalidInput(
                f"request body must be a JSON object like {_EXAMPLE} (send Content-Type: application/json)"
            )
        if "question" not in payload:
            raise InvalidInput(f'request body lacks "question": send {_EXAMPLE}')
        unknown = sorted(set(payload) - set(_FIELDS))
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(unknown)}: accepted fields are {', '.join(_FIELDS)}")
        settings = self.settings
        k = payload.get("k")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k):
            raise InvalidInput(f"k must be an integer between 1 and {settings.max_k}, got {k!r}")
        repair = payload.get("repair")
        if repair is not None and not isinstance(repair, bool):
            raise InvalidInput(f"repair must be true or false, got {repair!r}")
        n = payload.get("n_candidates")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= settings.max_n_candidates):
            raise InvalidInput(f"n_candidates must be an integer between 1 and {settings.max_n_candidates}, got {n!r}")
        shots = payload.get("examples")
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int)
                                  or not 0 <= shots <= MAX_EXAMPLES):
            raise InvalidInput(f"examples must be an integer between 0 and {MAX_EXAMPLES}, got {shots!r}")
        try:
            request = RagRequest.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput(first_problem(exc)) from None
        try:
            question = validate_question(request.question, max_chars=settings.max_question_chars)
        except QuestionError as exc:
            raise InvalidInput(f"question: {exc}") from None
        sql_context, database = request.sql_context, request.database
        if sql_context is not None and database is not None:
            raise InvalidInput("send sql_context or database, not both")
        if sql_context is not None:
            if not settings.allow_sql_context:
                raise InvalidInput(
                    "this server does not accept sql_context: name a registered database with \"database\""
                    + (f" (one of {', '.join(self._database_names())})" if self._database_names() else "")
                )
            if not sql_context.strip():
                raise InvalidInput("sql_context must be a non-empty string of CREATE TABLE / INSERT statements")
            if len(sql_context) > settings.max_sql_context_chars:
                raise InvalidInput(
                    f"sql_context is {len(sql_context)} characters long, the limit is {settings.max_sql_context_chars}"
                )
        if database is not None and database not in self._database_names():
            known = ", ".join(self._database_names()) or "none are registered"
            raise InvalidInput(f"database {database!r} is not registered here: use one of {known}")
        examples = settings.examples if request.examples is None else request.examples
        if examples and self.example_store() is None:
            raise InvalidInput("this server has no question -> SQL examples (its index was built without them, or "
                               "retrieval is remote): send \"examples\": 0")
        return {
            "question": question,
            "k": settings.k if request.k is None else request.k,
            "sql_context": sql_context,
            "database": database,
            "repair": settings.repair if request.repair is None else request.repair,
            "n_candidates": settings.n_candidates if request.n_candidates is None else request.n_candidates,
            "examples": examples,
        }

    def example_store(self):
        """The in-process index's :class:`~coderag.retrieval.examples.ExampleIndex`, or None."""
        index = getattr(self.local_retriever, "index", None)
        return getattr(index, "examples", None)

    def retrieve_examples(self, question: str, n: int) -> list[Example]:
        """The ``n`` training examples most similar to ``question`` (blocking: call it off the event loop)."""
        if not n:
            return []
        return retrieve_examples(self.example_store(), self.local_retriever.encoder_model, [question], n)[0]

    def _database_names(self) -> list[str]:
        return [] if self.databases is None else self.databases.names()

    def server_database(self, request: dict):
        """The request's registered database when it is a server (PostgreSQL, MariaDB): queried read-only
        at the database itself, with its own statement timeout; ``None`` for SQLite (the sandbox runs it)."""
        if request["database"] is None:
            return None
        database = self.databases.get(request["database"])
        return None if database.backend == "sqlite" else database

    def open_session(self, request: dict, deadline: float) -> SandboxSession | None:
        """A sandbox session on the request's context or database (blocking: call it off the event loop)."""
        if request["sql_context"] is None and request["database"] is None:
            return None
        session = self.sandbox.session(deadline=deadline)
        try:
            if request["sql_context"] is not None:
                return session.open(sql_context=request["sql_context"])
            return session.open(db_path=self.databases.get(request["database"]).path)
        except SandboxContextError as exc:
            # A broken schema is the caller's error, not something the LLM should be asked to repair.
            what = "sql_context" if request["sql_context"] is not None else f"database {request['database']!r}"
            raise InvalidInput(f"{what}: the {what} does not build an SQLite database ({exc}): fix its "
                               "CREATE TABLE / INSERT statements.") from None

    # --- retrieval ----------------------------------------------------------------------------------
    async def retrieve(self, question: str, k: int) -> list[dict]:
        """The top-``k`` snippets as dicts (rank, snippet_id, score, text, domain).

        Error messages name the retriever service, never its internal URL (that goes to the log).
        """
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
            log.warning("retriever %s answered HTTP %d: %s", self.settings.retriever_url,
                        exc.response.status_code, exc.response.text[:300])
            raise RetrieverUnavailable(
                f"the retriever service answered HTTP {exc.response.status_code}: see the server log"
            ) from exc
        except httpx.HTTPError as exc:
            log.warning("retriever %s cannot be reached: %r", self.settings.retriever_url, exc)
            raise RetrieverUnavailable(
                f"the retriever service cannot be reached ({type(exc).__name__}): check --retriever_url "
                "and that it is running"
            ) from exc
        try:
            snippets = response["predictions"][0]["results"]
        except (KeyError, IndexError, TypeError) as exc:
            raise RetrieverUnavailable("the retriever service sent an unexpected answer") from exc
        if snippets:
            metrics.top1_score.labels(service=SERVICE).observe(float(snippets[0]["score"]))
        else:
            metrics.empty_results.labels(service=SERVICE).inc()
        return snippets

    # --- the endpoint -------------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        budget = self.settings.request_timeout_s
        deadline = time.monotonic() + budget
        request = self.parse_request(payload)
        question = request["question"]
        if request["sql_context"] is None and (request["database"] is None or self.server_database(request)):
            return await self._answer(request, None, deadline)
        try:
            await asyncio.wait_for(self._slots.acquire(), _remaining(deadline))
        except TimeoutError:
            raise PartialResultError(503, "the SQL sandbox is busy with other requests: retry shortly",
                                     {"question": question, "snippets": []}) from None
        session = None
        try:
            # Built (or opened) first: a broken context is a 400 before any retrieval or generation is spent.
            try:
                session = await self._blocking(self.open_session, request, deadline)
            except SandboxError as exc:
                raise PartialResultError(503, str(exc), {"question": question, "snippets": []}) from None
            return await self._answer(request, session, deadline)
        finally:
            if session is not None:
                await self._blocking(session.close)
            self._slots.release()

    async def _blocking(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _answer(self, request: dict, session: SandboxSession | None, deadline: float) -> dict:
        question = request["question"]
        budget = self.settings.request_timeout_s
        t0 = time.perf_counter()
        try:
            snippets = await asyncio.wait_for(self.retrieve(question, request["k"]), _remaining(deadline))
            shots = await asyncio.wait_for(self._blocking(self.retrieve_examples, question, request["examples"]),
                                           _remaining(deadline))
        except RetrieverUnavailable as exc:
            raise PartialResultError(503, str(exc), {"question": question, "snippets": []}) from None
        except TimeoutError:
            raise PartialResultError(504, f"the retriever did not answer within the request's budget of {budget:g} s",
                                     {"question": question, "snippets": []}) from None
        retrieve_s = time.perf_counter() - t0
        metrics.stage_latency.labels(service=SERVICE, stage="retrieve").observe(retrieve_s)
        partial = {"question": question, "snippets": snippets, "timings_ms": {"retrieve": retrieve_s * 1000}}
        generator = _BudgetedGenerator(self.generator, deadline, budget)
        server_database = self.server_database(request)
        try:
            # The thread cannot be cancelled, but the generator and the sandbox both stop at the deadline;
            # the margin only covers their bookkeeping.
            answer: Answer = await asyncio.wait_for(self._blocking(
                answer_from_schemas,
                question,
                [s["text"] for s in snippets],
                generator,
                run_sql=None if session is None else session.run,
                database=server_database,
                transpile=self.settings.transpile and server_database is not None,
                repair=request["repair"],
                max_tokens=self.settings.max_new_tokens,
                timeout_s=self.settings.execute_timeout_s,
                n_candidates=request["n_candidates"],
                temperature=self.settings.sampling_temperature,
                examples=shots,
            ), _remaining(deadline) + 2.0)
        except GeneratorUnavailable as exc:
            metrics.generator_errors.labels(service=SERVICE, kind="unavailable").inc()
            log.warning("generator unavailable: %s", exc)
            raise PartialResultError(503, f"generator unavailable: {generator.public_reason(exc)}", partial) from None
        except GenerationError as exc:
            metrics.generator_errors.labels(service=SERVICE, kind="error").inc()
            log.warning("generator failed: %s", exc)
            raise PartialResultError(502, f"generator failed: {scrub(str(exc))}", partial) from None
        except TimeoutError:
            raise PartialResultError(504, f"the request ran past its budget of {budget:g} s", partial) from None
        self._record(answer)
        result = answer.to_dict()
        extra = {"examples": result["examples"]} if request["examples"] else {}
        if answer.vote is not None:
            extra["vote"] = answer.vote
        return {
            "question": question,
            "sql": result["sql"],
            "guard": {"allowed": answer.allowed, "reason": answer.guard_reason,
                      "statement_type": answer.statement_type},
            "snippets": snippets,
            "reply": result["reply"],
            "rows": result["rows"],
            "execution_error": result["execution_error"],
            "repaired": result["repaired"],
            "timings_ms": {"retrieve": retrieve_s * 1000, **result["timings_ms"]},
            **extra,
        }

    def _record(self, answer: Answer) -> None:
        for key, stage in (("generate", "generate"), ("execute", "execute"), ("repair", "repair"),
                           ("execute_repaired", "execute")):
            if key in answer.timings_ms:
                metrics.stage_latency.labels(service=SERVICE, stage=stage).observe(answer.timings_ms[key] / 1000)
        if not answer.allowed:
            if answer.statement_type:
                metrics.guard_refusals.labels(service=SERVICE).inc()
            else:  # no SQL in the reply, or SQL that does not parse
                metrics.sql_parse_failures.labels(service=SERVICE).inc()
        if answer.execution_error:
            metrics.execution_errors.labels(service=SERVICE).inc()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class _BudgetedGenerator:
    """A generator whose calls (one retry on a failed connection included) end by the request's deadline."""

    def __init__(self, generator, deadline: float, budget_s: float, attempts: int = 2) -> None:
        self.generator, self.deadline, self.budget_s, self.attempts = generator, deadline, budget_s, attempts
        self.timed_out = False

    def complete(self, messages, **kwargs) -> str:
        return self._call("complete", messages, **kwargs)

    def sample(self, messages, **kwargs) -> list:
        """``n`` candidates in one request (``n=``), spent from the same budget as :meth:`complete`."""
        if not callable(getattr(self.generator, "sample", None)):  # a test double: n calls of complete
            from coderag.generation.voting import sample_replies

            return sample_replies(self.generator, messages, kwargs.pop("n"), **kwargs)
        return self._call("sample", messages, **kwargs)

    def _call(self, method: str, messages, **kwargs):
        from coderag.generation.llm import OpenAIChatGenerator

        if not isinstance(self.generator, OpenAIChatGenerator):  # in-process generators have no network
            return getattr(self.generator, method)(messages, **kwargs)
        for attempt in range(self.attempts):
            remaining = _remaining(self.deadline)
            if remaining < 0.05:
                self.timed_out = True
                raise GeneratorUnavailable("the request's time budget ran out before the generator answered")
            try:
                return getattr(self.generator, method)(messages, timeout=remaining, **kwargs)
            except GeneratorUnavailable as exc:
                import openai

                self.timed_out = isinstance(exc.__cause__, openai.APITimeoutError)
                if self.timed_out or attempt + 1 == self.attempts:
                    raise
                log.info("generator call failed, retrying once: %s", exc)
        raise AssertionError("unreachable")

    def public_reason(self, exc: GeneratorUnavailable) -> str:
        """Why the generator was unavailable, for the client: no internal URL (that is logged)."""
        if self.timed_out:
            return f"the generator did not answer within the request's budget of {self.budget_s:g} s"
        cause = exc.__cause__
        status = getattr(cause, "status_code", None)
        if status is not None:
            return f"the generator failed with HTTP {status}: retry later"
        return "the generator service cannot be reached: check --llm_base_url and that it is running"

"""The retriever service: question(s) -> top-k schema snippets with cosine scores, over KServe v1 and v2.

v1 (``POST /v1/models/NAME:predict``)::

    {"instances": [{"query": "How many orders ...?", "k": 5}, ...]}
    -> {"predictions": [{"query": ..., "k": 5, "results": [{"rank", "snippet_id", "score", "text", "domain"}]}]}

v2 (``POST /v2/models/NAME/infer``): input ``query`` (BYTES, shape [n]) and optional ``k`` (INT32/INT64,
one element); outputs ``text``/``domain`` (BYTES) and ``score`` (FP32), ``snippet_id`` (INT64), all of
shape [n, k'] with k' = min(k, index size), best first (rows cut short by ``min_score`` are padded with
text "", score -1.0, snippet_id -1).

Concurrent requests are embedded and searched together (:class:`~serving.batching.MicroBatcher`).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import ValidationError

from coderag.errors import QuestionError
from coderag.retrieval.encoder import encode, load_encoder
from coderag.retrieval.index import SchemaIndex
from coderag.retrieval.onnx_encoder import load_query_encoder
from coderag.retrieval.search import RetrievedSchema, hits_from_search, validate_question
from serving import metrics
from serving.batching import MicroBatcher
from serving.schemas import RetrieverV1Request, first_problem
from serving.server import ServiceModel
from serving.settings import RetrieverSettings

log = logging.getLogger(__name__)
SERVICE = "retriever"
_V1_EXAMPLE = '{"instances": [{"query": "How many orders were placed in 2023?", "k": 5}]}'


class RetrieverModel(ServiceModel):
    """Encoder + :class:`~coderag.retrieval.index.SchemaIndex` behind KServe's v1/v2 inference protocols."""

    def __init__(
        self,
        name: str,
        settings: RetrieverSettings,
        *,
        index: SchemaIndex | None = None,
        encoder_model=None,
        service: str = SERVICE,
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.service = service
        self.index = index
        self.encoder_model = encoder_model
        self.query_encoder = None  # encoder_model, or the ONNX encoder of the index's backend
        self.batcher: MicroBatcher | None = None
        metrics.init_service_series(service)

    # --- loading ------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the index and its encoder (unless given), check they fit together, then become ready."""
        if self.index is None:
            index_dir, encoder = self.settings.resolve_paths()
            self.index = SchemaIndex.load(index_dir)
        else:
            encoder = self.settings.encoder
        if self.encoder_model is None:
            self.encoder_model = load_encoder(encoder or self.index.encoder_name)
        # Ready only when consistent: another dim, or other weights than the index was built with, raise
        # SchemaIndexError (with the rebuild hint) instead of serving silently worse results.
        self.index.check_compatible(self.encoder_model, strict=True)
        self.index.use_flat_search(self.settings.flat_search)  # gemm on an IVF / HNSW index: ConfigError
        if self.settings.lexical_weight is not None:
            self.index.use_lexical_weight(self.settings.lexical_weight)
        if self.index.lexical_weight > 0:
            _ = self.index.lexical  # BM25 over the snippets built here, not on the first request
        # Unset: the backend the index was built for; another ONNX backend than the index's is refused.
        self.query_encoder = load_query_encoder(self.index, self.encoder_model, self.settings.encoder_backend,
                                                threads=self.settings.cpu_threads)
        if self.settings.cpu_threads:
            import faiss
            import torch

            torch.set_num_threads(self.settings.cpu_threads)
            faiss.omp_set_num_threads(self.settings.cpu_threads)
        self.batcher = MicroBatcher(
            self.search_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.batch_wait_ms / 1000.0,
            on_batch=metrics.batch_size.labels(service=self.service).observe,
        )
        metrics.index_size.labels(service=self.service).set(self.index.count)
        metrics.set_model_info(
            self.service,
            model_name=self.name,
            encoder=self.index.encoder_name,
            encoder_fingerprint=self.index.encoder_fingerprint,
            index_dim=self.index.dim,
            index_count=self.index.count,
            index_created_at=self.index.created_at,
            encoder_backend=getattr(self.query_encoder, "backend", "torch"),
        )
        self.ready = True
        log.info("retriever ready name=%s count=%d dim=%d backend=%s", self.name, self.index.count, self.index.dim,
                 getattr(self.query_encoder, "backend", "torch"))
        return self.ready

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        super().stop()

    # --- the work -----------------------------------------------------------------------------------
    def search_batch(self, texts: list[str], k: int) -> list[list[RetrievedSchema]]:
        """Embed ``texts`` in one batch and search them in one call (one GEMM or one FAISS search, per the
        index's ``flat_search``, plus BM25 when its ``lexical_weight`` is above 0); top-``k`` per text, best
        first."""
        labels = {"service": self.service}
        floor = self.settings.min_score
        t0 = time.perf_counter()
        vectors = encode(self.query_encoder, texts, batch_size=max(len(texts), 1))
        t1 = time.perf_counter()
        scores, lexical, ids = self.index.search_questions(vectors, texts, min(k, self.index.count))
        t2 = time.perf_counter()
        metrics.stage_latency.labels(stage="embed", **labels).observe(t1 - t0)
        metrics.stage_latency.labels(stage="search", **labels).observe(t2 - t1)
        results = hits_from_search(self.index, scores, ids, floor, lexical)
        for hits in results:
            if hits:
                metrics.top1_score.labels(**labels).observe(hits[0].score)
            else:
                metrics.empty_results.labels(**labels).inc()
        return results

    async def retrieve(self, queries: list[str], k: int) -> list[list[RetrievedSchema]]:
        """Top-``k`` schemas for each (already validated) query, sharing batches with concurrent callers."""
        t0 = time.perf_counter()
        results = await self.batcher.submit(queries, k)
        metrics.stage_latency.labels(service=self.service, stage="retrieve").observe(time.perf_counter() - t0)
        return [hits[:k] for hits in results]

    # --- protocol handling --------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None):
        if isinstance(payload, InferRequest):
            queries, k = self._parse_v2(payload)
            results = await self.retrieve(queries, k)
            return self._v2_response(payload, results)
        queries, ks = self._parse_v1(payload)
        results = await self.retrieve(queries, max(ks))
        return {
            "predictions": [
                {"query": q, "k": k, "results": [h.to_dict() for h in hits[:k]]}
                for q, k, hits in zip(queries, ks, results, strict=True)
            ]
        }

    def _question(self, value: Any, where: str) -> str:
        try:
            return validate_question(value, max_chars=self.settings.max_question_chars)
        except QuestionError as exc:
            raise InvalidInput(f"{where}: {exc}") from None

    def _k(self, value: Any, where: str) -> int:
        if value is None:
            return self.settings.k
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= self.settings.max_k:
            raise InvalidInput(f"{where} must be an integer between 1 and {self.settings.max_k}, got {value!r}")
        return int(value)

    def _check_count(self, n: int, what: str) -> None:
        if n == 0:
            raise InvalidInput(f"{what} is empty: send at least one query, e.g. {_V1_EXAMPLE}")
        if n > self.settings.max_queries_per_request:
            raise InvalidInput(
                f"{what} holds {n} queries, the limit is {self.settings.max_queries_per_request}: split the request"
            )

    def _parse_v1(self, payload: Any) -> tuple[list[str], list[int]]:
        if not isinstance(payload, dict):
            raise InvalidInput(
                f"request body must be a JSON object like {_V1_EXAMPLE} (send Content-Type: application/json)"
            )
        if "instances" not in payload:
            raise InvalidInput(f'request body lacks "instances": send {_V1_EXAMPLE}')
        unknown = sorted(set(payload) - {"instances"})
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(unknown)}: a v1 request holds only \"instances\"")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise InvalidInput(
                f'"instances" must be a list of {{"query": ..., "k": ...}} objects, got {type(instances).__name__}'
            )
        self._check_count(len(instances), '"instances"')
        queries, ks = [], []
        for i, instance in enumerate(instances):
            where = f"instances[{i}]"
            if isinstance(instance, str):
                instance = {"query": instance}
            if not isinstance(instance, dict):
                raise InvalidInput(
                    f'{where} must be an object {{"query": ..., "k": ...}} or a string, got {type(instance).__name__}'
                )
            if "query" not in instance:
                raise InvalidInput(f'{where} lacks "query": send {_V1_EXAMPLE}')
            unknown = sorted(set(instance) - {"query", "k"})
            if unknown:
                raise InvalidInput(f"{where} has unknown field(s) {', '.join(unknown)}: only query and k are accepted")
            queries.append(self._question(instance["query"], f"{where}.query"))
            ks.append(self._k(instance.get("k"), f"{where}.k"))
        try:  # the checks above give the friendlier messages; the model is the contract (and the OpenAPI)
            RetrieverV1Request.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput(first_problem(exc)) from None
        return queries, ks

    def _parse_v2(self, request: InferRequest) -> tuple[list[str], int]:
        by_name = {inp.name: inp for inp in request.inputs}
        unknown = sorted(set(by_name) - {"query", "k"})
        if unknown:
            raise InvalidInput(f"unknown input(s) {', '.join(unknown)}: send a BYTES input 'query' and optionally 'k'")
        if "query" not in by_name:
            raise InvalidInput(
                "input 'query' is missing: send a BYTES input named 'query' with one question per element"
            )
        query_input = by_name["query"]
        if query_input.datatype != "BYTES":
            raise InvalidInput(f"input 'query' must have datatype BYTES, got {query_input.datatype}")
        values = _flat_values(query_input)
        self._check_count(len(values), "input 'query'")
        queries = []
        for i, value in enumerate(values):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"query[{i}] is not valid UTF-8: encode questions as UTF-8") from None
            queries.append(self._question(value, f"query[{i}]"))
        k = self.settings.k
        if "k" in by_name:
            k_values = _flat_values(by_name["k"])
            if len(k_values) != 1:
                raise InvalidInput(f"input 'k' must hold exactly one integer, got {len(k_values)} values")
            if not by_name["k"].datatype.startswith(("INT", "UINT")):
                raise InvalidInput(
                    f"input 'k' must have an integer datatype (INT32/INT64), got {by_name['k'].datatype}"
                )
            k = self._k(k_values[0], "k")
        return queries, k

    def _v2_response(self, request: InferRequest, results: list[list[RetrievedSchema]]) -> InferResponse:
        # A score floor may leave a query with fewer than k hits; rows are padded (text "", snippet_id -1,
        # score -1.0, the lowest cosine) so every output stays a rectangular [n, k'] tensor.
        n = len(results)
        width = max((len(hits) for hits in results), default=0)
        padded = [hits + [None] * (width - len(hits)) for hits in results]
        cells = [h for row in padded for h in row]
        outputs = [
            InferOutput("text", [n, width], "BYTES", [h.text if h else "" for h in cells]),
            InferOutput("domain", [n, width], "BYTES", [h.domain if h else "" for h in cells]),
            InferOutput("score", [n, width], "FP32", [float(h.score) if h else -1.0 for h in cells]),
            InferOutput("snippet_id", [n, width], "INT64", [int(h.snippet_id) if h else -1 for h in cells]),
        ]
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs)


def _flat_values(infer_input) -> list:
    data = infer_input.data
    if isinstance(data, list):
        flat: list = []
        stack = [data]
        while stack:  # JSON tensors may arrive nested ([[...]]) or flat
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                flat.append(item)
        return flat
    try:
        return infer_input.as_numpy().ravel().tolist()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"input '{infer_input.name}' cannot be decoded ({exc}): check its shape and datatype"
        ) from None

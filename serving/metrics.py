"""Prometheus metrics of the CodeRAG services, exported on each server's ``/metrics`` beside KServe's own.

The metric names and labels below are a contract with the Grafana dashboard and the alert rules in
``manifests/monitoring``: rename one and those break. Every series carries ``service`` (``retriever``,
``generator`` or ``rag``) so one dashboard can show all three.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

# --- names (the contract) -------------------------------------------------------------------------
STAGE_LATENCY = "coderag_stage_latency_seconds"  # histogram; labels: service, stage
REQUESTS = "coderag_requests_total"  # counter; labels: service, route, code
TOP1_SCORE = "coderag_retrieval_top1_score"  # histogram; labels: service
EMPTY_RESULTS = "coderag_retrieval_empty_results_total"  # counter; labels: service
BATCH_SIZE = "coderag_retriever_batch_size"  # histogram (queries per encode+search); labels: service
SQL_PARSE_FAILURES = "coderag_sql_parse_failures_total"  # counter; labels: service
GUARD_REFUSALS = "coderag_guard_refusals_total"  # counter; labels: service
GENERATOR_ERRORS = "coderag_generator_errors_total"  # counter; labels: service, kind (unavailable|error)
EXECUTION_ERRORS = "coderag_sql_execution_errors_total"  # counter; labels: service
INDEX_SIZE = "coderag_index_size"  # gauge (snippets in the loaded index); labels: service
MODEL_READY = "coderag_model_ready"  # gauge (1 loaded and serving, 0 loading or failed); labels: service, model
MODEL_INFO = (
    "coderag_model_info"  # info (value 1); labels: service, model_name, encoder, encoder_backend, index_dim, index_created_at, llm
)

STAGES = ("embed", "search", "retrieve", "generate", "execute", "repair", "total")
SERVICES = ("retriever", "generator", "rag")

# Prometheus expects seconds; buckets span a sub-millisecond FAISS search to a minute of CPU generation.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(-2, 11))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

stage_latency = Histogram(
    STAGE_LATENCY, "Latency of one pipeline stage in seconds", ["service", "stage"], buckets=_LATENCY_BUCKETS
)
requests_total = Counter(REQUESTS, "HTTP requests answered, by route and status code", ["service", "route", "code"])
top1_score = Histogram(
    TOP1_SCORE, "Cosine score of the best retrieved schema per query", ["service"], buckets=_SCORE_BUCKETS
)
empty_results = Counter(EMPTY_RESULTS, "Queries for which retrieval returned no schema", ["service"])
batch_size = Histogram(
    BATCH_SIZE, "Queries embedded and searched together in one micro-batch", ["service"], buckets=_BATCH_BUCKETS
)
sql_parse_failures = Counter(
    SQL_PARSE_FAILURES, "Generated replies whose SQL could not be extracted or parsed", ["service"]
)
guard_refusals = Counter(GUARD_REFUSALS, "Generated SQL refused by the read-only guard", ["service"])
generator_errors = Counter(
    GENERATOR_ERRORS, "Failed generator calls (unavailable: unreachable/5xx)", ["service", "kind"]
)
execution_errors = Counter(EXECUTION_ERRORS, "Guarded SQL that failed to execute on the provided schema", ["service"])
index_size = Gauge(INDEX_SIZE, "Schema snippets in the loaded FAISS index", ["service"])
model_ready = Gauge(MODEL_READY, "1 when the model is loaded and serving, 0 while loading or after a failed load",
                    ["service", "model"])
# Info appends "_info" to its name.
model_info = Info(MODEL_INFO.removesuffix("_info"), "What the service serves (model and index versions)", ["service"])

ALL_METRIC_NAMES = (
    STAGE_LATENCY,
    REQUESTS,
    TOP1_SCORE,
    EMPTY_RESULTS,
    BATCH_SIZE,
    SQL_PARSE_FAILURES,
    GUARD_REFUSALS,
    GENERATOR_ERRORS,
    EXECUTION_ERRORS,
    INDEX_SIZE,
    MODEL_READY,
    MODEL_INFO,
)


# --- vLLM's own names, exported by the local generator too ----------------------------------------
# In the cluster the generator is vLLM, whose /metrics the dashboard's generator panels read. The local
# generator exports the same names (the subset it can measure honestly), so the dashboard and its tests
# work against either. Labels follow vLLM's: model_name (and finished_reason).
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_E2E_LATENCY = "vllm:e2e_request_latency_seconds"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens"  # counter (exported as vllm:prompt_tokens_total)
VLLM_GENERATION_TOKENS = "vllm:generation_tokens"  # counter (exported as vllm:generation_tokens_total)
VLLM_REQUEST_SUCCESS = "vllm:request_success"  # counter (exported as vllm:request_success_total)

vllm_running = Gauge(VLLM_RUNNING, "Requests being generated now", ["model_name"])
vllm_waiting = Gauge(VLLM_WAITING, "Requests waiting for the generator", ["model_name"])
vllm_e2e_latency = Histogram(VLLM_E2E_LATENCY, "End-to-end generation latency in seconds", ["model_name"],
                             buckets=_LATENCY_BUCKETS)
vllm_prompt_tokens = Counter(VLLM_PROMPT_TOKENS, "Prompt tokens processed", ["model_name"])
vllm_generation_tokens = Counter(VLLM_GENERATION_TOKENS, "Tokens generated", ["model_name"])
vllm_request_success = Counter(VLLM_REQUEST_SUCCESS, "Finished requests by finish reason",
                               ["model_name", "finished_reason"])
VLLM_METRIC_NAMES = (VLLM_RUNNING, VLLM_WAITING, VLLM_E2E_LATENCY, "vllm:prompt_tokens_total",
                     "vllm:generation_tokens_total", "vllm:request_success_total")


def init_service_series(service: str) -> None:
    """Create every labelled series of ``service`` at zero, so dashboards and rate() see them before traffic."""
    for stage in STAGES:
        stage_latency.labels(service=service, stage=stage)
    top1_score.labels(service=service)
    empty_results.labels(service=service)
    batch_size.labels(service=service)
    sql_parse_failures.labels(service=service)
    guard_refusals.labels(service=service)
    for kind in ("unavailable", "error"):
        generator_errors.labels(service=service, kind=kind)
    execution_errors.labels(service=service)


def set_model_info(service: str, **labels: object) -> None:
    """Publish what ``service`` serves as ``coderag_model_info{service=..., <labels>} 1``."""
    model_info.labels(service=service).info({k: "" if v is None else str(v) for k, v in labels.items()})

"""One settings object per KServe service; flags override ``CODERAG_<SERVICE>_*`` environment variables.

Server-wide options (ports, workers, model name) come from ``kserve.model_server.parser`` so they mean the
same as in every KServe server; the settings below are what CodeRAG adds on top. Each derives from the
core's :class:`~coderag.config.CodeRAGSettings`, so shared settings keep their one name and default
(``encoder``, ``k``, ``llm_base_url``, ``llm_model``, ``max_new_tokens`` ...); ``FLAG_FIELDS`` lists the
ones a service uses, which become its flags (secrets never do: ``CODERAG_LLM_API_KEY`` / ``OPENAI_API_KEY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from coderag.config import MAX_CANDIDATES, CodeRAGSettings, http_url
from coderag.errors import ConfigError
from coderag.retrieval.exact_search import GEMM_MIN_QUERIES, GEMM_MIN_VECTORS

DEFAULT_RETRIEVER_NAME = "coderag-retriever"
DEFAULT_GENERATOR_NAME = "coderag-generator"
DEFAULT_RAG_NAME = "coderag-rag"


# Request limits every service enforces in its request guard (serving/errors.py).
LIMIT_FIELDS = ("max_body_bytes", "body_timeout_s")


class ServiceLimits(CodeRAGSettings):
    """What every CodeRAG server enforces before a request reaches its model: body size and body time."""

    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body accepted (bytes); larger ones get HTTP 413"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="time a client has to send its whole request body (HTTP 408 after it)"
    )


class RetrieverSettings(ServiceLimits):
    """The retriever service: encoder + FAISS index behind v1/v2 inference (env ``CODERAG_RETRIEVER_*``)."""

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_RETRIEVER_"}
    FLAG_FIELDS: ClassVar = ("storage_uri", "index_dir", "encoder", "k", "max_k", "min_score", "max_question_chars",
                             "max_queries_per_request", "max_batch_size", "batch_wait_ms", "encoder_backend",
                             "cpu_threads", "flat_search", "lexical_weight", "background_load",
                             *LIMIT_FIELDS)

    storage_uri: Path | None = Field(
        None, description="local model dir (KServe's /mnt/models): holds the index (or index/) and optionally encoder/"
    )
    index_dir: Path | None = Field(None, description="index directory (overrides the one found under storage_uri)")
    max_k: int = Field(50, ge=1, le=1000, description="largest k a request may ask for")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop snippets scoring below this cosine score")
    max_question_chars: int = Field(2000, ge=1, description="longest question accepted (characters)")
    max_queries_per_request: int = Field(64, ge=1, description="most queries (instances) in one request")
    max_batch_size: int = Field(64, ge=1, description="most queries embedded together by the micro-batcher")
    batch_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long the micro-batcher waits to fill a batch")
    cpu_threads: int | None = Field(
        None, ge=1, le=256, description="threads that embed and search a batch (ONNX Runtime intra-op, torch, "
                                        "FAISS OpenMP); default: the CPU cores this process may use"
    )
    flat_search: Literal["auto", "faiss", "gemm"] = Field(
        "auto", description="how a flat index is searched: gemm (one matrix product per micro-batch, exact), "
                            f"faiss (IndexFlatIP.search), auto (gemm from {GEMM_MIN_QUERIES} queries a batch on "
                            f"{GEMM_MIN_VECTORS}+ vectors); IVF/HNSW: always faiss"
    )
    lexical_weight: float | None = Field(
        None, ge=0.0, le=1.0, description="hybrid retrieval: rank by cosine + this x BM25 over schema identifiers "
                                          "(0: cosine only); default: the index manifest's"
    )
    background_load: bool = Field(
        False, description="start serving at once and load in the background (503 until ready)"
    )

    @model_validator(mode="after")
    def _k_range(self):
        if self.k > self.max_k:
            raise ValueError(f"k {self.k} is larger than max_k {self.max_k}")
        return self

    def resolve_paths(self) -> tuple[Path, str | None]:
        """The index directory and the explicit encoder (``None``: use the index manifest's encoder)."""
        if self.index_dir is None and self.storage_uri is None:
            raise ConfigError(
                "the retriever needs an index: pass --index_dir DIR or --storage_uri DIR (CODERAG_RETRIEVER_INDEX_DIR)"
            )
        index_dir = self.index_dir
        if index_dir is None:
            nested = self.storage_uri / "index"
            index_dir = nested if nested.is_dir() else self.storage_uri
        encoder = self.encoder
        if encoder is None and self.storage_uri is not None:
            stored = self.storage_uri / "encoder"
            if stored.is_dir():
                encoder = str(stored)
        return index_dir, encoder


class GeneratorSettings(ServiceLimits):
    """The local generator service: OpenAI chat route over the offline transformers LLM (``CODERAG_GENERATOR_*``)."""

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_GENERATOR_"}
    FLAG_FIELDS: ClassVar = ("llm_model", "gguf_file", "max_new_tokens", "max_tokens_limit", "max_prompt_chars",
                             "background_load", *LIMIT_FIELDS)

    gguf_file: str | None = Field(None, description="GGUF file name inside model_path, when it holds one")
    max_tokens_limit: int = Field(512, ge=1, le=8192, description="largest max_tokens a request may ask for")
    max_prompt_chars: int = Field(32000, ge=1, description="longest total message text accepted (characters)")
    background_load: bool = Field(
        False, description="start serving at once and load in the background (503 until ready)"
    )


class RagSettings(ServiceLimits):
    """The question -> SQL endpoint (``CODERAG_RAG_*``)."""

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_RAG_"}
    FLAG_FIELDS: ClassVar = ("retriever_url", "retriever_model", "retriever_timeout_s", "index_dir", "encoder",
                             "encoder_backend",
                             "llm_base_url", "llm_model", "llm_api_key_file", "llm_timeout_s", "k", "max_k",
                             "max_question_chars", "max_sql_context_chars", "max_new_tokens", "repair",
                             "execute_timeout_s", "request_timeout_s", "allow_sql_context", "databases_file", "transpile", "sandbox_memory_mb", "sandbox_sessions",
                             "max_result_bytes", "background_load", "n_candidates", "max_n_candidates",
                             "sampling_temperature", "examples", *LIMIT_FIELDS)

    max_n_candidates: int = Field(8, ge=1, le=MAX_CANDIDATES,
                                  description="most SQL candidates a request may ask to vote on (n_candidates)")
    retriever_url: str | None = Field(
        None, description="base URL of the retriever service (v1 protocol); unset: in-process"
    )
    retriever_model: str = Field(DEFAULT_RETRIEVER_NAME, description="model name of the retriever service")
    retriever_timeout_s: float = Field(30.0, gt=0, description="timeout of one retriever call")
    index_dir: Path | None = Field(
        None, description="index directory for in-process retrieval (when retriever_url is unset)"
    )
    max_k: int = Field(20, ge=1, le=1000, description="largest k a request may ask for")
    max_question_chars: int = Field(2000, ge=1, description="longest question accepted (characters)")
    max_sql_context_chars: int = Field(200_000, ge=1, description="longest sql_context accepted (characters)")
    repair: bool = Field(True, description="when executing, ask the LLM once to repair SQL that fails")
    execute_timeout_s: float = Field(5.0, gt=0, description="time limit of one SQLite execution")
    request_timeout_s: float = Field(
        30.0, gt=0, le=600,
        description="end-to-end budget of one request: retrieval, generation (with retries), context build, "
                    "execution and repair",
    )
    allow_sql_context: bool = Field(
        True, description="accept a client-supplied sql_context (staging/prod overlays turn it off: name a "
                          "registered database instead)"
    )
    sandbox_memory_mb: int = Field(512, ge=64, le=16384, description="memory limit of one SQL sandbox worker (MiB)")
    sandbox_sessions: int = Field(4, ge=1, le=64, description="SQL sandbox workers running at once")
    max_result_bytes: int = Field(1_048_576, ge=1024, description="largest SQL result returned (bytes)")
    background_load: bool = Field(
        False, description="start serving at once and load the in-process index in the background (503 until ready)"
    )
    # Databases a request may name ("database": "shop"). URLs carry credentials: in a cluster they come from
    # a Secret (env or databases_file); a flag shows in the process list, so use it for SQLite files only.
    databases: SecretStr = Field(
        SecretStr(""),
        description='databases requests may name: JSON {"shop": "postgresql://..."} or NAME=URL[,NAME=URL...]; '
                    "a URL may be a SQLite file path (opened read-only, queried in the sandbox); credentials "
                    "belong in the environment or databases_file, never in a flag",
    )
    databases_file: Path | None = Field(None, description="file holding the databases JSON (a mounted Secret); "
                                                          "used when CODERAG_RAG_DATABASES is empty")
    transpile: bool = Field(False, description="rewrite generated SQLite-style SQL into a named database's dialect")

    def database_registry(self):
        """The :class:`~coderag.sql.databases.DatabaseRegistry` of ``databases`` (or ``databases_file``)."""
        from coderag.sql.databases import DatabaseRegistry

        text = self.databases.get_secret_value()
        if not text and self.databases_file is not None:
            try:
                text = self.databases_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read databases_file ({exc.strerror})") from None
        return DatabaseRegistry.parse(text, show_reasons=False)

    @field_validator("retriever_url")
    @classmethod
    def _retriever_url_scheme(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _k_range(self):
        if self.k > self.max_k:
            raise ValueError(f"k {self.k} is larger than max_k {self.max_k}")
        if self.n_candidates > self.max_n_candidates:
            raise ValueError(f"n_candidates {self.n_candidates} is larger than max_n_candidates {self.max_n_candidates}")
        return self

    def check_retrieval_source(self) -> None:
        """Raise :class:`ConfigError` unless a retriever URL or an index directory is configured."""
        if self.retriever_url is None and self.index_dir is None:
            raise ConfigError(
                "the RAG endpoint needs --retriever_url URL or --index_dir DIR (CODERAG_RAG_RETRIEVER_URL)"
            )
        if self.llm_base_url is None:
            raise ConfigError(
                "the RAG endpoint needs the generator's OpenAI-compatible URL: --llm_base_url URL "
                "(CODERAG_RAG_LLM_BASE_URL), e.g. http://coderag-generator-predictor/openai/v1"
            )
        if self.examples and self.retriever_url is not None:
            raise ConfigError(
                "examples come from the in-process index's example store: with --examples > 0 serve the index "
                "in-process (--index_dir DIR, no --retriever_url), or set --examples 0"
            )

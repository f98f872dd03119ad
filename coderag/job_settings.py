"""Settings of the CLI's main job and of ``coderag ask`` (one object, flags override ``CODERAG_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from coderag.settings import CodeRAGSettings

DEFAULT_QUESTION = "What is the total revenue of orders placed by each customer?"


class MainJobSettings(CodeRAGSettings):
    """Everything ``coderag run`` / ``coderag ask`` need; env names are ``CODERAG_<FIELD>``."""

    corpus: str = Field("builtin", description="corpus source: builtin, a local parquet/json/jsonl path, or a hub name")
    n_records: int | None = Field(None, ge=1, description="use at most this many records (builtin default 2000)")
    encoder: str | None = Field(None, description="sentence-transformers model path or hub name (default: offline all-MiniLM-L6-v2)")
    out_dir: Path = Field(Path("runs/main"), description="where the index and results.json are written")
    k: int = Field(3, ge=1, le=100, description="schemas retrieved per question")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop retrieved schemas scoring below this")
    n_eval: int = Field(12, ge=1, description="questions scored for EM/EX (each costs an LLM call, twice)")
    question: str = Field(DEFAULT_QUESTION, description="the sample question answered at the end")
    llm_backend: Literal["local", "openai"] = Field("local", description="local transformers model or an OpenAI-compatible endpoint")
    llm_model: str | None = Field(None, description="local model path/hub name, or the served model name for openai")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host/openai/v1")
    llm_api_key: SecretStr = Field(SecretStr(""), description="API key for the OpenAI-compatible endpoint")
    max_new_tokens: int = Field(128, ge=8, le=4096, description="generation budget per question")
    seed: int = 0

    @field_validator("llm_base_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


def make_job_generator(settings: MainJobSettings):
    """The SQL generator the settings ask for (local SmolLM2 by default)."""
    from coderag.errors import ConfigError
    from coderag.generation import LocalTransformersGenerator, OpenAIChatGenerator

    if settings.llm_backend == "openai":
        if not settings.llm_base_url or not settings.llm_model:
            raise ConfigError("the openai backend needs --llm-base-url and --llm-model (or CODERAG_LLM_BASE_URL / CODERAG_LLM_MODEL)")
        return OpenAIChatGenerator(base_url=settings.llm_base_url, model=settings.llm_model,
                                   api_key=settings.llm_api_key.get_secret_value() or None)
    if settings.llm_model:
        return LocalTransformersGenerator(model_path=settings.llm_model)
    return LocalTransformersGenerator()

"""Typed settings: one base class with the shared fields, one subclass per area, one flag generator.

Every setting has one name and one default everywhere. The shared ones live on :class:`CodeRAGSettings`
(corpus, encoder, the LLM backend / URL / model / key, ``k``, ``max_new_tokens``, ``seed``); each area adds
its own fields in a subclass with its own environment prefix:

=====================  ======================  =============================================
class                  environment prefix      used by
=====================  ======================  =============================================
:class:`JobSettings`   ``CODERAG_``            ``coderag run | ask | evaluate | index | retrieve | corpus``
:class:`TrainingSettings` ``CODERAG_TRAIN_``   ``coderag synth | negatives | finetune``
:class:`GeneratorTrainingSettings` ``CODERAG_SFT_`` ``coderag finetune-generator``
:class:`PipelineSettings` ``CODERAG_PIPELINE_`` ``coderag pipeline compile | run | submit``
:class:`PromotionSettings` ``CODERAG_PROMOTE_`` ``coderag promote`` and the pipeline's deploy step
=====================  ======================  =============================================

(the services' settings, in ``serving/settings.py``, derive from the same base). Values come from flags,
then the environment, then defaults; nothing else in the code reads the environment. Secrets are never
flags (a flag is visible in ``ps``): the LLM key comes from ``CODERAG_LLM_API_KEY`` or ``OPENAI_API_KEY``,
or from the file named by ``llm_api_key_file`` (a mounted Kubernetes Secret).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_settings_flags(parser, JobSettings, ("k", "llm_backend"))
    >>> settings = JobSettings.from_args(parser.parse_args(["-k", "5"]), "example")
    >>> settings.k
    5
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coderag.errors import ConfigError
from coderag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT

log = logging.getLogger(__name__)

_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")
DEFAULT_QUESTION = "What is the total revenue of orders placed by each customer?"
MAX_K = 50
MAX_CANDIDATES = 16  # most SQL candidates voted on per question (n_candidates)
MAX_EXAMPLES = 16  # most retrieved question -> SQL examples per prompt (examples)


def http_url(value: str | None) -> str | None:
    """``value`` without a trailing slash; ``ValueError`` unless it is an http(s) URL (empty: unset)."""
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class CodeRAGSettings(BaseSettings):
    """Base of every settings object: the shared fields, ``CODERAG_`` env prefix, flags override env."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_", extra="forbid", validate_default=True,
                                      populate_by_name=True)

    corpus: str = Field("builtin", description="corpus: builtin (generated offline), builtin-varied (the generator "
                                               "with more domains, wide schemas, Spider-like naming and synonym "
                                               "questions), a .parquet/.json/.jsonl path, or a hub dataset name")
    encoder: str | None = Field(None, description="sentence-transformers directory or hub name "
                                                  "(default: the offline all-MiniLM-L6-v2)")
    encoder_backend: Literal["torch", "onnx", "onnx-int8"] | None = Field(
        None, description="how questions are embedded: torch, onnx (ONNX Runtime fp32) or onnx-int8 (8-bit "
                          "weights); index build exports the ONNX file into the index; unset: torch at build, "
                          "the index manifest's when serving")
    llm_backend: Literal["local", "openai"] = Field(
        "local", description="SQL generator: local transformers model or an OpenAI-compatible endpoint")
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible base URL (vLLM: http://host/v1; KServe: http://host/openai/v1); "
                          "setting it selects the openai backend")
    llm_model: str | None = Field(None, description="served model name (openai) or local model path/hub name")
    llm_api_key: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("CODERAG_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key of the OpenAI-compatible endpoint (environment only)")
    llm_api_key_file: Path | None = Field(
        None, description="file holding the API key (a mounted Secret); used when no key is in the environment")
    llm_timeout_s: float = Field(60.0, gt=0, description="seconds per LLM request")
    llm_max_retries: int = Field(2, ge=0, le=10, description="retries of a failed LLM request (openai client)")
    k: int = Field(3, ge=1, le=MAX_K, description="schemas retrieved per question")
    max_new_tokens: int = Field(128, ge=8, le=4096, description="generation budget per question (tokens)")
    n_candidates: int = Field(1, ge=1, le=MAX_CANDIDATES,
                              description="SQL candidates sampled per question and voted on by their execution "
                                          "results (1: one greedy reply)")
    sampling_temperature: float = Field(0.7, gt=0, le=2, description="sampling temperature of the candidates "
                                                                     "when n_candidates > 1")
    examples: int = Field(0, ge=0, le=MAX_EXAMPLES,
                          description="question -> SQL examples of the synthetic training split retrieved into "
                                      "the prompt (0: none)")
    seed: int = Field(0, description="seed for sampling, splits and training")

    # The fields that become flags of the command using this class (None: every non-secret field).
    FLAG_FIELDS: ClassVar[tuple[str, ...] | None] = None

    @field_validator("llm_base_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _backend_from_url(self):
        if self.llm_base_url and "llm_backend" not in self.model_fields_set:
            self.llm_backend = "openai"
        return self

    def api_key(self) -> str | None:
        """The LLM key: the environment's, else the content of ``llm_api_key_file``, else None."""
        key = self.llm_api_key.get_secret_value()
        if not key and self.llm_api_key_file is not None:
            try:
                key = self.llm_api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read llm_api_key_file ({exc.strerror})") from None
        return key or None

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict with secrets masked (safe to log)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else ""
            elif isinstance(value, str):
                value = _URL_PASSWORD.sub(r"\1***@", value)  # a database URL's password
            elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
                value = str(value)
            out[name] = value
        return out

    def log_startup(self, service: str) -> None:
        """Log the effective settings once, at start-up."""
        log.info("settings service=%s %s", service, json.dumps(self.describe(), sort_keys=True, default=str))

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable a field is read from."""
        if name == "llm_api_key":
            return "CODERAG_LLM_API_KEY"
        return f"{cls.model_config['env_prefix']}{name.upper()}"

    @classmethod
    def from_values(cls, **values: Any):
        """Settings from ``values`` and defaults only, never the environment.

        For a settings object one service derives from its own (the RAG endpoint's in-process
        retriever): that service's settings are the one source, read once.
        """

        class ValuesOnly(cls):
            @classmethod
            def settings_customise_sources(cls_, settings_cls, init_settings, **_sources):
                return (init_settings,)

        ValuesOnly.__name__ = ValuesOnly.__qualname__ = cls.__name__
        return ValuesOnly(**values)

    @classmethod
    def from_flags(cls, **flags: Any):
        """Settings from keyword flags; a flag left as ``None`` falls back to env, then the default.

        An invalid value raises :class:`~coderag.errors.ConfigError` naming the setting, its flag and
        its environment variable, so a command prints one line instead of pydantic's report.
        """
        try:
            return cls(**{k: v for k, v in flags.items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            hint = f" (flag --{where.replace('_', '-')} or {cls.env_name(where)})" if where in cls.model_fields else ""
            raise ConfigError(f"invalid setting {where}: {first['msg']}{hint}") from None

    @classmethod
    def from_args(cls, args: Any, service: str, **extra: Any):
        """Settings from an argparse namespace (one attribute per field) plus ``extra``, logged once."""
        flags = {name: getattr(args, name, None) for name in cls.model_fields}
        flags.update(extra)
        settings = cls.from_flags(**flags)
        settings.log_startup(service)
        return settings


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _strip_optional(annotation):
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_settings_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings_cls: type[CodeRAGSettings],
                       names: typing.Iterable[str] | None = None, *, style: Literal["cli", "kserve"] = "cli",
                       required: typing.Iterable[str] = ()) -> None:
    """Add one flag per settings field, with type, ``choices`` and help taken from the field.

    Every flag defaults to ``None`` so a value left out falls back to the environment, then the field's
    default (:meth:`CodeRAGSettings.from_args`). Secret fields never become flags.

    Args:
        parser: the parser (or argument group) to add to.
        settings_cls: the settings class whose fields become flags.
        names: the fields to expose (default: ``settings_cls.FLAG_FIELDS``, else every field).
        style: ``"cli"`` spells flags ``--max-new-tokens`` (``-k`` for ``k``); ``"kserve"`` spells them
            ``--max_new_tokens`` like KServe's own server flags.
        required: fields whose flag must be given.

    Example:
        >>> p = argparse.ArgumentParser(); add_settings_flags(p, JobSettings, ["llm_backend"])
        >>> p.parse_args(["--llm-backend", "openai"]).llm_backend
        'openai'
    """
    required = set(required)
    fields = settings_cls.model_fields
    wanted = list(names) if names is not None else list(settings_cls.FLAG_FIELDS or fields)
    for name in wanted:
        info = fields[name]
        annotation = _strip_optional(info.annotation)
        if annotation is SecretStr:
            continue
        spelled = f"--{name}" if style == "kserve" else f"--{name.replace('_', '-')}"
        flags = ["-k"] if (name == "k" and style == "cli") else [spelled]
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if typing.get_origin(annotation) is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif annotation is bool:
            if style == "cli":
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = _parse_bool
        elif annotation in (int, float, Path):
            kwargs["type"] = annotation
        default = info.default
        shown = "" if default is None or isinstance(default, SecretStr) else f"; default {default!r}"
        if isinstance(default, Path):
            shown = f"; default {str(default)!r}"
        kwargs["help"] = f"{info.description or name}{shown}; env {settings_cls.env_name(name)}"
        if name in required:
            kwargs["required"] = True
        parser.add_argument(*flags, **kwargs)


class JobSettings(CodeRAGSettings):
    """The CLI's own commands: ``run``, ``ask``, ``evaluate``, ``index build``, ``retrieve``, ``corpus``.

    Env names are ``CODERAG_<FIELD>``.
    """

    n_records: int | None = Field(None, ge=1, description="corpus records to use (builtin default 2000)")
    out_dir: Path = Field(Path("runs/main"), description="where `coderag run` writes the index and results.json")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop retrieved schemas scoring below this")
    n_eval: int = Field(12, ge=1, description="questions scored for EM/EX")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="with --examples: share of domains held out; examples "
                                                              "come from the other (training) domains only, and "
                                                              "generated corpora score held-out questions")
    question: str = Field(DEFAULT_QUESTION, description="the sample question answered at the end")
    batch_size: int = Field(64, ge=1, description="texts per encoder batch")
    split: str = Field("train", description="hub dataset split")
    spider_dir: Path | None = Field(None, description="a benchmark in Spider's layout (tables.json, "
                                                      "database/<db_id>/<db_id>.sqlite); else --corpus records")
    questions_file: Path | None = Field(None, description="the benchmark's questions (default dev.json beside "
                                                          "tables.json)")
    schemas: str = Field("retrieved", pattern=r"^(all|(retrieved|oracle|none)(,(retrieved|oracle|none))*)$",
                         description="schemas in the prompt: retrieved, oracle, none, a comma list, or all")
    ex_mode: Literal["test-suite", "strict"] = Field(
        "test-suite", description="EX semantics: the official test-suite evaluator's, or exact column order")
    keep_distinct: bool = Field(False, description="keep DISTINCT when comparing results (test-suite mode)")
    limit: int | None = Field(None, ge=1, description="score only the first N questions")
    db: str | None = Field(None, description="database: an SQLAlchemy URL (sqlite:///file, postgresql://..., "
                                             "mysql+pymysql://...) or a SQLite file; put a password in "
                                             "CODERAG_DB or ~/.pgpass, not on the command line")
    sample_values: int = Field(0, ge=0, le=20, description="distinct sample values per column put into each "
                                                          "table's snippet when indexing a database")
    transpile: bool = Field(False, description="rewrite generated SQLite-style SQL into the database's dialect "
                                               "before the guard and execution")
    device: str | None = Field(None, pattern=r"^(cpu|cuda(:\d+)?|mps)$",
                               description="encode with the tokenise-ahead encoder on this device (cuda: fp16, "
                                           "worker tokenisers); default: plain sentence-transformers encode")
    encode_workers: int | None = Field(None, ge=0, le=256, description="tokenizer processes with --device "
                                                                       "(default: CPU cores - 1)")
    index_type: Literal["flat", "ivf", "hnsw"] = Field("flat", description="FAISS structure: exact flat, or "
                                                                          "approximate ivf / hnsw for large corpora")
    nlist: int | None = Field(None, ge=1, description="IVF cells (default sqrt(n))")
    nprobe: int | None = Field(None, ge=1, description="IVF cells searched per query (default nlist/16)")
    hnsw_m: int | None = Field(None, ge=2, le=256, description="HNSW links per node (default 32)")
    ef_construction: int | None = Field(None, ge=1, description="HNSW build candidate list (default 80)")
    ef_search: int | None = Field(None, ge=1, description="HNSW search candidate list (default 128)")
    lexical_weight: float = Field(DEFAULT_LEXICAL_WEIGHT, ge=0.0, le=1.0,
                                  description="hybrid retrieval: schemas rank by cosine + this x BM25 over their "
                                              "identifiers (0: cosine only); stored in the index manifest")

    def index_spec(self):
        """The :class:`~coderag.retrieval.ann.IndexSpec` these settings describe."""
        from coderag.retrieval.ann import IndexSpec

        return IndexSpec(self.index_type, nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m,
                         ef_construction=self.ef_construction, ef_search=self.ef_search)

    def schema_modes(self) -> list[str]:
        """The schemas modes to run, in order (``all``: retrieved, oracle, none)."""
        if self.schemas == "all":
            return ["retrieved", "oracle", "none"]
        return list(dict.fromkeys(self.schemas.split(",")))


PROFILES = ("laptop", "full")
# A training profile is a named set of defaults: the fields it names take its values unless a flag or an
# environment variable sets them. "laptop" is the fields' own defaults (minutes on 2 cores); "full" trains on
# every synthesized pair for 3 epochs with CachedMNRL at batch 256, for a GPU. It mines no hard negatives: the
# builtin corpus has ~320 train schemas, so a batch of 256 already holds nearly every sibling schema as an
# in-batch negative, and 3 mined negatives a pair leave the no-duplicates sampler unable to fill one batch of
# 256 distinct texts (0 steps ran on an H100; benchmarks/encoder_ablation.py has the measurements).
TRAINING_PROFILES: dict[str, dict[str, Any]] = {
    "laptop": {},
    "full": {"max_train_pairs": 0, "n_negatives": 0, "epochs": 3.0, "batch_size": 256, "cached": True,
             "mini_batch_size": 64, "train_max_seq_length": 256},
}
PIPELINE_PROFILES: dict[str, dict[str, Any]] = {
    "laptop": {},
    "full": {"max_train_pairs": 0, "n_negatives": 0, "epochs": 3.0, "batch_size": 256, "max_steps": 0,
             "cached": True},
}


class _Profiled:
    """Mixin: after validation, every field the chosen profile names and no flag/env set takes its value."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="after")
    def _apply_profile(self):
        for name, value in self.PROFILE_DEFAULTS[self.profile].items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)  # not counted as set: submit sends only what was set
        return self

    def profile_values(self) -> dict[str, Any]:
        """The fields the profile chose (those no flag or environment variable overrode)."""
        return {n: getattr(self, n) for n in self.PROFILE_DEFAULTS[self.profile] if n not in self.model_fields_set}


class TrainingSettings(_Profiled, CodeRAGSettings):
    """The training stage (``coderag synth | negatives | finetune``); env ``CODERAG_TRAIN_<FIELD>``.

    The defaults are sized so the whole stage runs in minutes on a 2-core laptop (``profile="laptop"``);
    ``profile="full"`` swaps in :data:`TRAINING_PROFILES` ["full"] for every field no flag or environment
    variable sets.
    """

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_TRAIN_"}
    PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = TRAINING_PROFILES

    profile: Literal["laptop", "full"] = Field(
        "laptop", description="named training defaults: laptop (minutes on 2 cores) or full (all pairs, 3 epochs, "
                              "CachedMNRL batch 256; for a GPU); explicit flags still override")

    n_records: int = Field(2000, ge=10, description="corpus records")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of domains held out for evaluation")
    # synthesis
    synth_backend: Literal["offline", "llm"] = Field("offline", description="pair synthesis: offline templates or the LLM")
    categories: str = Field("text2code,code2text,code2code,hybrid", description="synthesis categories, comma-separated")
    max_pairs: int | None = Field(None, ge=1, description="cap on the synthesized pairs kept")
    concurrency: int = Field(4, ge=1, le=256, description="LLM requests in flight during synthesis")
    # negatives
    n_negatives: int = Field(3, ge=0, le=32, description="hard negatives mined per pair (0: in-batch only)")
    top_k: int = Field(30, ge=1, le=1000, description="candidates searched per pair when mining")
    perc_pos: float = Field(0.95, gt=0, le=1, description="keep candidates scoring below this x the positive")
    negatives_corpus: Literal["positives", "schemas"] = Field(
        "positives", description="mine from the pairs' unique positives or the corpus schema snippets")
    # fine-tuning
    epochs: float = Field(1.0, gt=0, description="training epochs")
    batch_size: int = Field(32, ge=2, description="training batch size")
    learning_rate: float = Field(5e-5, gt=0, description="learning rate")
    scale: float = Field(20.0, gt=0, description="MNRL similarity scale")
    cached: bool = Field(False, description="CachedMNRL (large batches, GradCache)")
    mini_batch_size: int = Field(32, ge=1, description="CachedMNRL mini-batch size")
    max_steps: int | None = Field(None, ge=1, description="cap on training steps")
    max_seq_length: int = Field(256, ge=8, le=512, description="saved model / evaluation input length")
    train_max_seq_length: int = Field(128, ge=8, le=512, description="training truncation (tokens)")
    tasks: str = Field("question->schema,paraphrase->schema,hybrid_question->schema",
                       description="pair tasks to train on, comma-separated, or 'all'")
    max_train_pairs: int = Field(512, ge=0, description="seeded subsample of the pairs (0: all)")
    max_eval_queries: int | None = Field(None, ge=1, description="cap on held-out evaluation questions")
    spider_dir: Path | None = Field(None, description="a Spider release to score base vs tuned on, too")
    device: str | None = Field(None, description="cpu | cuda (default: cuda when present)")
    output: Path | None = Field(None, description="directory to write")

    def task_list(self) -> tuple[str, ...] | None:
        """The pair tasks to train on; None means every task in the dataset."""
        if self.tasks.strip().lower() == "all":
            return None
        return tuple(t.strip() for t in self.tasks.split(",") if t.strip())

    def category_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.categories.split(",") if c.strip())


class GeneratorTrainingSettings(CodeRAGSettings):
    """Fine-tuning the SQL generator (``coderag finetune-generator``); env ``CODERAG_SFT_<FIELD>``.

    ``llm_model`` names the generator to start from (default: the offline SmolLM2 GGUF), ``encoder`` the
    retriever that picks each training prompt's schemas, ``k`` how many. The defaults suit a GPU; on a
    2-core CPU pass ``--max-steps`` and ``--max-examples`` (one LoRA step of 8 prompts takes minutes there).
    """

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_SFT_"}

    n_records: int = Field(2000, ge=10, description="corpus records")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of domains held out (never trained on)")
    prompt_schemas: Literal["retrieved", "gold"] = Field(
        "retrieved", description="schemas in each training prompt: the retriever's top-k (gold kept in) or the "
                                 "record's own schema alone")
    max_examples: int | None = Field(None, ge=1, description="seeded cap on the training examples")
    epochs: float = Field(1.0, gt=0, description="passes over the examples (unless --max-steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (default: from --epochs)")
    batch_size: int = Field(8, ge=1, description="examples per step")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW peak learning rate")
    lora_r: int = Field(16, ge=1, le=256, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scale (alpha)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    max_seq_length: int = Field(1024, ge=16, le=8192, description="prompt + answer token cap (longer examples "
                                                                  "are skipped)")
    merge: bool = Field(False, description="save the weights with the adapter merged in (else the adapter alone)")
    device: Literal["cpu", "cuda"] | None = Field(None, description="cpu | cuda (default: cuda when present)")
    output: Path | None = Field(None, description="directory to write")


PIPELINE_PARAMETERS = (
    "corpus", "n_records", "eval_fraction", "synth_backend", "max_train_pairs", "n_negatives",
    "encoder", "profile", "epochs", "batch_size", "max_steps", "learning_rate", "cached", "k", "n_eval",
    "max_new_tokens", "n_candidates", "sampling_temperature", "examples", "llm_base_url", "llm_model",
    "benchmark_dir", "n_benchmark", "min_recall_at_5", "min_execution_accuracy",
    "max_regression", "current_metrics", "shard_size", "index_device", "index_type", "lexical_weight", "deploy_dir",
    "promote_repo",
    "promote_env", "generator_sft_steps", "seed",
)


# A local run scores fewer questions than the cluster's defaults (200 + 200) so that it takes minutes on 2 cores:
# 50 held-out synthetic + 50 benchmark questions. Flags and environment variables still override these.
LOCAL_RUN = {"n_eval": 50, "n_benchmark": 50}
# Where a local run finds Spider (the shared datasets beside the checkout), if present.
LOCAL_BENCHMARKS = (Path(__file__).resolve().parents[2] / "shared" / "datasets" / "spider",
                    Path("../shared/datasets/spider"))


class PipelineSettings(_Profiled, CodeRAGSettings):
    """Pipeline parameters plus run / submission options; env ``CODERAG_PIPELINE_<FIELD>``.

    The fields in :data:`PIPELINE_PARAMETERS` are the pipeline's own parameters (same names); the others say
    where and how to run it. Defaults are sized so ``coderag pipeline run --local`` takes minutes on 2 cores.
    """

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_PIPELINE_"}
    PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = PIPELINE_PROFILES

    profile: Literal["laptop", "full"] = Field(
        "laptop", description="named training defaults: laptop (the local run's minutes on 2 cores) or full (all "
                              "pairs, 3 epochs, CachedMNRL batch 256; the fine-tune step asks for a GPU); "
                              "explicit flags still override")
    n_records: int = Field(2000, ge=20, description="corpus records")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of domains held out for evaluation")
    synth_backend: Literal["offline", "llm"] = Field("offline", description="pair synthesis: offline templates or the LLM")
    max_train_pairs: int = Field(256, ge=0, description="training pairs kept (0: all)")
    n_negatives: int = Field(0, ge=0, le=32, description="hard negatives mined per pair (0: in-batch only)")
    epochs: float = Field(1.0, gt=0, description="training epochs")
    batch_size: int = Field(16, ge=2, description="training batch size")
    max_steps: int = Field(16, ge=0, description="cap on training steps (0: no cap)")
    learning_rate: float = Field(5e-5, gt=0, description="learning rate")
    cached: bool = Field(False, description="CachedMNRL (GradCache): large batches in bounded memory")
    n_eval: int = Field(200, ge=1, description="held-out synthetic questions scored for EM/EX")
    benchmark_dir: str = Field("", description="a benchmark in Spider's layout also scored (a path the evaluate "
                                               "step can read; local run: ../shared/datasets/spider when present)")
    n_benchmark: int = Field(200, ge=1, description="benchmark questions scored (a seeded sample)")
    min_recall_at_5: float = Field(0.5, ge=0, le=1, description="gate floor for Recall@5")
    min_execution_accuracy: float = Field(0.0, ge=0, le=1, description="gate floor for Execution Accuracy")
    max_regression: float = Field(0.0, ge=0, description="how far below the deployed metrics the gate tolerates")
    current_metrics: str = Field("", description="deployed release JSON to gate against "
                                                 "(local run: <deploy_dir>/current.json)")
    shard_size: int = Field(50000, ge=1, description="unique schemas per embedding shard; each shard is one pod "
                                                    "under dsl.ParallelFor, merged into one index")
    index_device: Literal["", "cuda", "cpu"] = Field("", description="embed shards with the tokenise-ahead encoder "
                                                                     "on this device (empty: plain encode)")
    index_type: Literal["flat", "ivf", "hnsw"] = Field("flat", description="FAISS structure of the merged index")
    lexical_weight: float = Field(DEFAULT_LEXICAL_WEIGHT, ge=0.0, le=1.0,
                                  description="hybrid retrieval of the index: cosine + this x BM25 over schema "
                                              "identifiers (0: cosine only); evaluated and served as stored")
    deploy_dir: str = Field("", description="where passing releases are published (local run: runs/deployed)")
    promote_repo: str = Field("", description="GitOps repository to promote into: a git remote URL or a checkout "
                                              "(empty: no promotion)")
    promote_env: Literal["dev", "staging", "prod"] = Field("dev", description="overlay a passing release goes to")
    generator_sft_steps: int = Field(0, ge=0, description="LoRA steps of the opt-in generator fine-tuning step "
                                                          "(a GPU step; 0: skipped)")
    # --- how to run it ---
    workdir: Path | None = Field(None, description="local run directory (default runs/<timestamp>)")
    question: str = Field(DEFAULT_QUESTION, description="sample question answered after a local run")
    host: str | None = Field(None, description="KFP API URL for submit")
    experiment: str = Field("coderag", description="KFP experiment for submit")
    run_name: str | None = Field(None, description="KFP run name (default coderag-<timestamp>)")
    namespace: str | None = Field(None, description="KFP namespace (multi-user installs)")
    image: str | None = Field(None, description="component image (default components.image.IMAGE)")

    def local_arguments(self) -> dict:
        """The parameters of a local run (``coderag pipeline run --local``): :data:`LOCAL_RUN` for every one
        not set by a flag or the environment, and the shared Spider benchmark when it is beside the checkout."""
        args = self.pipeline_arguments()
        for name, value in LOCAL_RUN.items():
            if name not in self.model_fields_set:
                args[name] = value
        if "benchmark_dir" not in self.model_fields_set:
            found = next((p for p in LOCAL_BENCHMARKS if (p / "tables.json").is_file()), None)
            if found is not None:
                args["benchmark_dir"] = str(found.resolve())
        return args

    def pipeline_arguments(self, names: typing.Iterable[str] = PIPELINE_PARAMETERS) -> dict:
        """The pipeline's parameters as a ``{name: value}`` mapping (unset optionals as ``""``)."""
        out = {}
        for name in names:
            value = getattr(self, name)
            out[name] = "" if value is None else value
        return out


class PromotionSettings(CodeRAGSettings):
    """Where and how promotions are committed (env ``CODERAG_PROMOTE_<FIELD>``)."""

    model_config = CodeRAGSettings.model_config | {"env_prefix": "CODERAG_PROMOTE_"}

    repo_dir: Path = Field(Path("."), description="git checkout holding manifests/overlays")
    branch: str | None = Field(None, description="branch to commit to (created if missing); default: the current one")
    author_name: str = Field("coderag-promote", description="commit author name")
    author_email: str = Field("coderag-promote@users.noreply.local", description="commit author e-mail")
    kubectl: str = Field("kubectl", description="kubectl used to build the overlay (validation skipped when absent)")
    git_token: SecretStr = Field(SecretStr(""), description="token for pushing to an https GitOps remote "
                                                            "(a Kubernetes Secret in the cluster; environment only)")

"""Settings of the pipeline service (``coderag pipeline compile | run --local | submit``).

Flags override ``CODERAG_PIPELINE_*`` environment variables, which override these defaults. The fields
in :data:`PIPELINE_PARAMETERS` are the pipeline's own parameters (same names); the others say where and
how to run it. Defaults are sized so ``coderag pipeline run --local`` finishes in minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coderag.job_settings import DEFAULT_QUESTION
from coderag.settings import CodeRAGSettings

PIPELINE_PARAMETERS = (
    "corpus_source", "n_records", "eval_fraction", "synth_backend", "max_train_pairs", "n_negatives",
    "base_model", "epochs", "batch_size", "max_steps", "learning_rate", "k", "n_eval_questions",
    "max_new_tokens", "llm_base_url", "llm_model", "min_recall_at_5", "min_execution_accuracy",
    "max_regression", "current_metrics", "deploy_dir", "promote_repo", "promote_env", "seed",
)


class PipelineSettings(CodeRAGSettings):
    """Pipeline parameters plus run / submission options; env names are ``CODERAG_PIPELINE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_PIPELINE_", extra="forbid", validate_default=True)

    # --- pipeline parameters ---
    corpus_source: str = Field("builtin", description="builtin | .parquet/.json/.jsonl path | hub dataset name")
    n_records: int = Field(2000, ge=20, description="corpus records")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of domains held out for evaluation")
    synth_backend: str = Field("offline", pattern="^(offline|llm)$",
                               description="pair synthesis: offline templates or the LLM")
    max_train_pairs: int = Field(256, ge=0, description="training pairs kept (0: all)")
    n_negatives: int = Field(0, ge=0, le=16, description="hard negatives mined per pair (0: in-batch only)")
    base_model: str = Field("", description="encoder to fine-tune (empty: bundled all-MiniLM-L6-v2)")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    max_steps: int = Field(16, ge=0, description="cap on training steps (0: no cap)")
    learning_rate: float = Field(5e-5, gt=0)
    k: int = Field(3, ge=1, le=50, description="schemas put in the SQL prompt")
    n_eval_questions: int = Field(10, ge=1, description="held-out questions scored for EM/EX (one LLM call each)")
    max_new_tokens: int = Field(96, ge=8, le=4096, description="SQL generation budget per question")
    llm_base_url: str = Field("", description="OpenAI-compatible endpoint (empty: local SmolLM2)")
    llm_model: str = Field("", description="served model name (or a local model path)")
    min_recall_at_5: float = Field(0.5, description="gate floor for Recall@5")
    min_execution_accuracy: float = Field(0.0, description="gate floor for Execution Accuracy")
    max_regression: float = Field(0.0, ge=0, description="how far below the deployed metrics the gate tolerates")
    current_metrics: str = Field("", description="deployed release JSON to gate against "
                                                 "(local run: <deploy_dir>/current.json)")
    deploy_dir: str = Field("", description="where passing releases are published (local run: runs/deployed)")
    promote_repo: str = Field("", description="GitOps repository to promote into: a git remote URL (cloned, "
                              "committed to and pushed) or a checkout (empty: no promotion)")
    promote_env: str = Field("dev", pattern="^(dev|staging|prod)$")
    seed: int = 0
    # --- how to run it ---
    workdir: Path | None = Field(None, description="local run directory (default runs/<timestamp>)")
    question: str = Field(DEFAULT_QUESTION, description="sample question answered after a local run")
    host: str | None = Field(None, description="KFP API URL for submit")
    experiment: str = Field("coderag", description="KFP experiment for submit")
    run_name: str | None = Field(None, description="KFP run name (default coderag-<timestamp>)")
    namespace: str | None = Field(None, description="KFP namespace (multi-user installs)")
    image: str | None = Field(None, description="component image (default components.image.IMAGE)")

    def pipeline_arguments(self) -> dict:
        """The pipeline's parameters as a ``{name: value}`` mapping."""
        return {name: getattr(self, name) for name in PIPELINE_PARAMETERS}

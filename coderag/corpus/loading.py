"""Loading a corpus: the builtin generator, local parquet / JSON / JSONL files, or a hub dataset."""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from pathlib import Path

from coderag.corpus.generator import VARIED, generate_corpus
from coderag.corpus.records import GRETEL_COLUMNS, require_columns
from coderag.errors import CorpusError

log = logging.getLogger(__name__)

BUILTIN = "builtin"
# The generator with every feature on: more domains, wider schemas, Spider-like naming, synonym questions.
BUILTIN_VARIED = "builtin-varied"
_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}
# Rows without these cannot be embedded, asked or executed.
_REQUIRED_TEXT = ("sql_prompt", "sql_context", "sql")


def load_corpus(source: str = BUILTIN, *, split: str = "train", limit: int | None = None,
                seed: int = 0) -> list[dict]:
    """Load gretel-format records from ``source``.

    ``source`` is ``"builtin"`` (the offline generator: ``limit`` records, default 2000),
    ``"builtin-varied"`` (the same generator with every feature of
    :data:`~coderag.corpus.generator.VARIED`: 69 domains, wide multi-table schemas, Spider-like naming,
    synonym questions), a local
    ``.parquet`` / ``.json`` / ``.jsonl`` file or a directory of them (``split`` is not used: all
    files form one split), or else a dataset name on the Hugging Face hub read with
    ``datasets.load_dataset(source, split=split)``. With ``limit`` below the corpus size, a seeded
    random sample of ``limit`` records is returned (original order kept). Raises :class:`CorpusError`
    when the source cannot be read or lacks gretel columns.

    Args:
        source: ``"builtin"``, ``"builtin-varied"``, a local file or directory, or a hub dataset name.
        split: the hub split to read.
        limit: the most records to return (a positive number); ``None`` for all.
        seed: seed of the builtin generator and of the sample.

    Returns:
        Record dicts with the gretel columns; those with an empty ``sql_prompt``, ``sql_context`` or
        ``sql`` are dropped.

    Raises:
        CorpusError: a bad ``limit``, a missing or unreadable source, missing columns, or no usable record.

    Example:
        >>> len(load_corpus("builtin", limit=3))
        3
    """
    if limit is not None and limit < 1:
        raise CorpusError(f"limit must be a positive number of records, got {limit}.")
    if source == BUILTIN:
        return generate_corpus(n_records=limit or 2000, seed=seed)
    if source == BUILTIN_VARIED:
        return generate_corpus(n_records=limit or 2000, seed=seed, features=VARIED)
    path = Path(source).expanduser()
    if path.exists():
        dataset, label = _load_local(path), f"file {path}"
    elif path.suffix.lower() in _FORMATS or source.startswith((".", "/", "~")):
        raise CorpusError(f"corpus file {path} does not exist: pass an existing parquet/json/jsonl file, "
                          f"a directory of them, '{BUILTIN}', or a hub dataset name.")
    else:
        dataset, label = _load_hub(source, split), f"dataset {source!r}"
    require_columns(dataset.column_names, label)
    if limit is not None and limit < len(dataset):
        picked = sorted(random.Random(seed).sample(range(len(dataset)), limit))
        dataset = dataset.select(picked)
    records = [{c: row[c] for c in GRETEL_COLUMNS} for row in dataset]
    usable = [r for r in records if all(isinstance(r[c], str) and r[c].strip() for c in _REQUIRED_TEXT)]
    if len(usable) < len(records):
        log.warning("dropped %d records of %s with an empty sql_prompt, sql_context or sql",
                    len(records) - len(usable), label)
    if not usable:
        raise CorpusError(f"corpus {label} holds no usable records: each needs a non-empty sql_prompt, "
                          "sql_context and sql.")
    return usable


def _local_files(path: Path) -> tuple[str, list[str]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _FORMATS)
        if not files:
            raise CorpusError(f"directory {path} holds no .parquet, .json or .jsonl files: point at a corpus file.")
    else:
        files = [path]
    kinds = {_FORMATS.get(p.suffix.lower()) for p in files}
    if None in kinds:
        raise CorpusError(f"corpus file {path} is not .parquet, .json or .jsonl: convert it to one of those.")
    if len(kinds) > 1:
        raise CorpusError(f"directory {path} mixes parquet and json files: keep one format per corpus.")
    return kinds.pop(), [str(p) for p in files]


@contextmanager
def _quiet_progress():
    """Hide datasets' progress bars unless INFO logging was asked for (quiet by default)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not log.isEnabledFor(logging.INFO):
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _load_local(path: Path):
    import datasets  # heavy import, only for file and hub sources

    builder, files = _local_files(path)
    try:
        with _quiet_progress():
            return datasets.load_dataset(builder, data_files=files, split="train")
    except Exception as exc:  # datasets raises many types for unreadable files
        raise CorpusError(f"cannot read corpus {path} as {builder}: {_first_line(exc)}; check the file is "
                          "valid and not truncated.") from exc


def _load_hub(name: str, split: str):
    import datasets

    try:
        with _quiet_progress():
            return datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown name, unknown split: all end the same way for the user
        raise CorpusError(f"cannot load hub dataset {name!r} (split {split!r}): {_first_line(exc)}; check the "
                          "name and network access (the hub may be unreachable), or pass a local "
                          f"parquet/json/jsonl file or '{BUILTIN}'.") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

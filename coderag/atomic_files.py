"""Atomic writes of files and directories: write beside the target, then rename over it.

A reader never sees a half-written file or directory, and a failed write leaves nothing behind (an
existing target stays as it was).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, chunks: str | Iterable[str], *, mode: int = 0o644) -> None:
    """Write ``chunks`` (one string or an iterable of strings) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if isinstance(chunks, str):
                fh.write(chunks)
            else:
                fh.writelines(chunks)
        os.chmod(tmp, mode)  # mkstemp creates 0600; our artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    write_text_atomic(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@contextmanager
def atomic_directory(target: str | os.PathLike, *, mode: int = 0o755) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; on success it replaces ``target`` whole.

    A directory cannot be renamed over a non-empty one, so an existing ``target`` is moved aside first
    and restored if the second rename fails: a reader sees the old or the new directory, never a mix.
    If the block raises, the staging directory is removed and ``target`` is left as it was.

    Args:
        target: the directory to write.
        mode: permissions of the published directory (``mkdtemp`` makes it private otherwise).

    Example:
        >>> import tempfile; root = Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "out") as staging:
        ...     _ = (staging / "a.txt").write_text("a")
        >>> sorted(p.name for p in (root / "out").iterdir())
        ['a.txt']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        staging.chmod(mode)
        yield staging
        if not target.exists():
            os.rename(staging, target)
            return
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(backup)
        os.rename(target, backup)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

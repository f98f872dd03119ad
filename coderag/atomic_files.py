"""Atomic file writes: a temp file in the target's directory, then ``os.replace``.

A reader never sees a half-written file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
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

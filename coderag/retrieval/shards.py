"""Embedding a large corpus in shards (one pod each) and merging the shards into one index.

Shard ``i`` of a corpus cut into ``shard_size`` snippets holds rows ``[i * shard_size, (i + 1) * shard_size)``
in corpus order. A shard directory holds ``vectors.npy`` (float32, unit rows) and ``shard.json`` (shard
number, row range, dim, encoder fingerprint, SHA-256 of the vectors), written atomically, manifest last.
:func:`merge_shards` checks the shards cover the corpus exactly once with one encoder, then indexes the
rows in corpus order, so the merged index has the same vectors and ids as an unsharded build.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coderag.atomic_files import atomic_directory
from coderag.errors import ConfigError, SchemaIndexError
from coderag.retrieval.ann import IndexSpec
from coderag.retrieval.encoder import encode, encoder_fingerprint, encoder_name
from coderag.retrieval.index import SchemaIndex

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

VECTORS_FILE = "vectors.npy"
SHARD_MANIFEST = "shard.json"
_RESHARD = "re-run the embed-shard steps with one encoder and one shard size"


def shard_count(n: int, shard_size: int) -> int:
    """How many shards of at most ``shard_size`` snippets hold ``n`` snippets (at least 1).

    Example:
        >>> shard_count(100_001, 50_000)
        3
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard size must be a positive integer, got {shard_size!r}")
    return max(1, math.ceil(n / shard_size))


def embed_shard(
    encoder_model: SentenceTransformer,
    snippets: Sequence[str],
    shard: int,
    shard_size: int,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    device: str | None = None,
    encode_workers: int | None = None,
) -> dict[str, Any]:
    """Embed shard ``shard`` of ``snippets`` and write it to ``out_dir`` atomically.

    Args:
        encoder_model: the encoder (the same one for every shard).
        snippets: the whole corpus's snippets, in corpus order.
        shard: which shard, from 0.
        shard_size: snippets per shard.
        out_dir: the shard directory to write.
        batch_size: encoder batch size.
        device: with a device, the tokenise-ahead encoder (see :meth:`SchemaIndex.build`).
        encode_workers: its tokenizer processes.

    Returns:
        The shard manifest.

    Raises:
        ConfigError: ``shard`` is outside the corpus.

    Example:
        >>> embed_shard(load_encoder(), snippets, 0, 50_000, "out/shard-0")  # doctest: +SKIP
    """
    total = shard_count(len(snippets), shard_size)
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < total:
        raise ConfigError(f"shard {shard!r} is outside the {total} shards of {len(snippets)} snippets")
    start, stop = shard * shard_size, min((shard + 1) * shard_size, len(snippets))
    texts = list(snippets[start:stop])
    if device is None:
        vectors = encode(encoder_model, texts, batch_size=batch_size)
    else:
        from coderag.retrieval.ahead_encoder import encode_ahead

        vectors = encode_ahead(encoder_model, texts, device=device, batch_size=batch_size, workers=encode_workers)
    with atomic_directory(Path(out_dir)) as staging:
        np.save(staging / VECTORS_FILE, vectors)
        manifest = {
            "shard": shard, "shards": total, "start": start, "stop": stop, "corpus_size": len(snippets),
            "dim": int(vectors.shape[1]), "encoder": encoder_name(encoder_model),
            "encoder_fingerprint": encoder_fingerprint(encoder_model),
            "sha256": hashlib.sha256((staging / VECTORS_FILE).read_bytes()).hexdigest(),
        }
        (staging / SHARD_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _read_shard(directory: Path) -> tuple[dict[str, Any], np.ndarray]:
    path = directory / SHARD_MANIFEST
    if not path.is_file():
        raise SchemaIndexError(f"{directory} has no {SHARD_MANIFEST} (not a shard, or its step was interrupted): {_RESHARD}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    data = (directory / VECTORS_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise SchemaIndexError(f"{directory / VECTORS_FILE} does not match its shard manifest checksum: {_RESHARD}")
    vectors = np.load(directory / VECTORS_FILE)
    if vectors.shape != (manifest["stop"] - manifest["start"], manifest["dim"]):
        raise SchemaIndexError(f"{directory / VECTORS_FILE} has shape {vectors.shape}, its manifest disagrees: {_RESHARD}")
    return manifest, vectors


def merge_shards(
    shard_dirs: Sequence[str | os.PathLike],
    snippets: Sequence[str],
    domains: Sequence[str] | None = None,
    *,
    spec: IndexSpec | None = None,
    encoder_label: str | None = None,
    seed: int = 0,
) -> SchemaIndex:
    """One :class:`SchemaIndex` from the shard directories of one corpus, in any order.

    Args:
        shard_dirs: the directories :func:`embed_shard` wrote, one per shard.
        snippets: the corpus's snippets (the same list the shards were cut from).
        domains: one domain per snippet.
        spec: the index structure (default: exact flat).
        encoder_label: the encoder name for the manifest (default: what the shards recorded).
        seed: seeds IVF training, as in :meth:`SchemaIndex.from_vectors`.

    Returns:
        The merged index; row i embeds snippet i.

    Raises:
        SchemaIndexError: a shard is missing, repeated, corrupt, for another corpus size or another encoder.

    Example:
        >>> index = merge_shards(["out/shard-0", "out/shard-1"], snippets, domains)  # doctest: +SKIP
    """
    shards = sorted((_read_shard(Path(d)) for d in shard_dirs), key=lambda item: item[0]["shard"])
    if not shards:
        raise SchemaIndexError(f"no shards to merge: {_RESHARD}")
    first = shards[0][0]
    numbers = [m["shard"] for m, _ in shards]
    if numbers != list(range(first["shards"])) or any(m["shards"] != first["shards"] for m, _ in shards):
        raise SchemaIndexError(f"got shards {numbers} of {first['shards']}: each shard must be merged exactly once; {_RESHARD}")
    if any(m["corpus_size"] != len(snippets) for m, _ in shards):
        raise SchemaIndexError(f"shards were cut from a corpus of {first['corpus_size']} snippets, not {len(snippets)}: {_RESHARD}")
    if len({m["encoder_fingerprint"] for m, _ in shards}) != 1:
        raise SchemaIndexError(f"shards were embedded by different encoders: {_RESHARD}")
    vectors = np.concatenate([v for _, v in shards])  # (corpus, dim), corpus order
    return SchemaIndex.from_vectors(vectors, snippets, domains, encoder_name=encoder_label or first["encoder"],
                                    encoder_fingerprint=first["encoder_fingerprint"], spec=spec, seed=seed)

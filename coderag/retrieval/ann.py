"""Which FAISS structure holds the schema vectors: exact ``flat``, or approximate ``ivf`` / ``hnsw``.

=========  ==========================  ========================================  ============================
type       FAISS class                 knobs                                     use it when
=========  ==========================  ========================================  ============================
flat       ``IndexFlatIP``             none (exact)                              up to ~1M snippets
ivf        ``IndexIVFFlat`` (IP)       ``nlist`` cells (trained), ``nprobe``     1M+, fast build, tunable
hnsw       ``IndexHNSWFlat`` (IP)      ``hnsw_m`` links, ``ef_construction``,     1M+, lowest query latency,
                                       ``ef_search``                             slower build, more memory
=========  ==========================  ========================================  ============================

All three score by inner product over unit vectors (cosine). The spec is stored in the index manifest,
and its search-time knobs (``nprobe``, ``ef_search``) are applied again when an index is loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from coderag.errors import ConfigError

INDEX_TYPES = ("flat", "ivf", "hnsw")
# FAISS warns below 39 training points per centroid; past 64 k-means gains little for its cost.
_MIN_POINTS_PER_CELL = 39
_MAX_POINTS_PER_CELL = 64


@dataclass(frozen=True)
class IndexSpec:
    """The index structure and its parameters; ``None`` picks a default from the corpus size.

    Args:
        index_type: ``flat``, ``ivf`` or ``hnsw``.
        nlist: IVF cells (default ``sqrt(n)``, at most ``n / 39``).
        nprobe: IVF cells searched per query (default ``max(1, nlist // 16)``).
        hnsw_m: HNSW links per node (default 32).
        ef_construction: HNSW candidate list while building (default 80).
        ef_search: HNSW candidate list while searching (default 128).

    Example:
        >>> IndexSpec("ivf").resolved(1_000_000).nlist
        1000
    """

    index_type: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ConfigError(f"index type must be one of {', '.join(INDEX_TYPES)}, got {self.index_type!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.nlist is not None and self.nprobe is not None and self.nprobe > self.nlist:
            raise ConfigError(f"nprobe {self.nprobe} exceeds nlist {self.nlist}: search at most every cell")

    @property
    def trained(self) -> bool:
        """Whether the structure must be trained on sample vectors before vectors are added."""
        return self.index_type == "ivf"

    def resolved(self, n: int) -> IndexSpec:
        """This spec with every default filled in for a corpus of ``n`` vectors."""
        if self.index_type == "flat":
            return IndexSpec("flat")
        if self.index_type == "ivf":
            nlist = self.nlist or max(1, min(int(math.sqrt(n)), n // _MIN_POINTS_PER_CELL))
            if nlist > n:
                raise ConfigError(f"nlist {nlist} exceeds the {n} vectors to index: use at most {n} cells or type flat")
            return IndexSpec("ivf", nlist=nlist, nprobe=min(nlist, self.nprobe or max(1, nlist // 16)))
        return IndexSpec("hnsw", hnsw_m=self.hnsw_m or 32, ef_construction=self.ef_construction or 80,
                         ef_search=self.ef_search or 128)

    def train_size(self, n: int) -> int:
        """How many of ``n`` vectors to train an IVF quantiser on (0 for structures that need none)."""
        if not self.trained:
            return 0
        return min(n, _MAX_POINTS_PER_CELL * (self.nlist or 1))

    def params(self) -> dict[str, Any]:
        """The non-default knobs, for the manifest."""
        return {key: value for key, value in asdict(self).items() if key != "index_type" and value is not None}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> IndexSpec:
        """The spec a manifest records (manifests from before index types mean ``flat``)."""
        return cls(manifest.get("index_type", "flat"), **manifest.get("index_params", {}))


def new_faiss_index(spec: IndexSpec, dim: int) -> faiss.Index:
    """An empty inner-product FAISS index for a resolved ``spec``; IVF still needs :func:`train_faiss_index`.

    Args:
        spec: a spec from :meth:`IndexSpec.resolved`.
        dim: the vector dimension.

    Returns:
        The FAISS index, search knobs applied.

    Example:
        >>> new_faiss_index(IndexSpec("hnsw").resolved(1000), 384).hnsw.efSearch
        128
    """
    if spec.index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.index_type == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index frees it
    else:
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    apply_search_params(index, spec)
    return index


def train_faiss_index(index: faiss.Index, sample: np.ndarray, seed: int = 0) -> None:
    """Train an IVF index's coarse quantiser on ``sample`` (unit float32 rows); a no-op for the others."""
    if index.is_trained:
        return
    if hasattr(index, "cp"):
        index.cp.seed = seed  # k-means is seeded: the same vectors give the same index
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Set the search-time knobs of ``spec`` (``nprobe``, ``ef_search``) on ``index``."""
    if spec.index_type == "ivf" and spec.nprobe:
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    if spec.index_type == "hnsw" and spec.ef_search:
        index.hnsw.efSearch = spec.ef_search


def index_type_of(index: faiss.Index) -> str:
    """``flat``, ``ivf`` or ``hnsw`` for a FAISS index object (``other`` for anything else)."""
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return "other"

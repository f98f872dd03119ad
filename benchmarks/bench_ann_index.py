"""Large indexes: build time, memory per vector, single-query latency and Recall@10 of flat, IVF and HNSW.

Two parts, both against exact ``IndexFlatIP`` measured in the same run:

- **scale** (``--n``, default 1M): synthetic unit vectors (timing does not depend on what the vectors
  mean). Per type: build seconds (IVF training included), bytes per vector (the serialised index / n), and
  single-query latency p50 / p99 over ``--queries`` one-at-a-time searches, k=10.
- **recall**: real encoded vectors (``--vectors DIR``: ``snippet_vectors*.npy`` and
  ``question_vectors.npy``, e.g. from ``bench_gpu_encode.py --save``), real questions as queries:
  Recall@10 of each approximate index against flat's top 10, with the same parameter rules as at scale.

    python benchmarks/bench_ann_index.py --n 1000000 --vectors runs/vectors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from coderag.retrieval.ann import IndexSpec, new_faiss_index, train_faiss_index


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


class IvfPq:
    """IVF with product-quantised codes (benchmark only, for the capacity table): 48 bytes a vector."""

    trained = True

    def __init__(self, n: int) -> None:
        self.spec = IndexSpec("ivf").resolved(n)

    def params(self) -> dict:
        return {"nlist": self.spec.nlist, "nprobe": self.spec.nprobe, "pq": "48x8"}

    def train_size(self, n: int) -> int:
        return min(n, max(self.spec.train_size(n), 256 * 64))

    def new(self, dim: int) -> faiss.Index:
        index = faiss.index_factory(dim, f"IVF{self.spec.nlist},PQ48", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).nprobe = self.spec.nprobe
        return index


def _build(spec, vectors: np.ndarray) -> tuple[faiss.Index, float]:
    started = time.perf_counter()
    index = spec.new(vectors.shape[1]) if isinstance(spec, IvfPq) else new_faiss_index(spec, vectors.shape[1])
    if spec.trained:
        rows = np.random.default_rng(0).choice(len(vectors), size=spec.train_size(len(vectors)), replace=False)
        train_faiss_index(index, vectors[np.sort(rows)])
    index.add(vectors)
    return index, time.perf_counter() - started


def _latency_ms(index: faiss.Index, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors for the scale part")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000, help="single-query searches timed per type")
    parser.add_argument("--vectors", default=None, help="directory with real snippet / question vectors (.npy)")
    parser.add_argument("--types", default="flat,ivf,hnsw,ivfpq", help="ivfpq: benchmark-only IVF-PQ (48 B codes)")
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--ef-search", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all cores)")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    types = args.types.split(",")

    def spec_for(kind: str, n: int):
        if kind == "ivfpq":
            return IvfPq(n)
        return IndexSpec(kind, nprobe=args.nprobe if kind == "ivf" else None,
                         ef_search=args.ef_search if kind == "hnsw" else None).resolved(n)

    if args.vectors:
        root = Path(args.vectors)
        corpus = _unit(np.concatenate([np.load(p) for p in sorted(root.glob("snippet_vectors*.npy"))]))
        questions = _unit(np.load(root / "question_vectors.npy"))
        flat, _ = _build(IndexSpec("flat"), corpus)
        _, truth = flat.search(questions, 10)
        print(f"recall: {len(corpus)} real encoded snippet vectors, {len(questions)} real encoded questions, k=10")
        for kind in types:
            if kind == "flat":
                continue
            spec = spec_for(kind, len(corpus))
            index, _ = _build(spec, corpus)
            _, found = index.search(questions, 10)
            hits = sum(len(set(a) & set(b)) for a, b in zip(truth.tolist(), found.tolist(), strict=True))
            print(f"  {kind:5s} {spec.params()} Recall@10 vs flat {hits / truth.size:.4f}")

    if not args.skip_scale:
        rng = np.random.default_rng(0)
        vectors = _unit(rng.standard_normal((args.n, args.dim), dtype=np.float32))
        queries = _unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
        print(f"scale: {args.n} synthetic vectors of dim {args.dim}, {args.queries} single queries, k=10, "
              f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
        baseline = None
        for kind in types:
            spec = spec_for(kind, args.n)
            index, seconds = _build(spec, vectors)
            per_vector = faiss.serialize_index(index).size / args.n
            p50, p99 = _latency_ms(index, queries)
            baseline = baseline or p99
            print(f"  {kind:5s} {spec.params()} build {seconds:7.1f}s, {per_vector:6.0f} B/vector, "
                  f"single-query p50 {p50:6.2f} ms p99 {p99:6.2f} ms (p99 / first type's {p99 / baseline:.3f})")
            del index
    return 0


if __name__ == "__main__":
    sys.exit(main())

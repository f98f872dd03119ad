"""Index-build throughput: ``SchemaIndex.build`` against a bare sentence-transformers + FAISS loop.

Both paths embed the same CREATE TABLE snippets with the same model and batch size in the same process;
the baseline is what a user would write by hand::

    vectors = model.encode(snippets, batch_size=B, normalize_embeddings=True, convert_to_numpy=True)
    index = faiss.IndexFlatIP(dim); index.add(vectors)

Runs alternate between the two (ABBA order) so drift in machine load affects both alike; the script
prints best-of and median snippets/s of each and their ratios (goal: >= 0.95).

    python benchmarks/bench_index_build.py --n 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import faiss
import numpy as np

_DOMAINS = (
    ("hospital", "patients", ["patient_id INT PRIMARY KEY", "name TEXT", "birth_date DATE", "ward TEXT"]),
    ("finance", "transactions", ["txn_id INT PRIMARY KEY", "account_id INT", "amount DECIMAL(10,2)", "posted_at DATE"]),
    ("retail", "orders", ["order_id INT PRIMARY KEY", "customer_id INT", "total DECIMAL(10,2)", "order_date DATE"]),
    ("education", "students", ["student_id INT PRIMARY KEY", "full_name TEXT", "gpa REAL", "major TEXT"]),
    ("aviation", "flights", ["flight_id INT PRIMARY KEY", "origin TEXT", "destination TEXT", "departure TIMESTAMP"]),
    ("energy", "power_plants", ["plant_id INT PRIMARY KEY", "fuel_type TEXT", "capacity_mw REAL", "country TEXT"]),
    ("music", "albums", ["album_id INT PRIMARY KEY", "artist TEXT", "title TEXT", "release_year INT"]),
    ("logistics", "shipments", ["shipment_id INT PRIMARY KEY", "warehouse_id INT", "weight_kg REAL", "shipped_on DATE"]),
)
_EXTRA = ["region TEXT", "status TEXT", "created_by INT", "notes TEXT", "score REAL", "updated_at TIMESTAMP"]


def synthetic_snippets(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` distinct schema snippets of one to three tables, lengths like the gretel corpus's."""
    rng = np.random.default_rng(seed)
    snippets, domains = [], []
    for i in range(n):
        domain, table, columns = _DOMAINS[i % len(_DOMAINS)]
        statements = []
        for t in range(int(rng.integers(1, 4))):
            extra = [c for c in _EXTRA if rng.random() < 0.4]
            statements.append(f"CREATE TABLE {table}_{i}_{t} ({', '.join(columns + extra)});")
        snippets.append(" ".join(statements))
        domains.append(domain)
    return snippets, domains


def corpus_snippets(n: int) -> tuple[list[str], list[str]]:
    from coderag.corpus import dedupe_schemas, load_corpus

    schema_corpus = dedupe_schemas(load_corpus("builtin"))
    return schema_corpus.snippets[:n], schema_corpus.snippet_domains[:n]


def bare_build(model, snippets: list[str], batch_size: int) -> faiss.Index:
    vectors = model.encode(snippets, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="snippets to index (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default=None, help="torch device for the encoder (default: cpu if no GPU)")
    parser.add_argument("--source", choices=["synthetic", "corpus"], default="synthetic",
                        help="synthetic snippets (default) or the builtin corpus's deduplicated schemas")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be positive")

    import torch

    from coderag.retrieval.encoder import encoder_fingerprint, load_encoder
    from coderag.retrieval.index import SchemaIndex

    if args.threads:
        torch.set_num_threads(args.threads)
    snippets, domains = synthetic_snippets(args.n) if args.source == "synthetic" else corpus_snippets(args.n)
    model = load_encoder(device=args.device)

    started = time.perf_counter()
    encoder_fingerprint(model)  # once per model object, then cached
    fingerprint_s = time.perf_counter() - started
    bare_build(model, snippets[:128], args.batch_size)  # warm-up: allocator, tokenizer caches

    timings: dict[str, list[float]] = {"bare": [], "coderag": []}
    for r in range(args.repeats):
        order = ("bare", "coderag") if r % 2 == 0 else ("coderag", "bare")
        for which in order:
            started = time.perf_counter()
            if which == "bare":
                index = bare_build(model, snippets, args.batch_size)
            else:
                index = SchemaIndex.build(model, snippets, domains=domains, batch_size=args.batch_size).faiss_index
            timings[which].append(time.perf_counter() - started)
            assert index.ntotal == len(snippets)

    # Best-of-N is least disturbed by other processes on a shared machine; the median is shown too.
    best = {k: len(snippets) / min(v) for k, v in timings.items()}
    median = {k: len(snippets) / statistics.median(v) for k, v in timings.items()}
    print(f"snippets: {len(snippets)} ({args.source}), batch size {args.batch_size}, device {model.device}, "
          f"torch threads {torch.get_num_threads()}, repeats {args.repeats}")
    for name, label in (("bare", "bare encode + IndexFlatIP.add"), ("coderag", "SchemaIndex.build")):
        runs = ", ".join(f"{t:.2f}s" for t in timings[name])
        print(f"{label:30s} best {best[name]:7.1f} snippets/s, median {median[name]:7.1f} (runs {runs})")
    print(f"ratio SchemaIndex.build / bare: {best['coderag'] / best['bare']:.3f} best-of, "
          f"{median['coderag'] / median['bare']:.3f} median (goal >= 0.95)")
    print(f"one-off encoder fingerprint: {fingerprint_s:.2f}s per process (cached per model, not in the runs above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

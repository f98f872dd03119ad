"""The retriever service on CPU per encoder backend and flat search path, side by side in one run.

First, the search alone: the 100k flat index searched by FAISS (``IndexFlatIP.search``) and by one GEMM
(:func:`~coderag.retrieval.exact_search.gemm_search`) at batch sizes 1-64, interleaved, with the ratio gemm /
faiss per batch size (the measurement behind ``GEMM_MIN_QUERIES``, the ``auto`` rule).

Then for each backend (torch fp32 is the baseline, onnx, onnx-int8) and each search path (``--search-paths``:
faiss, gemm, auto), in the same run and on the same 100k-snippet index:

* service: the real retriever (``python -m serving retriever --encoder_backend B --flat_search P``, KServe
  ModelServer on 127.0.0.1) under ``--clients`` concurrent HTTP clients, each sending one v1 request (one
  question) after another; the ratio to the same backend's faiss path;
* in-process: ``--clients`` threads each calling ``encode([question])`` + ``index.search`` with the same backend
  and search path, and the ratio service / in-process (goal >= 0.8);
* Recall@10 of the backend's question vectors against torch fp32 vectors on the exact flat index, over real
  questions (the builtin synthetic corpus's and Spider dev's), on the 100k index and on the real snippets alone.

The index: the real schema snippets (deduplicated builtin corpus + every Spider schema) encoded by torch, then
tiled with Gaussian noise (sd 0.02, re-normalized) up to ``--snippets`` rows; the output says how many are real.
``uptime`` is printed before each backend, since other work may share the CPU.

    python benchmarks/bench_cpu_retriever.py --snippets 100000 --clients 16 --queries 480 --backends torch,onnx
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_retriever_service import run_in_process, run_service  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
SEARCH_PATHS = ("faiss", "gemm", "auto")
SEARCH_BATCHES = (1, 2, 3, 4, 6, 8, 16, 32, 64)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def real_data(n_records: int, spider_dir: Path | None) -> tuple[list[str], list[str], list[str]]:
    """Real schema snippets, their domains, and real questions (builtin corpus, then Spider dev)."""
    from coderag.corpus import dedupe_schemas, load_corpus

    records = load_corpus("builtin", limit=n_records, seed=0)
    schemas = dedupe_schemas(records)
    snippets, domains = list(schemas.snippets), list(schemas.snippet_domains)
    questions = [r["sql_prompt"] for r in records]
    if spider_dir is not None and (spider_dir / "tables.json").is_file():
        from coderag.corpus.spider import load_spider

        spider = load_spider(spider_dir, "dev")
        snippets += spider.all_schemas
        domains += list(spider.schemas)
        questions = questions[: len(questions) // 4] + [r["sql_prompt"] for r in spider.records]
    return snippets, domains, questions


def tile(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``base`` rows repeated up to ``n`` rows; every copy past the first gets noise (sd 0.02), re-normalized."""
    reps = -(-n // len(base))
    tiled = np.tile(base, (reps, 1))[:n].copy()
    noise = np.random.default_rng(seed).normal(scale=0.02, size=tiled[len(base):].shape).astype(np.float32)
    tiled[len(base):] += noise
    tiled /= np.linalg.norm(tiled, axis=1, keepdims=True)
    return tiled


def recall_at(reference_ids: np.ndarray, ids: np.ndarray) -> float:
    k = reference_ids.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(reference_ids.tolist(), ids.tolist())]))


def compare_search(index, queries: np.ndarray, k: int, seconds: float) -> list[dict]:
    """FAISS flat vs one GEMM per batch on ``index``, per batch size: q/s of each (median of interleaved runs)."""
    import statistics

    from coderag.retrieval.exact_search import flat_vectors, gemm_search

    rows = []
    for batch in SEARCH_BATCHES:
        times = {"faiss": [], "gemm": []}
        runs = {"faiss": lambda q: index.faiss_index.search(q, k),
                "gemm": lambda q: gemm_search(flat_vectors(index.faiss_index), q, k)}
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline or len(times["gemm"]) < 3:
            q = np.ascontiguousarray(queries[(i * batch) % len(queries):][:batch])
            if len(q) < batch:
                q = np.ascontiguousarray(queries[:batch])
            for name in ("faiss", "gemm") if i % 2 == 0 else ("gemm", "faiss"):  # alternate: same load for both
                t0 = time.perf_counter()
                runs[name](q)
                times[name].append(time.perf_counter() - t0)
            i += 1
        faiss_qps = batch / statistics.median(times["faiss"])
        gemm_qps = batch / statistics.median(times["gemm"])
        rows.append({"batch": batch, "faiss": faiss_qps, "gemm": gemm_qps})
        print(f"search alone, batch {batch:3d}: faiss flat {faiss_qps:7.1f} q/s, gemm {gemm_qps:7.1f} q/s, "
              f"gemm / faiss {gemm_qps / faiss_qps:5.2f} ({len(times['gemm'])} runs each)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snippets", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=3000, help="builtin corpus records (real snippets, questions)")
    parser.add_argument("--spider-dir", type=Path, default=Path("/work/shared/datasets/spider"))
    parser.add_argument("--queries", type=int, default=800, help="requests per load run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="encoder / FAISS threads in the server and in-process (default: the usable cores)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-ms", default="2.0",
                        help="micro-batcher wait(s) in ms; a comma-separated list runs the service once per value")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--search-paths", default=",".join(SEARCH_PATHS),
                        help="flat_search values the service runs with (faiss, gemm, auto)")
    parser.add_argument("--search-seconds", type=float, default=3.0,
                        help="time per batch size in the search-alone comparison (0: skip it)")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    paths = [p for p in args.search_paths.split(",") if p]
    waits = [float(w) for w in str(args.batch_wait_ms).split(",") if w]

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    from serving_harness import metric_value, scrape_metrics, start_service

    from coderag.retrieval.encoder import encode, encoder_fingerprint, load_encoder
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.onnx_encoder import load_query_encoder

    print(f"start: {uptime()}", flush=True)
    encoder = load_encoder(device="cpu")
    snippets, domains, questions = real_data(args.records, args.spider_dir)
    started = time.perf_counter()
    real = encode(encoder, snippets, batch_size=64)
    print(f"encoded {len(snippets)} real snippets with torch in {time.perf_counter() - started:.1f}s", flush=True)
    vectors = tile(real, args.snippets)
    all_snippets = [snippets[i % len(snippets)] + ("" if i < len(snippets) else f" -- copy {i // len(snippets)}")
                    for i in range(args.snippets)]
    all_domains = [domains[i % len(domains)] for i in range(args.snippets)]
    print(f"NOTE: {len(snippets)} of {args.snippets} vectors are real snippets; the other "
          f"{args.snippets - len(snippets)} are those tiled with Gaussian noise (sd 0.02), re-normalized")
    print(f"{len(questions)} real questions for recall; {args.queries} requests per load run, {args.clients} "
          f"clients, k={args.k}, threads {args.threads}, max_batch_size {args.max_batch_size}, "
          f"batch_wait_ms {args.batch_wait_ms}", flush=True)

    reference = encode(encoder, questions, batch_size=64)  # torch fp32: the baseline vectors
    real_index = SchemaIndex.from_vectors(real, snippets, domains)
    full_index = SchemaIndex.from_vectors(vectors, all_snippets, all_domains, encoder_name="builtin:all-MiniLM-L6-v2",
                                          encoder_fingerprint=encoder_fingerprint(encoder))
    # Recall is measured against FAISS's own search (the fp32 flat baseline), not against the GEMM path.
    reference_ids = {"real": real_index.faiss_index.search(reference, 10)[1],
                     "full": full_index.faiss_index.search(reference, 10)[1]}
    from coderag.retrieval.exact_search import flat_vectors, gemm_search

    gemm_scores, gemm_ids = gemm_search(flat_vectors(full_index.faiss_index), reference, 10)
    faiss_scores = full_index.faiss_index.search(reference, 10)[0]
    print(f"gemm vs faiss on the {full_index.count} index, {len(questions)} real questions, k=10: "
          f"{np.mean((gemm_ids == reference_ids['full']).all(1)):.4f} of rows with identical ids, "
          f"max |score difference| {np.abs(gemm_scores - faiss_scores).max():.1e}", flush=True)
    load = [questions[i % len(questions)] for i in range(args.queries)]
    search_rows = []
    if args.search_seconds > 0:
        print(f"\n== search alone, {full_index.count} x {full_index.dim} flat, k={args.k}, threads {args.threads} "
              f"== {uptime()}", flush=True)
        search_rows = compare_search(full_index, reference, args.k, args.search_seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-retriever-") as tmp:
        for backend in backends:
            print(f"\n== {backend} == {uptime()}", flush=True)
            full_index.use_encoder_backend(backend, encoder)
            index_dir = full_index.save(Path(tmp) / f"index-{backend}")
            query_encoder = load_query_encoder(full_index, encoder, backend, threads=args.threads)
            started = time.perf_counter()
            got = encode(query_encoder, questions, batch_size=64)
            batch_qps = len(questions) / (time.perf_counter() - started)
            recall = {name: recall_at(reference_ids[name], idx.faiss_index.search(got, 10)[1])
                      for name, idx in (("real", real_index), ("full", full_index))}
            cosine = float((got * reference).sum(1).min())
            print(f"Recall@10 vs torch fp32 flat over {len(questions)} questions: {recall['full']:.4f} on the "
                  f"{full_index.count} index, {recall['real']:.4f} on the {real_index.count} real snippets; "
                  f"min cosine to fp32 {cosine:.5f}; encode alone {batch_qps:.0f} q/s (batches of 64)", flush=True)
            for path, wait in [(p, w) for p in paths for w in waits]:
                print(f"-- {backend}, flat_search {path}, batch_wait_ms {wait} -- {uptime()}", flush=True)
                full_index.use_flat_search(path)
                service = start_service(
                    "retriever",
                    ["--index_dir", str(index_dir), "--encoder_backend", backend, "--cpu_threads", str(args.threads),
                     "--max_batch_size", str(args.max_batch_size), "--batch_wait_ms", str(wait),
                     "--flat_search", path],
                    Path(tmp), model_name="coderag-retriever", env={"OMP_NUM_THREADS": str(args.threads)},
                )
                try:
                    run_in_process(query_encoder, full_index, load[: args.clients * 2], args.clients, args.k)  # warm-up
                    served = run_service(service.url, "coderag-retriever", load, args.clients, args.k)
                    samples = scrape_metrics(service.url)
                    local = run_in_process(query_encoder, full_index, load, args.clients, args.k)
                finally:
                    service.stop()
                full_index.use_flat_search("auto")
                batches = max(metric_value(samples, "coderag_retriever_batch_size_count", service="retriever"), 1)
                batch = metric_value(samples, "coderag_retriever_batch_size_sum", service="retriever") / batches
                stage_ms = {stage: 1000 * metric_value(samples, "coderag_stage_latency_seconds_sum", service="retriever",
                                                       stage=stage) / batches for stage in ("embed", "search")}
                print(f"service micro-batches: {batch:.1f} queries on average; per batch embed {stage_ms['embed']:.1f} "
                      f"ms, search {stage_ms['search']:.1f} ms", flush=True)
                rows.append({"backend": backend, "path": path, "wait": wait, "service": served, "local": local,
                             "recall": recall, "batch": batch, "stage_ms": stage_ms})

    print(f"\nend: {uptime()}")
    if search_rows:
        print(f"\nsearch alone ({full_index.count} x {full_index.dim} flat, k={args.k}, threads {args.threads}):")
        print(f"{'batch':>5} {'faiss q/s':>9} {'gemm q/s':>9} {'gemm/faiss':>10}")
        for r in search_rows:
            print(f"{r['batch']:5d} {r['faiss']:9.1f} {r['gemm']:9.1f} {r['gemm'] / r['faiss']:10.2f}")
    # x faiss: against the same backend's faiss path at the same wait; x torch: against torch + faiss.
    base_qps = {(r["backend"], r["wait"]): r["service"]["qps"] for r in rows if r["path"] == "faiss"}
    torch_qps = next((r["service"]["qps"] for r in rows if r["backend"] == "torch" and r["path"] == "faiss"), None)
    print(f"\n{'backend':<10} {'search':<6} {'wait':>5} {'svc q/s':>8} {'x faiss':>7} {'x torch':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'inproc q/s':>10} {'svc/inproc':>10} {'batch':>5} {'embed ms':>8} {'search ms':>9} "
          f"{'R@10 100k':>9} {'R@10 real':>9}")
    for r in rows:
        s, loc = r["service"], r["local"]
        faiss_qps = base_qps.get((r["backend"], r["wait"]))
        vs_faiss = s["qps"] / faiss_qps if faiss_qps else float("nan")
        vs_torch = s["qps"] / torch_qps if torch_qps else float("nan")
        print(f"{r['backend']:<10} {r['path']:<6} {r['wait']:5.1f} {s['qps']:8.1f} {vs_faiss:7.2f} {vs_torch:7.2f} "
              f"{s['p50_ms']:7.1f} {s['p99_ms']:7.1f} {loc['qps']:10.1f} {s['qps'] / loc['qps']:10.2f} "
              f"{r['batch']:5.1f} {r['stage_ms']['embed']:8.1f} {r['stage_ms']['search']:9.1f} "
              f"{r['recall']['full']:9.4f} {r['recall']['real']:9.4f}")
    print("goals: >= 300 q/s, p99 < 60 ms, service / in-process >= 0.8, Recall@10 >= 0.99")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU index-build pace: plain ``encode``, CodeRAG's tokenise-ahead encoder and the raw forward ceiling.

All three embed the same snippets with the same model in the same process, on the GPU, in fp16:

- ``encode``: ``SentenceTransformer.encode(texts, batch_size=B)`` on the fp16 model (what a user writes);
- ``coderag``: :func:`coderag.retrieval.ahead_encoder.encode_ahead` (worker tokenisers, length-sorted
  batches, pinned copies), timed end to end, worker start-up included;
- ``raw forward``: the model's forward over the very batches ``coderag`` makes, already tokenised and
  resident on the GPU: what the GPU can do, the ceiling.

It prints seq/s for each and the ratios coderag/raw (goal >= 0.5) and coderag/encode, the largest
difference between ``coderag``'s vectors and fp32 ``encode``'s, and, when faiss is installed, the time to
add the vectors to an ``IndexFlatIP``. ``--save DIR`` writes the vectors of the snippets and questions
(fp16 ``.npy``) for the recall figures of ``bench_ann_index.py``.

    python benchmarks/bench_gpu_encode.py --model DIR --texts texts.json.gz --n 20000 --save $OUT
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _timed(fn, sync) -> tuple[float, object]:
    sync()
    started = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="sentence-transformers model directory")
    parser.add_argument("--texts", required=True, help="JSON (.gz) with 'snippets' and optionally 'questions'")
    parser.add_argument("--n", type=int, default=20000, help="snippets timed (the corpus is tiled if shorter)")
    parser.add_argument("--batch-size", type=int, default=1024, help="coderag / raw forward batch size")
    parser.add_argument("--encode-batch-sizes", default="128,512", help="plain encode batch sizes")
    parser.add_argument("--workers", type=int, default=None, help="tokenizer processes (default cores - 1)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--save", default=None, help="directory for snippet / question vectors (.npy, fp16)")
    args = parser.parse_args(argv)

    import torch

    from coderag.retrieval import ahead_encoder
    from coderag.retrieval.encoder import load_encoder

    opener = gzip.open if args.texts.endswith(".gz") else open
    with opener(args.texts, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    corpus = data["snippets"]
    texts = (corpus * (args.n // len(corpus) + 1))[:args.n]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = load_encoder(args.model, device=args.device).float()  # fp32 reference; coderag casts its own copy
    fp16 = load_encoder(args.model, device=args.device).half()
    workers = args.workers if args.workers is not None else max(1, min(16, (os.cpu_count() or 2) - 1))
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else device}, torch {torch.__version__}, "
          f"cpu cores {os.cpu_count()}, tokenizer workers {workers}, n {len(texts)} snippets "
          f"({len(corpus)} distinct)")

    # Warm-up: kernels, allocator, cuBLAS handles.
    fp16.encode(texts[:2048], batch_size=512)
    ahead_encoder.encode_ahead(model, texts[:4096], device=args.device, batch_size=args.batch_size, workers=2)

    results: dict[str, float] = {}
    for bs in [int(b) for b in args.encode_batch_sizes.split(",")]:
        seconds, _ = _timed(lambda bs=bs: fp16.encode(texts, batch_size=bs, convert_to_numpy=True,
                                                      normalize_embeddings=True), sync)
        results[f"encode b{bs}"] = len(texts) / seconds
    best_encode = max(results.values())

    seconds, vectors = _timed(lambda: ahead_encoder.encode_ahead(
        model, texts, device=args.device, batch_size=args.batch_size, workers=workers), sync)
    results["coderag (incl. worker start)"] = len(texts) / seconds
    seconds, vectors = _timed(lambda: ahead_encoder.encode_ahead(
        model, texts, device=args.device, batch_size=args.batch_size, workers=workers,
        window=len(texts)), sync)
    results["coderag one window"] = len(texts) / seconds
    coderag_rate = max(results["coderag (incl. worker start)"], results["coderag one window"])

    # Tokenisation alone, same batches and pool: is the CPU side or the GPU side the limit?
    spec = ahead_encoder._tokenizer_spec(model)
    ahead_encoder._init_worker(spec)
    print(f"word-cache shortcut of the BERT tokenizer: {'on' if ahead_encoder._WORKER_TOKENIZER.fast else 'off'}")
    plan = list(ahead_encoder._batches(len(texts), [len(t) for t in texts], 65536, args.batch_size))
    started = time.perf_counter()
    tokenised = [(ids.numpy(), lengths.numpy()) for _, ids, lengths in
                 ahead_encoder._loader(texts, spec, plan, workers, 4, device.type == "cuda")]
    results["tokenise only (workers)"] = len(texts) / (time.perf_counter() - started)
    tokens = sum(int(lengths.sum()) for _, lengths in tokenised)
    padded = sum(ids.size for ids, _ in tokenised)

    # Raw forward: the same batches already on the GPU.
    runner = fp16
    sample = (getattr(fp16, "preprocess", None) or fp16.tokenize)(["x"])
    extra = {key: value for key, value in sample.items() if not torch.is_tensor(value)}
    batches = []
    for ids_np, lengths_np in tokenised:
        ids = torch.from_numpy(ids_np).to(device).long()
        lengths = torch.from_numpy(lengths_np).to(device)
        mask = (torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]).long()
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                        **extra})

    def forward_all():
        with torch.inference_mode():
            for features in batches:
                runner(features)

    forward_all()
    seconds, _ = _timed(forward_all, sync)
    results["raw forward (ceiling)"] = len(texts) / seconds

    for name, rate in results.items():
        print(f"{name:32s} {rate:10.0f} seq/s")
    print(f"tokens per snippet {tokens / len(texts):.1f} (padded {padded / len(texts):.1f} after length sort)")
    print(f"ratio coderag / raw forward: {coderag_rate / results['raw forward (ceiling)']:.3f} (goal >= 0.5)")
    print(f"ratio coderag / best plain encode: {coderag_rate / best_encode:.2f}x")

    reference = model.encode(texts[:2000], batch_size=256, convert_to_numpy=True, normalize_embeddings=True)
    diff = np.abs(reference - vectors[:2000]).max()
    cos = (reference * vectors[:2000]).sum(1).min()
    print(f"coderag fp16 vs fp32 encode on 2000 snippets: max |diff| {diff:.2e}, min cosine {cos:.5f}")
    try:
        import faiss
    except ImportError:
        print("faiss is not installed here: the figures above time the encode part of the build only")
    else:
        index = faiss.IndexFlatIP(vectors.shape[1])
        started = time.perf_counter()
        index.add(vectors)
        print(f"faiss IndexFlatIP.add of {index.ntotal} vectors: {time.perf_counter() - started:.2f}s")
        # Whole builds (encode + FAISS), what `coderag index build` runs with and without --device.
        from coderag.retrieval.index import SchemaIndex

        seconds, built = _timed(lambda: SchemaIndex.build(fp16, texts, batch_size=512), sync)
        plain = len(texts) / seconds
        seconds, built = _timed(lambda: SchemaIndex.build(model, texts, batch_size=args.batch_size, device=args.device,
                                                          encode_workers=workers), sync)
        ahead = len(texts) / seconds
        print(f"SchemaIndex.build plain encode (fp16, b512) {plain:8.0f} seq/s; with --device {args.device} "
              f"{ahead:8.0f} seq/s ({built.count} vectors); ratio {ahead / plain:.2f}x, "
              f"{ahead / results['raw forward (ceiling)']:.3f} of raw forward")

    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        snippet_vectors = ahead_encoder.encode_ahead(model, corpus, device=args.device, batch_size=args.batch_size,
                                                     workers=workers, dtype="float32")
        # Two halves: each file that comes back from a GPU machine may be at most 16 MB.
        half = len(snippet_vectors) // 2
        np.save(out / "snippet_vectors_a.npy", snippet_vectors[:half].astype(np.float16))
        np.save(out / "snippet_vectors_b.npy", snippet_vectors[half:].astype(np.float16))
        questions = data.get("questions") or []
        if questions:
            question_vectors = ahead_encoder.encode_ahead(model, questions, device=args.device,
                                                          batch_size=args.batch_size, workers=workers,
                                                          dtype="float32")
            np.save(out / "question_vectors.npy", question_vectors.astype(np.float16))
        print(f"saved {len(corpus)} snippet and {len(questions)} question vectors (fp32 model, stored fp16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Base encoders side by side: retrieval quality, index build time and query latency, same run, same machine.

Quality is Spider dev (493 questions against all 166 schemas) and the held-out synthetic split, scored with
exact cosine search on data written by ``benchmarks/encoder_ablation.py prepare``. Build time is embedding
every schema of both corpora; latency is one question encoded and searched, median of ``--repeats``.
Prints a table and the ratio of each encoder to the first.

Example::

    python3 benchmarks/encoder_compare.py --data /tmp/abl --encoders builtin:all-MiniLM-L6-v2,builtin:all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(name: str, data: dict, device: str | None, repeats: int) -> dict:
    import torch

    from benchmarks.encoder_ablation import score
    from coderag.retrieval.encoder import load_encoder

    model = load_encoder(name, device=device)
    model.max_seq_length = 256
    schemas = data["spider"]["corpus"] + data["heldout"]["corpus"]
    started = time.perf_counter()
    docs = model.encode(schemas, batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                        show_progress_bar=False)  # (n_schemas, dim)
    build_s = time.perf_counter() - started
    latencies = []
    for question in data["spider"]["queries"][:repeats]:
        t0 = time.perf_counter()
        q = model.encode([question], convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        torch.topk(q @ docs.T, k=10)
        latencies.append(time.perf_counter() - t0)
    return {
        "encoder": name,
        "dim": int(docs.shape[1]),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "schemas": len(schemas),
        "build_s": round(build_s, 2),
        "schemas_per_s": round(len(schemas) / build_s, 1),
        "query_ms_p50": round(1000 * statistics.median(latencies), 1),
        "spider": score(model, data["spider"]),
        "heldout": score(model, data["heldout"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding ablation_data.json")
    parser.add_argument("--encoders", default="builtin:all-MiniLM-L6-v2,builtin:all-mpnet-base-v2")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    data = json.loads((args.data / "ablation_data.json").read_text())
    rows = [measure(name, data, args.device, args.repeats) for name in args.encoders.split(",")]
    first = rows[0]
    print(f"{'encoder':<30} {'dim':>4} {'params':>7} {'build_s':>8} {'x':>5} {'query_ms':>9} {'x':>5} "
          f"{'spider R@1':>10} {'MRR@10':>7} {'heldout R@1':>11}")
    for r in rows:
        print(f"{r['encoder']:<30} {r['dim']:>4} {r['params_m']:>6}M {r['build_s']:>8} "
              f"{r['build_s'] / first['build_s']:>5.1f} {r['query_ms_p50']:>9} "
              f"{r['query_ms_p50'] / first['query_ms_p50']:>5.1f} {r['spider']['recall@1']:>10.4f} "
              f"{r['spider']['mrr@10']:>7.4f} {r['heldout']['recall@1']:>11.4f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

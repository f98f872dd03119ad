"""Fine-tuning throughput: samples/s of ``coderag.training.finetune.train_encoder`` on GPU vs CPU, same run.

Both devices train the same encoder on the same pairs with the same loss, batch size and sequence
length (MNRL, NO_DUPLICATES sampler; bf16/fp16 autocast on CUDA, fp32 on CPU). Each measurement is
preceded by a short warm-up run so one-time costs (CUDA context, kernel selection) are not counted.

    python benchmarks/bench_finetune.py                       # synthesizes pairs from the builtin corpus
    python benchmarks/bench_finetune.py --pairs runs/pairs --encoder /path/to/model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pairs(args):
    from datasets import Dataset

    if args.pairs:
        pairs = Dataset.load_from_disk(args.pairs)
    else:
        import tempfile

        from coderag.corpus import generate_corpus
        from coderag.training.synthesis import synthesize_pairs

        out = Path(tempfile.mkdtemp(prefix="bench-pairs-")) / "pairs"
        synthesize_pairs(generate_corpus(n_records=args.n_records), out, show_progress=False)
        pairs = Dataset.load_from_disk(str(out))
    keep = [c for c in pairs.column_names if c in ("anchor", "positive") or c.startswith("negative_")]
    return pairs.select_columns(keep).shuffle(seed=0)


def _measure(device: str, pairs, args, batch_size: int, steps: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from coderag.training.finetune import train_encoder

    model = SentenceTransformer(args.encoder, device=device)
    model.float()  # fp32 master weights; CUDA steps autocast to bf16/fp16
    model.max_seq_length = args.max_seq_length
    need = batch_size * (steps + args.warmup_steps) * 2
    data = pairs.select(range(min(len(pairs), need)))
    train_encoder(model, data, batch_size=batch_size, max_steps=args.warmup_steps, show_progress=False)
    stats = train_encoder(model, data, batch_size=batch_size, max_steps=steps, show_progress=False)
    row = {"device": device, "batch_size": batch_size, "steps": stats["steps"], "seconds": stats["seconds"],
           "samples_per_s": stats["samples_per_s"], "precision": stats["precision"]}
    if device == "cpu":
        row["threads"] = torch.get_num_threads()
    else:
        row["gpu"] = torch.cuda.get_device_name(0)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="model dir (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--pairs", help="pairs dataset dir (default: synthesize from the builtin corpus)")
    parser.add_argument("--n-records", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--cpu-steps", type=int, default=6)
    parser.add_argument("--gpu-steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--gpu-large-batch", type=int, default=256, help="extra GPU row at this batch (0: off)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    if args.encoder is None:
        from coderag.retrieval.encoder import resolve_encoder_path

        args.encoder = resolve_encoder_path(None)
    pairs = _pairs(args)
    print(f"pairs: {len(pairs)} (columns {pairs.column_names}); max_seq_length {args.max_seq_length}")
    rows = [_measure("cpu", pairs, args, args.batch_size, args.cpu_steps)]
    if torch.cuda.is_available():
        rows.append(_measure("cuda", pairs, args, args.batch_size, args.gpu_steps))
        if args.gpu_large_batch:
            rows.append(_measure("cuda", pairs, args, args.gpu_large_batch, max(10, args.gpu_steps // 4)))
    else:
        print("no CUDA device: GPU rows skipped")
    print(f"{'device':<8} {'batch':>6} {'steps':>6} {'precision':>9} {'samples/s':>10}")
    for r in rows:
        print(f"{r['device']:<8} {r['batch_size']:>6} {r['steps']:>6} {r['precision']:>9} {r['samples_per_s']:>10.1f}"
              + (f"  ({r.get('gpu') or str(r.get('threads')) + ' CPU threads'})"))
    same_batch = [r for r in rows if r["device"] == "cuda" and r["batch_size"] == args.batch_size]
    if same_batch:
        print(f"GPU/CPU speed-up at batch {args.batch_size}: {same_batch[0]['samples_per_s'] / rows[0]['samples_per_s']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

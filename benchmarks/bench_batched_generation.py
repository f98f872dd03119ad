"""Batched vs one-at-a-time local generation: seconds and questions/s for text-to-SQL prompts.

Takes N builtin-corpus questions, each with its own schema (``schema_only`` of its context) as the one
snippet, times ``complete`` one question at a time on the first few, then ``generate_batch`` (what
``complete_batch`` runs) on all N at each batch size asked, and prints the speed-up measured in this
run. It also checks that the batch gives the same SQL as the one-at-a-time calls on the questions both saw.

    python benchmarks/bench_batched_generation.py --questions 100 --single 8 --batch-sizes 8 16 32 64

On a busy CPU add ``--threads 1`` (two OpenMP threads spin against other processes' work).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from coderag.corpus import load_corpus  # noqa: E402 - the offline switches must come first
from coderag.corpus.schemas import schema_only  # noqa: E402
from coderag.generation.llm import DEFAULT_BATCH_SIZE, LocalTransformersGenerator  # noqa: E402
from coderag.generation.prompting import build_messages  # noqa: E402
from coderag.sql.text import extract_sql  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100, help="questions decoded in batches (N)")
    parser.add_argument("--single", type=int, default=8, help="questions decoded one at a time")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[DEFAULT_BATCH_SIZE])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-prefix-sharing", action="store_true", help="encode every prompt in full")
    args = parser.parse_args()

    records = load_corpus("builtin", limit=args.questions)
    conversations = [build_messages(r["sql_prompt"], [schema_only(r["sql_context"])]) for r in records]
    started = time.perf_counter()
    generator = LocalTransformersGenerator(num_threads=args.threads)
    generator.share_prompt_prefix = not args.no_prefix_sharing
    print(f"load: {time.perf_counter() - started:.1f} s ({generator.model_name}), {len(conversations)} questions, "
          f"max_tokens={args.max_tokens}, threads={args.threads or 'default'}, "
          f"prefix sharing={'on' if generator.share_prompt_prefix else 'off'}")
    generator.complete(build_messages("warm up", []), max_tokens=4)

    single_n = min(args.single, len(conversations))
    started = time.perf_counter()
    singles = [generator.complete(m, max_tokens=args.max_tokens) for m in conversations[:single_n]]
    single_s = time.perf_counter() - started
    single_rate = single_n / single_s
    print(f"one at a time: {single_n} questions in {single_s:.1f} s = {single_rate:.2f} questions/s "
          f"({single_s / single_n:.2f} s/question; {len(conversations) / single_rate:.0f} s projected "
          f"for {len(conversations)})")

    for batch_size in args.batch_sizes:
        started = time.perf_counter()
        completions = generator.generate_batch(conversations, max_tokens=args.max_tokens, batch_size=batch_size)
        batch_s = time.perf_counter() - started
        rate = len(conversations) / batch_s
        same = sum(extract_sql(a) == extract_sql(b.text) for a, b in zip(singles, completions, strict=False))
        tokens = sum(c.completion_tokens for c in completions)
        at_limit = sum(c.finish_reason == "length" for c in completions)
        print(f"batch_size={batch_size}: {len(conversations)} questions in {batch_s:.1f} s = {rate:.2f} "
              f"questions/s, speed-up x{rate / single_rate:.1f}; {tokens} new tokens, {at_limit} replies "
              f"hit max_tokens; same SQL as one at a time: {same}/{single_n}")


if __name__ == "__main__":
    main()

"""Local LLM throughput: tokens/s and seconds per text-to-SQL question, 1 vs 2 torch threads.

Runs SmolLM2-135M-Instruct (the offline default) on a few builtin-corpus questions with their own
schema in the prompt, once per thread setting, and prints each figure plus the ratio of the two.

    python benchmarks/bench_local_llm.py --questions 4 --max-tokens 64
"""

from __future__ import annotations

import argparse
import time

from coderag.corpus import dedupe_schemas, generate_corpus
from coderag.evaluation.sql_metrics import evaluate_text_to_sql
from coderag.generation.llm import LocalTransformersGenerator
from coderag.generation.prompting import build_messages


def measure(generator: LocalTransformersGenerator, records: list[dict], schemas: list[list[str]],
            max_tokens: int) -> dict[str, float]:
    tokens = seconds = 0.0
    for record, snippets in zip(records, schemas, strict=True):
        completion = generator.generate_chat(build_messages(record["sql_prompt"], snippets), max_tokens=max_tokens)
        tokens += completion.completion_tokens
        seconds += completion.seconds
    return {"tokens_per_s": tokens / seconds, "s_per_question": seconds / len(records),
            "tokens_per_question": tokens / len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    records = generate_corpus(200, seed=0)[:: max(1, 200 // args.questions)][: args.questions]
    corpus = dedupe_schemas(records)
    schemas = [[corpus.snippets[i]] for i in corpus.record_to_snippet]

    started = time.perf_counter()
    generator = LocalTransformersGenerator()
    print(f"load: {time.perf_counter() - started:.1f} s ({generator.model_name})")
    generator.complete(build_messages("warm up", []), max_tokens=4)
    figures = {}
    for threads in (1, 2):
        generator.num_threads = threads
        figures[threads] = measure(generator, records, schemas, args.max_tokens)
        f = figures[threads]
        print(f"{threads} thread(s): {f['tokens_per_s']:.1f} tokens/s, {f['s_per_question']:.2f} s/question, "
              f"{f['tokens_per_question']:.1f} tokens/question")
    print(f"ratio tokens/s 2 threads / 1 thread: {figures[2]['tokens_per_s'] / figures[1]['tokens_per_s']:.2f}")
    generator.num_threads = None
    result = evaluate_text_to_sql(records, generator, schemas, max_tokens=args.max_tokens, show_progress=False)
    print("EM/EX with the record's own schema:", {k: result["aggregate"][k] for k in ("n", "em", "ex")})


if __name__ == "__main__":
    main()

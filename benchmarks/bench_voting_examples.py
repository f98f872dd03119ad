"""EX on held-out synthetic domains with and without execution-guided voting and retrieved examples.

Splits the builtin corpus by domain as the pipeline does, samples N held-out questions, retrieves their
schemas over every schema of the corpus (train and held-out) with the encoder, builds the example index
from the training split only, and scores four configurations with the same questions and the same scoring
code as ``coderag evaluate`` (test-suite EX): greedy, voting over ``--n-candidates``, ``--examples`` K in
the prompt, and both. Prints EX, the status counts, seconds per configuration and the EX difference to the
greedy baseline measured in this run; ``--out FILE`` writes it all as JSON.

    python benchmarks/bench_voting_examples.py --questions 20 --n-candidates 5 --examples 3 --threads 1

``--llm-model`` takes any local model (default the offline SmolLM2-135M-Instruct GGUF); on a busy CPU add
``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from coderag.corpus import load_corpus  # noqa: E402 - the offline switches must come first
from coderag.evaluation.benchmark import _retrieval, evaluate_benchmark, load_gretel_benchmark  # noqa: E402
from coderag.generation.llm import LocalTransformersGenerator  # noqa: E402
from coderag.retrieval.encoder import load_encoder  # noqa: E402
from coderag.retrieval.examples import ExampleIndex, training_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-records", type=int, default=2000, help="builtin corpus records")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of domains held out")
    parser.add_argument("--questions", type=int, default=20, help="held-out questions scored (seeded sample)")
    parser.add_argument("--n-candidates", type=int, default=5)
    parser.add_argument("--sampling-temperature", type=float, default=0.7)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("-k", type=int, default=3, help="schemas retrieved per question")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--encoder", default=None, help="encoder (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--llm-model", default=None, help="local model path (default: SmolLM2 GGUF)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while generating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=["greedy", "vote", "examples", "both"],
                        choices=["greedy", "vote", "examples", "both"], help="configurations to score")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    records = load_corpus("builtin", limit=args.n_records, seed=args.seed)
    train, held_out = training_examples(records, args.eval_fraction, args.seed)
    asked = random.Random(args.seed).sample(held_out, min(args.questions, len(held_out)))
    benchmark = load_gretel_benchmark(asked, name="heldout", corpus_records=train + held_out)
    encoder_model = load_encoder(args.encoder)
    started = time.perf_counter()
    example_index = ExampleIndex.build(encoder_model, train, held_out_domains={r["domain"] for r in held_out})
    examples_s = time.perf_counter() - started
    generator = LocalTransformersGenerator(model_path=args.llm_model, num_threads=args.threads)
    every = {
        "greedy": ("greedy", {"n_candidates": 1, "examples": 0}),
        "vote": (f"vote n={args.n_candidates}", {"n_candidates": args.n_candidates, "examples": 0}),
        "examples": (f"examples k={args.examples}", {"n_candidates": 1, "examples": args.examples}),
        "both": (f"vote n={args.n_candidates} + examples k={args.examples}",
                 {"n_candidates": args.n_candidates, "examples": args.examples}),
    }
    configs = dict(every[name] for name in args.configs)
    results = {}
    retrieval = _retrieval(benchmark, encoder_model, args.k, False)  # the same retrieval for every configuration
    for name, config in configs.items():
        t0 = time.perf_counter()
        result = evaluate_benchmark(benchmark, generator=generator, encoder_model=encoder_model, k=args.k,
                                    max_new_tokens=args.max_tokens, temperature=args.sampling_temperature,
                                    example_index=example_index, retrieval=retrieval, show_progress=False, **config)
        seconds = time.perf_counter() - t0
        summary = result.summary
        results[name] = {**config, "ex": summary["ex"], "em": summary["em"], "statuses": summary["statuses"],
                         "seconds": round(seconds, 1),
                         "mean_votes": (sum(r.vote["votes"] for r in result.rows if r.vote) / len(result.rows)
                                        if config["n_candidates"] > 1 else None)}
        print(f"{name:34s} EX {summary['ex']:.3f}  EM {summary['em']:.3f}  {seconds:7.1f} s  {summary['statuses']}",
              flush=True)
    base = results["greedy"]["ex"] if "greedy" in results else None
    print(f"\nn={len(asked)} held-out questions over {len({r['domain'] for r in held_out})} held-out domains; "
          f"example index: {example_index.count} training questions ({examples_s:.1f} s to embed); "
          f"retrieval of the gold schema: {retrieval[2]}")
    for name, row in results.items():
        versus = f"  ({row['ex'] - base:+.3f} vs greedy in this run)" if base is not None else ""
        print(f"  {name:34s} EX {row['ex']:.3f}{versus}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "n": len(asked), "results": results, "retrieval": retrieval[2]}, fh,
                      indent=2)


if __name__ == "__main__":
    main()

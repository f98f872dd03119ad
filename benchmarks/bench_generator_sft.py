"""Generator SFT: EX of the base vs the fine-tuned generator, with and without voting and retrieved examples.

Two phases, so the GPU machine needs neither the encoder nor FAISS:

- ``prepare`` (here, CPU): the builtin corpus split by domain; the SFT examples of the train side (inference
  prompts with the retriever's top-k schemas, SQL that executes); for ``--n-heldout`` held-out synthetic
  questions (retrieval over every corpus schema) and ``--n-spider`` Spider dev questions (a seeded
  sample, retrieval over all of Spider's schemas) the retrieved schemas and the ``--examples`` retrieved
  training examples of each prompt. Written to ``DIR/data.json``.
- ``run`` (GPU or CPU): trains the LoRA adapter (:func:`coderag.training.generator_sft.train_generator`), then
  scores EX with :func:`coderag.evaluation.benchmark.evaluate_benchmark` (test-suite EX) for the base and the
  tuned generator, each plain, with voting (``--n-candidates``), with examples, and with both. Results go
  to ``OUT/results.json`` after every evaluation (a killed run keeps what it finished; ``--resume`` skips it).

    python benchmarks/bench_generator_sft.py prepare --out runs/sft-data --spider-dir ../shared/datasets/spider
    python benchmarks/bench_generator_sft.py run --data runs/sft-data --spider-dir ../shared/datasets/spider \\
        --out runs/sft-results --epochs 2 --batch-size 16
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path


def prepare(args: argparse.Namespace) -> None:
    from coderag.corpus import dedupe_schemas, load_corpus
    from coderag.evaluation.benchmark import _retrieval, load_gretel_benchmark, load_spider_benchmark
    from coderag.retrieval.encoder import load_encoder
    from coderag.training.heldout import split_by_domain
    from coderag.training.sft_data import prepare_sft_examples

    started = time.perf_counter()
    records = load_corpus("builtin", limit=args.n_records, seed=args.seed)
    train, held_out = split_by_domain(records, args.eval_fraction, args.seed)
    held_domains = sorted({str(r["domain"]) for r in held_out})
    encoder = load_encoder(None)
    # The SFT prompts retrieve over the train side's schemas only: held-out schemas are never seen in training.
    examples, dropped = prepare_sft_examples(train, held_out_domains=held_domains, encoder_model=encoder,
                                             prompt_schemas="retrieved", k=args.k, seed=args.seed,
                                             examples=args.sft_examples)
    shots_index = None
    if args.examples:
        from coderag.retrieval.examples import ExampleIndex

        shots_index = ExampleIndex.build(encoder, train, held_out_domains=held_domains)
    data = {"meta": {"n_records": len(records), "train_records": len(train), "heldout_records": len(held_out),
                     "held_out_domains": held_domains, "k": args.k, "examples": args.examples, "seed": args.seed,
                     "sft_examples_per_prompt": args.sft_examples,
                     "sft_examples": len(examples), "dropped": dict(dropped)},
            "sft_examples": [asdict(e) for e in examples]}

    def prompts_for(bench) -> dict:
        ranked, _, metrics = _retrieval(bench, encoder, args.k, False)
        out = {"prompt_schemas": [[bench.schemas[i] for i in row[:args.k]] for row in ranked], "retrieval": metrics}
        if shots_index is not None:
            from coderag.retrieval.examples import retrieve_examples

            found = retrieve_examples(shots_index, encoder, [q.question for q in bench.questions], args.examples)
            out["prompt_examples"] = [[[e.question, e.sql] for e in row] for row in found]
        return out

    rng = random.Random(args.seed)
    picked = sorted(rng.sample(range(len(held_out)), min(args.n_heldout, len(held_out))))
    heldout_records = [held_out[i] for i in picked]
    bench = load_gretel_benchmark(heldout_records, name="heldout", corpus_records=train + held_out)
    assert len(dedupe_schemas(train + held_out).snippets) == len(bench.schemas)
    data["heldout"] = {"records": heldout_records, **prompts_for(bench)}
    if args.spider_dir:
        spider = load_spider_benchmark(args.spider_dir)
        chosen = sorted(random.Random(args.seed).sample(range(len(spider.questions)),
                                                        min(args.n_spider, len(spider.questions))))
        spider.questions = [spider.questions[i] for i in chosen]
        spider.schema_ids = [spider.schema_ids[i] for i in chosen]
        data["spider"] = {"indices": chosen, **prompts_for(spider)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(data))
    print(f"prepared in {time.perf_counter() - started:.0f} s: {len(examples)} SFT examples, "
          f"{len(heldout_records)} held-out questions, {len(data.get('spider', {}).get('indices', []))} Spider "
          f"questions -> {out / 'data.json'}")


class _Batched:
    """The local generator with a larger decode batch (a GPU decodes 256 rows about as fast as 64)."""

    def __init__(self, generator, batch_size: int):
        self.generator, self.batch_size = generator, batch_size

    def complete(self, messages, **kwargs):
        return self.generator.complete(messages, **kwargs)

    def complete_batch(self, conversations, **kwargs):
        return self.generator.complete_batch(conversations, batch_size=self.batch_size, **kwargs)

    def __getattr__(self, name):  # sample / sample_batch and the rest: the generator's own
        attribute = getattr(self.generator, name)
        if name == "sample_batch" and "batch_size" in inspect.signature(attribute).parameters:
            return lambda *a, **kw: attribute(*a, **{"batch_size": self.batch_size, **kw})
        return attribute


def _variants(n_candidates: int, examples: int) -> list[tuple[str, int, int]]:
    """(name, candidates, examples) of each variant, cheapest first: greedy ones decode one row a question."""
    out = [("plain", 1, 0)]
    if examples:
        out.append((f"examples{examples}", 1, examples))
    if n_candidates > 1:
        out.append((f"vote{n_candidates}", n_candidates, 0))
        if examples:
            out.append((f"vote{n_candidates}+examples{examples}", n_candidates, examples))
    return out


def run(args: argparse.Namespace) -> None:
    import torch

    started_run = time.perf_counter()
    from coderag.evaluation.benchmark import evaluate_benchmark, load_gretel_benchmark, load_spider_benchmark
    from coderag.generation.llm import LocalTransformersGenerator
    from coderag.training.generator_sft import train_generator
    from coderag.training.sft_data import SftExample

    data = json.loads((Path(args.data) / "data.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if args.resume and results_path.is_file() else {}
    results.setdefault("meta", {}).update({**data["meta"], "device": torch.cuda.get_device_name(0)
                                            if torch.cuda.is_available() else "cpu",
                                            "args": {k: v for k, v in vars(args).items() if k != "func"}})
    results.setdefault("ex", {})

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2))

    examples = [SftExample(**e) for e in data["sft_examples"]]
    if args.max_examples:
        examples = examples[:args.max_examples]
    tuned_dir = Path(args.tuned_dir or out / "tuned")
    if not (args.resume and (tuned_dir / "coderag_generator.json").is_file()):
        report = train_generator(examples, tuned_dir, base_model=args.base_model, epochs=args.epochs,
                                 max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                 lora_r=args.lora_r, lora_alpha=args.lora_alpha, max_seq_length=args.max_seq_length,
                                 device=args.device, seed=data["meta"]["seed"], show_progress=False)
        results["training"] = report
        save()
        print(f"trained: {report['examples']} examples, {report['steps']} steps, loss {report['loss_first']} -> "
              f"{report['loss_last']}, {report['train_seconds']} s, {report['samples_per_s']} samples/s, "
              f"{report['tokens_per_s']} tokens/s on {report['device']}", flush=True)
    elif "training" not in results:
        results["training"] = json.loads((tuned_dir / "training_report.json").read_text())
    if args.train_only:
        return

    benches = {}
    held = data["heldout"]
    n = args.limit
    held = {key: value[:n] if isinstance(value, list) else value for key, value in held.items()}
    benches["heldout"] = (load_gretel_benchmark(held["records"], name="heldout"), held)
    if "spider" in data and args.spider_dir:
        spider = load_spider_benchmark(args.spider_dir)
        prepared = {key: value[:n] if isinstance(value, list) else value for key, value in data["spider"].items()}
        spider.questions = [spider.questions[i] for i in prepared["indices"]]
        spider.schema_ids = [spider.schema_ids[i] for i in prepared["indices"]]
        benches["spider"] = (spider, prepared)
    accepts = set(inspect.signature(evaluate_benchmark).parameters)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = {"tuned": str(tuned_dir), "base": args.base_model}
    generators: dict = {}
    # Most telling first: plain EX of tuned and base on both benchmarks, then voting and examples.
    for variant, n_candidates, shots in _variants(args.n_candidates, args.examples):
        if args.variants and variant not in args.variants:
            continue
        for bench_name, (bench, prepared) in benches.items():
            for model_name, model_path in models.items():
                key = f"{model_name}/{bench_name}/{variant}"
                if key in results["ex"]:
                    continue
                if args.time_budget and time.perf_counter() - started_run > args.time_budget:
                    print(f"time budget of {args.time_budget} s spent: {key} and the rest left for --resume",
                          flush=True)
                    print(table(results))
                    return
                kwargs = {}
                if n_candidates > 1:
                    if "n_candidates" not in accepts:
                        continue
                    kwargs.update(n_candidates=n_candidates, temperature=args.temperature)
                if shots:
                    if "prompt_examples" not in accepts or "prompt_examples" not in prepared:
                        continue
                    kwargs["prompt_examples"] = [[tuple(e) for e in row[:shots]] for row in prepared["prompt_examples"]]
                if model_name not in generators:
                    generators[model_name] = LocalTransformersGenerator(
                        model_path=model_path, device=device, max_new_tokens=args.max_new_tokens)
                generator = _Batched(generators[model_name], args.vote_batch if n_candidates > 1 else args.decode_batch)
                started = time.perf_counter()
                try:
                    result = evaluate_benchmark(bench, generator=generator,
                                                prompt_schemas=prepared["prompt_schemas"], k=data["meta"]["k"],
                                                max_new_tokens=args.max_new_tokens, show_progress=False, **kwargs)
                except Exception as exc:  # noqa: BLE001 - one failed evaluation (e.g. out of GPU memory) keeps the rest
                    results.setdefault("errors", {})[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    save()
                    print(f"{key:<40} failed: {results['errors'][key]}", flush=True)
                    torch.cuda.empty_cache() if torch.cuda.is_available() else None
                    continue
                summary = result.summary
                results["ex"][key] = {"ex": round(summary["ex"], 4), "n": summary["n"], "em": round(summary["em"], 4),
                                      "statuses": summary["statuses"],
                                      "greedy_fallbacks": sum(bool(r.vote and r.vote.get("fallback"))
                                                              for r in result.rows),
                                      "seconds": round(time.perf_counter() - started, 1)}
                if args.save_rows:
                    results.setdefault("samples", {})[key] = [
                        {"q": r.question, "gold": r.gold, "pred": r.pred, "ex": r.ex} for r in result.rows[:5]]
                save()
                print(f"{key:<40} EX {summary['ex']:.3f}  n={summary['n']}  {results['ex'][key]['seconds']} s  "
                      f"{summary['statuses']}", flush=True)
    print(table(results))


def table(results: dict) -> str:
    """The EX table: one row per benchmark x variant, base vs tuned and the change."""
    rows = {}
    for key, value in results["ex"].items():
        model, bench, variant = key.split("/", 2)
        rows.setdefault((bench, variant), {})[model] = value
    lines = [f"{'benchmark':<10} {'variant':<22} {'n':>4} {'base':>6} {'tuned':>6} {'change':>7}"]
    for (bench, variant), models in rows.items():
        base, tuned = models.get("base", {}).get("ex"), models.get("tuned", {}).get("ex")
        n = (models.get("tuned") or models.get("base"))["n"]
        change = f"{tuned - base:+.3f}" if base is not None and tuned is not None else ""
        lines.append(f"{bench:<10} {variant:<22} {n:>4} {base if base is not None else '':>6} "
                     f"{tuned if tuned is not None else '':>6} {change:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("prepare", help="corpus, SFT examples, retrieved prompts (needs the encoder)")
    p.add_argument("--out", required=True)
    p.add_argument("--n-records", type=int, default=2000)
    p.add_argument("--eval-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--examples", type=int, default=3, help="retrieved examples per prompt (0: none)")
    p.add_argument("--sft-examples", type=int, default=0,
                   help="retrieved examples (other domains) in half of the training prompts (0: none)")
    p.add_argument("--n-heldout", type=int, default=200)
    p.add_argument("--spider-dir")
    p.add_argument("--n-spider", type=int, default=200)
    p.set_defaults(func=prepare)
    r = sub.add_parser("run", help="train the adapter, score base vs tuned")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--spider-dir")
    r.add_argument("--base-model", help="base generator (default: the offline SmolLM2 GGUF)")
    r.add_argument("--tuned-dir", help="where the adapter goes (default OUT/tuned)")
    r.add_argument("--device")
    r.add_argument("--epochs", type=float, default=2.0)
    r.add_argument("--max-steps", type=int)
    r.add_argument("--max-examples", type=int)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--learning-rate", type=float, default=3e-4)
    r.add_argument("--lora-r", type=int, default=16)
    r.add_argument("--lora-alpha", type=int, default=32)
    r.add_argument("--max-seq-length", type=int, default=1536)
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--decode-batch", type=int, default=64, help="rows decoded together (greedy variants)")
    r.add_argument("--vote-batch", type=int, default=64, help="rows decoded together (voting variants)")
    r.add_argument("--variants", nargs="+", help="score only these variants (plain, examples3, vote5, ...)")
    r.add_argument("--time-budget", type=float, help="start no evaluation after this many seconds (then --resume)")
    r.add_argument("--n-candidates", type=int, default=5)
    r.add_argument("--temperature", type=float, default=0.7)
    r.add_argument("--examples", type=int, default=3)
    r.add_argument("--train-only", action="store_true")
    r.add_argument("--save-rows", action="store_true", help="keep 5 sample rows per evaluation in the results")
    r.add_argument("--limit", type=int, help="score only the first N questions of each benchmark (smoke tests)")
    r.add_argument("--resume", action="store_true", help="keep OUT's finished results and trained adapter")
    r.set_defaults(func=run)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

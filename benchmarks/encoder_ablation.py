"""Encoder ablation: which training change buys how much, base vs tuned in the same run.

Two steps, so the accelerator machine needs only torch, sentence-transformers and ``datasets``:

1. ``prepare`` (any CPU, full coderag installed): the builtin corpus split by domain, every retrieval pair
   synthesized from the train side (offline backend), the held-out synthetic evaluation and Spider dev
   (493 questions against all 166 schemas) written as JSON under ``--out``. The pairs are checked for
   Spider questions and tables (:mod:`coderag.training.leakage`) before they are written.
2. ``run`` (GPU or CPU): for each configuration, trains from the base encoder with
   :func:`coderag.training.finetune.train_encoder` (the trainer ``coderag finetune`` uses) and scores
   held-out synthetic and Spider dev with exact (brute-force) cosine search; prints a table and writes
   ``ablation.json``. Hard negatives are mined here with the base encoder (exact top-k, TopK-PercPos
   like :mod:`coderag.training.negatives`), from the train-side schema snippets: siblings of a pair's own
   schema, never the positive itself (``same_domain`` configs: only schemas of the pair's own domain).

``prepare --varied-records N`` also writes one data set per :data:`VARIED_SETS` feature mix (a
``builtin-varied`` corpus of N records, the classic held-out domains left out, so every configuration is
scored on the same held-out questions) and ``heldout_varied`` (those held-out domains as the varied
generator writes them); the ``*-varied*`` configs train on them.

Example (tiny, CPU)::

    python3 benchmarks/encoder_ablation.py prepare --out /tmp/abl --n-records 300 [--varied-records 4000]
    python3 benchmarks/encoder_ablation.py run --data /tmp/abl --out /tmp/abl/out --configs base,laptop --tiny
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> training settings; "pairs": 0 = all; "negatives": hard negatives per pair mined from sibling schemas.
CONFIGS = {
    "base": None,
    "laptop": {"pairs": 256, "batch": 16, "max_steps": 16, "epochs": 1, "lr": 5e-5, "negatives": 0, "cached": False},
    "all-1ep-b32": {"pairs": 0, "batch": 32, "epochs": 1, "lr": 5e-5, "negatives": 0, "cached": False},
    "all-3ep-b32": {"pairs": 0, "batch": 32, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": False},
    # the full profile (TrainingSettings(profile="full")): all pairs, 3 epochs, CachedMNRL batch 256
    "full": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True},
    # mined negatives + batch 256 fill no batch from ~320 train schemas: 0 steps ran on the H100
    "full-neg3": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 3, "cached": True},
    "b256-lr1e-4": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 1e-4, "negatives": 0, "cached": True},
    # learning rate / length around the full profile (the larger base, all-mpnet-base-v2, is usually tuned at 2e-5)
    "full-lr2e-5": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 2e-5, "negatives": 0, "cached": True},
    "full-6ep": {"pairs": 0, "batch": 256, "epochs": 6, "lr": 5e-5, "negatives": 0, "cached": True},
    "b256-no-paraphrase": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                           "tasks": ["question->schema", "hybrid_question->schema"]},
    "b256-no-hybrid": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                       "tasks": ["question->schema", "paraphrase->schema"]},
    # the pairs of fewer train domains (a seeded half / quarter of the 32): what domain variety is worth. Batch
    # 64: half the domains hold ~160 schemas, too few distinct positives for batches of 256 (0 steps on the H100)
    "b64-half-domains": {"pairs": 0, "batch": 64, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                         "domains_fraction": 0.5},
    "b64-quarter-domains": {"pairs": 0, "batch": 64, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                            "domains_fraction": 0.25},
    "b64-all-domains": {"pairs": 0, "batch": 64, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True},
    # 3x the schemas of the same train-side domains (needs `prepare --more-records 6000`)
    "more-b256-2ep": {"pairs": 0, "batch": 256, "epochs": 2, "lr": 5e-5, "negatives": 0, "cached": True,
                      "data": "more"},
    "more-b128-neg1-2ep": {"pairs": 0, "batch": 128, "epochs": 2, "lr": 5e-5, "negatives": 1, "cached": True,
                           "data": "more"},
    # the builtin-varied generator (needs `prepare --varied-records N`): its train-side domains only (the
    # classic held-out domains are left out of every varied set), every feature or all but one
    "laptop-varied": {"pairs": 256, "batch": 16, "max_steps": 16, "epochs": 1, "lr": 5e-5, "negatives": 0,
                      "cached": False, "data": "varied"},
    "full-varied": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                    "data": "varied"},
    "full-classic+varied": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                            "data": ["classic", "varied"]},
    "full-varied-no-synonyms": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                                "data": "varied-no-synonyms"},
    "full-varied-no-naming": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                              "data": "varied-no-naming"},
    "full-varied-no-shapes": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                              "data": "varied-no-shapes"},
    "full-domains-only": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                          "data": "varied-domains-only"},
    # one mined negative a pair, restricted to sibling schemas of the pair's own domain
    "full-varied-sibling-neg1": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 1, "cached": True,
                                 "data": "varied", "same_domain": True},
    # the best varied set on the first H200 run (no Spider-like naming), with the classic pairs / siblings
    "full-classic+no-naming": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 0, "cached": True,
                               "data": ["classic", "varied-no-naming"]},
    "full-no-naming-sibling-neg1": {"pairs": 0, "batch": 256, "epochs": 3, "lr": 5e-5, "negatives": 1,
                                    "cached": True, "data": "varied-no-naming", "same_domain": True},
}
# prepare --varied-records: data set name -> generator features
VARIED_SETS = {
    "varied": ("domains", "shapes", "naming", "synonyms"),
    "varied-no-synonyms": ("domains", "shapes", "naming"),
    "varied-no-naming": ("domains", "shapes", "synonyms"),
    "varied-no-shapes": ("domains", "naming", "synonyms"),
    "varied-domains-only": ("domains",),
}


def _packed_pairs(pairs: list[dict], schemas: list[str]) -> list[dict]:
    """Pairs with the positive as an index into ``schemas`` (positives repeat: this keeps the file small)."""
    where = {text: i for i, text in enumerate(schemas)}
    return [{"anchor": p["anchor"], "pos": where[p["positive"]], "task": p["task"], "domain": p["domain"]}
            for p in pairs]


def _unpacked(source: dict) -> dict:
    """The inverse of :func:`_packed_pairs` for one data set (a no-op on sets written unpacked)."""
    if source.get("pairs") and "pos" in source["pairs"][0]:
        schemas = source["positives"]
        source["pairs"] = [{"anchor": p["anchor"], "positive": schemas[p["pos"]], "task": p["task"],
                            "domain": p["domain"]} for p in source["pairs"]]
    return source


def _schema_domains(records: list[dict]) -> dict[str, str]:
    from coderag.corpus import dedupe_schemas

    corpus = dedupe_schemas(records)
    return {corpus.snippets[j]: records[i]["domain"] for i, j in enumerate(corpus.record_to_snippet)}


def prepare_varied(out: Path, data: dict, n_records: int, seed: int, held_domains: set[str], spider) -> None:
    """Add every :data:`VARIED_SETS` data set (train-side pairs of a builtin-varied corpus of ``n_records``
    records, the classic held-out domains left out) and ``heldout_varied`` (the varied corpus's records in
    those held-out domains, searched among all of its schemas) to ``data``."""
    from coderag.corpus import dedupe_schemas
    from coderag.corpus.generator import generate_corpus
    from coderag.pipeline.stages import RETRIEVAL_CATEGORIES, RETRIEVAL_TASKS
    from coderag.training.artifacts import load_pairs, select_pairs
    from coderag.training.leakage import check_no_outside_data, pair_texts
    from coderag.training.synthesis import synthesize_pairs

    for name, features in VARIED_SETS.items():
        records = generate_corpus(n_records, seed=seed, features=frozenset(features))
        train = [r for r in records if r["domain"] not in held_domains]
        synthesize_pairs(train, out / f"pairs_{name}", categories=RETRIEVAL_CATEGORIES, seed=seed, show_progress=False)
        pairs = select_pairs(load_pairs(out / f"pairs_{name}"), RETRIEVAL_TASKS, 0, seed)
        check_no_outside_data(pair_texts(pairs), [r["sql_prompt"] for r in spider.records], spider.schemas.values())
        domains = _schema_domains(train)
        positives = sorted({p["positive"] for p in pairs} | set(domains))
        data[name] = {"pairs": _packed_pairs(pairs, positives), "positives": positives,
                      "train_schemas": sorted(domains), "schema_domains": domains,
                      "domains": len({r["domain"] for r in train})}
        print(f"{name}: {len(pairs)} pairs over {len(domains)} schemas of {data[name]['domains']} domains",
              flush=True)
        if name == "varied":
            held = [r for r in records if r["domain"] in held_domains]
            everything = dedupe_schemas(train + held)
            data["heldout_varied"] = {"corpus": everything.snippets, "queries": [r["sql_prompt"] for r in held],
                                      "gold": everything.record_to_snippet[len(train):]}
            print(f"heldout_varied: {len(held)} queries over {len(everything.snippets)} schemas", flush=True)


def prepare(out: Path, n_records: int, seed: int, more_records: int = 0, varied_records: int = 0) -> None:
    from coderag.corpus import dedupe_schemas, load_corpus
    from coderag.corpus.spider import load_spider
    from coderag.pipeline.stages import RETRIEVAL_CATEGORIES, RETRIEVAL_TASKS
    from coderag.training.artifacts import load_pairs, select_pairs
    from coderag.training.heldout import split_by_domain
    from coderag.training.leakage import check_no_outside_data, pair_texts
    from coderag.training.synthesis import synthesize_pairs

    out.mkdir(parents=True, exist_ok=True)
    records = load_corpus("builtin", limit=n_records, seed=seed)
    train, held_out = split_by_domain(records, 0.2, seed)
    pairs_dir = out / "pairs_ds"
    synthesize_pairs(train, pairs_dir, categories=RETRIEVAL_CATEGORIES, seed=seed, show_progress=True)
    pairs = select_pairs(load_pairs(pairs_dir), RETRIEVAL_TASKS, 0, seed)
    spider = load_spider(Path(ROOT.parent / "shared" / "datasets" / "spider"), "dev")
    check_no_outside_data(pair_texts(pairs), [r["sql_prompt"] for r in spider.records], spider.schemas.values())
    everything = dedupe_schemas(train + held_out)
    offset = len(train)
    data = {
        "pairs": [{"anchor": p["anchor"], "positive": p["positive"], "task": p["task"], "domain": p["domain"]}
                  for p in pairs],
        "train_schemas": sorted({everything.snippets[i] for i in everything.record_to_snippet[:offset]}),
        "heldout": {"corpus": everything.snippets, "queries": [r["sql_prompt"] for r in held_out],
                    "gold": everything.record_to_snippet[offset:]},
    }
    if more_records:
        held_domains = {r["domain"] for r in held_out}
        more = [r for r in load_corpus("builtin", limit=more_records, seed=seed) if r["domain"] not in held_domains]
        synthesize_pairs(more, out / "pairs_more", categories=RETRIEVAL_CATEGORIES, seed=seed, show_progress=True)
        more_pairs = select_pairs(load_pairs(out / "pairs_more"), RETRIEVAL_TASKS, 0, seed)
        check_no_outside_data(pair_texts(more_pairs), [r["sql_prompt"] for r in spider.records],
                              spider.schemas.values())
        data["more"] = {"pairs": [{"anchor": p["anchor"], "positive": p["positive"], "task": p["task"],
                                   "domain": p["domain"]} for p in more_pairs],
                        "train_schemas": sorted(set(dedupe_schemas(more).snippets))}
        print(f"more: {len(more_pairs)} pairs over {len(data['more']['train_schemas'])} schemas")
    if varied_records:
        prepare_varied(out, data, varied_records, seed, {r["domain"] for r in held_out}, spider)
    db_ids = list(spider.schemas)
    data["spider"] = {"corpus": [spider.schemas[d] for d in db_ids],
                      "queries": [r["sql_prompt"] for r in spider.records],
                      "gold": [db_ids.index(r["domain"]) for r in spider.records]}
    import gzip

    (out / "ablation_data.json.gz").write_bytes(gzip.compress(json.dumps(data).encode(), 9))
    print(f"pairs {len(data['pairs'])}, train schemas {len(data['train_schemas'])}, held-out queries "
          f"{len(held_out)} over {len(everything.snippets)} schemas, spider {len(spider.records)} over {len(db_ids)}")


def _encode(model, texts, batch_size=128):
    import torch

    with torch.inference_mode():
        return model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                            show_progress_bar=False).float()


LEXICAL_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)


def _metrics(top: list[list[int]], gold: list[int]) -> dict[str, float]:
    from coderag.evaluation.ranking import retrieval_metrics

    return {k: round(v, 4) for k, v in retrieval_metrics(top, gold).items() if k != "ndcg@10"}


def score(model, split: dict) -> dict:
    """recall@1/5/10 and mrr@10 of each query's gold schema, exact cosine search; and under ``hybrid`` the
    same for cosine + w x BM25 (:mod:`coderag.retrieval.lexical`) at each w of :data:`LEXICAL_WEIGHTS`."""
    import torch

    from coderag.retrieval.lexical import LexicalIndex

    docs = _encode(model, split["corpus"])      # (n_docs, dim)
    queries = _encode(model, split["queries"])  # (n_queries, dim)
    cosine = queries @ docs.T
    k = min(10, len(split["corpus"]))
    out = _metrics(torch.topk(cosine, k=k, dim=1).indices.cpu().tolist(), split["gold"])
    lexical = torch.as_tensor(LexicalIndex(split["corpus"]).scores(split["queries"]), device=cosine.device)
    out["hybrid"] = {str(w): _metrics(torch.topk(cosine + w * lexical, k=k, dim=1).indices.cpu().tolist(),
                                      split["gold"]) for w in LEXICAL_WEIGHTS}
    return out


def best_weight(row: dict) -> float:
    """The lexical weight with the best held-out synthetic R@1 (then MRR@10): chosen without outside data."""
    hybrid = row["heldout"]["hybrid"]
    return float(max(hybrid, key=lambda w: (hybrid[w]["recall@1"], hybrid[w]["mrr@10"], -float(w))))


def mine_sibling_negatives(model, pairs: list[dict], schemas: list[str], n: int, *, top_k: int = 30,
                           perc_pos: float = 0.95, schema_domains: dict[str, str] | None = None) -> list[dict]:
    """Add negative_1..n: the schemas closest to the anchor below perc_pos x its positive's score, never
    the positive (these are mostly sibling variants of the same domain); with ``schema_domains`` only
    schemas of the pair's own domain qualify."""
    import torch

    if schema_domains is not None:
        top_k = len(schemas)

    docs = _encode(model, schemas)
    anchors = _encode(model, [p["anchor"] for p in pairs])
    positives = _encode(model, [p["positive"] for p in pairs])
    pos_scores = (anchors * positives).sum(dim=1)
    scores = anchors @ docs.T
    top = torch.topk(scores, k=min(top_k, len(schemas)), dim=1)
    out = []
    for i, pair in enumerate(pairs):
        picked = []
        for s, j in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True):
            same = schema_domains is None or schema_domains.get(schemas[j]) == pair["domain"]
            if same and schemas[j] != pair["positive"] and s < perc_pos * float(pos_scores[i]):
                picked.append(schemas[j])
            if len(picked) == n:
                break
        if len(picked) == n:
            out.append({**pair, **{f"negative_{k + 1}": t for k, t in enumerate(picked)}})
    return out


def _no_duplicate_batches(rows: list[dict], columns: list[str], batch_size: int, seed: int) -> list[list[dict]]:
    """Shuffled batches in which no text appears twice (a duplicate would be a false in-batch negative)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    batches, current, seen = [], [], set()
    waiting = []
    for row in rows:
        texts = {row[c] for c in columns}
        if texts & seen:
            waiting.append(row)
            continue
        current.append(row)
        seen |= texts
        if len(current) == batch_size:
            batches.append(current)
            current, seen = [], set()
            rows_back, waiting = waiting, []
            for w in rows_back:
                wt = {w[c] for c in columns}
                if wt & seen:
                    waiting.append(w)
                else:
                    current.append(w)
                    seen |= wt
    return batches


def train_plain(model, rows: list[dict], columns: list[str], *, epochs: int, batch_size: int, lr: float,
                cached: bool, max_steps: int | None, seed: int) -> dict:
    """The fallback when ``datasets`` cannot be imported: the same loss, AdamW, linear warm-up/decay and
    no-duplicate batches as ``train_encoder``, in a plain torch loop (fp32 with TF32 matmuls)."""
    import torch
    from sentence_transformers import losses

    from coderag.training.finetune import _features

    torch.backends.cuda.matmul.allow_tf32 = True
    loss_fn = (losses.CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=64) if cached
               else losses.MultipleNegativesRankingLoss(model, scale=20.0))
    batches = [b for e in range(epochs) for b in _no_duplicate_batches(rows, columns, batch_size, seed + e)]
    if max_steps:
        batches = batches[:max_steps]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = int(0.1 * len(batches))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (len(batches) - s) / max(1, len(batches) - warmup)))
    model.train()
    started, total = time.perf_counter(), 0.0
    for batch in batches:
        features = [_features(model, [r[c] for r in batch]) for c in columns]
        loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        total += float(loss)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    model.eval()
    return {"steps": len(batches), "seconds": round(time.perf_counter() - started, 3), "precision": "fp32/tf32",
            "train_loss": round(total / max(1, len(batches)), 4), "trainer": "plain-torch"}


def run(data_dir: Path, out: Path, names: list[str], base: str, tiny: bool, seed: int, *, plain: bool = False) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from datasets import Dataset

        from coderag.training.finetune import train_encoder
    except Exception as exc:  # noqa: BLE001 - no usable datasets/pyarrow on this machine: the plain loop
        print(f"datasets unavailable ({type(exc).__name__}: {exc}); training with the plain torch loop", flush=True)
        Dataset = train_encoder = None
    if plain:
        Dataset = train_encoder = None

    packed = data_dir / "ablation_data.json.gz"
    if packed.is_file():
        import gzip

        data = json.loads(gzip.decompress(packed.read_bytes()))
    else:
        data = json.loads((data_dir / "ablation_data.json").read_text())
    for value in data.values():
        if isinstance(value, dict) and "pairs" in value:
            _unpacked(value)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    results = {"device": card, "base": base, "pairs_available": len(data["pairs"]), "configs": {}}
    for name in names:
        cfg = CONFIGS[name]
        model = SentenceTransformer(base, device=device)
        model.float()  # the carried weights may be fp16; train and score in fp32 (CUDA steps autocast)
        model.max_seq_length = 256
        row: dict = {"config": cfg}
        t0 = time.perf_counter()
        if cfg is not None:
            names = cfg.get("data", "classic")
            sources = [data if n == "classic" else data[n] for n in ([names] if isinstance(names, str) else names)]
            source = {"pairs": [p for src in sources for p in src["pairs"]],
                      "train_schemas": sorted({t for src in sources for t in src["train_schemas"]}),
                      "schema_domains": {k: v for src in sources for k, v in src.get("schema_domains", {}).items()}}
            pairs = [p for p in source["pairs"] if p["task"] in cfg.get("tasks", [p["task"]])]
            if "domains_fraction" in cfg:
                domains = sorted({p["domain"] for p in pairs})
                random.Random(seed).shuffle(domains)
                kept = set(domains[: max(1, round(cfg["domains_fraction"] * len(domains)))])
                pairs = [p for p in pairs if p["domain"] in kept]
                row["domains"] = len(kept)
            random.Random(seed).shuffle(pairs)
            if cfg["pairs"]:
                pairs = pairs[: cfg["pairs"]]
            if tiny:
                pairs = pairs[:64]
            if cfg["negatives"]:
                pairs = mine_sibling_negatives(model, pairs, source["train_schemas"], cfg["negatives"],
                                               schema_domains=source["schema_domains"] if cfg.get("same_domain") else None)
            columns = ["anchor", "positive"] + [f"negative_{k + 1}" for k in range(cfg["negatives"])]
            model.max_seq_length = 256 if cfg["cached"] else 128
            epochs, batch = (1, min(cfg["batch"], 16)) if tiny else (cfg["epochs"], cfg["batch"])
            max_steps = 2 if tiny else cfg.get("max_steps")
            if train_encoder is not None:
                dataset = Dataset.from_dict({c: [p[c] for p in pairs] for c in columns})
                stats = train_encoder(model, dataset, epochs=epochs, batch_size=batch, learning_rate=cfg["lr"],
                                      cached=cfg["cached"], mini_batch_size=64, max_steps=max_steps, seed=seed,
                                      show_progress=False)
            else:
                stats = train_plain(model, pairs, columns, epochs=epochs, batch_size=batch, lr=cfg["lr"],
                                    cached=cfg["cached"], max_steps=max_steps, seed=seed)
            model.max_seq_length = 256
            row.update(pairs=len(pairs), steps=stats["steps"], train_seconds=stats["seconds"],
                       precision=stats["precision"], train_loss=stats["train_loss"])
        row["heldout"] = score(model, data["heldout"])
        row["spider"] = score(model, data["spider"])
        if "heldout_varied" in data:
            row["heldout_varied"] = score(model, data["heldout_varied"])
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results["configs"][name] = row
        print(json.dumps({name: row}), flush=True)
        (out / "ablation.json").write_text(json.dumps(results, indent=2))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    print(f"\n{'config':<26} {'pairs':>6} {'steps':>6} {'train_s':>8} {'heldout R@1':>12} {'spider R@1':>11} "
          f"{'spider MRR@10':>14} {'varied-heldout R@1':>19} | {'w*':>5} {'hyb heldout R@1':>16} "
          f"{'hyb spider R@1':>15} {'hyb spider MRR@10':>18}   on {card}")
    for name, row in results["configs"].items():
        varied = row.get("heldout_varied", {}).get("recall@1", float("nan"))
        w = best_weight(row)
        held, spider = row["heldout"]["hybrid"][str(w)], row["spider"]["hybrid"][str(w)]
        print(f"{name:<26} {row.get('pairs', 0):>6} {row.get('steps', 0):>6} {row.get('train_seconds', 0):>8} "
              f"{row['heldout']['recall@1']:>12.4f} {row['spider']['recall@1']:>11.4f} {row['spider']['mrr@10']:>14.4f} "
              f"{varied:>19.4f} | {w:>5} {held['recall@1']:>16.4f} {spider['recall@1']:>15.4f} "
              f"{spider['mrr@10']:>18.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-records", type=int, default=2000)
    p.add_argument("--more-records", type=int, default=0, help="also pairs from a corpus this large (held-out "
                                                                 "domains left out) for the more-schemas config")
    p.add_argument("--varied-records", type=int, default=0, help="also the builtin-varied data sets (VARIED_SETS) "
                                                                   "from corpora this large, for the *-varied configs")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--base", default="", help="base model directory (default: the builtin all-MiniLM-L6-v2)")
    p.add_argument("--tiny", action="store_true", help="64 pairs, 2 steps: a smoke test on CPU")
    p.add_argument("--plain", action="store_true", help="train with the plain torch loop (no datasets)")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out, args.n_records, args.seed, args.more_records, args.varied_records)
    else:
        base = args.base
        if not base:
            from coderag.retrieval.encoder import resolve_encoder_path

            base = resolve_encoder_path(None)
        run(args.data, args.out, args.configs.split(","), base, args.tiny, args.seed, plain=args.plain)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Stage 1: synthesize (anchor, positive) training pairs in four task categories.

Categories (after "Towards a Generalist Code Embedding Model Based on Massive Data Synthesis"):

=========  ==========================================  =======================================
category   pairs per record (task: anchor -> positive)  generated text (offline | llm backend)
=========  ==========================================  =======================================
text2code  question->schema, paraphrase->schema,        question paraphrase
           paraphrase->sql
code2text  sql->description                             plain-English description of the SQL
code2code  sql->rewrite, schema->sql                    equivalent SQL rewrite
hybrid     hybrid_question->schema, question+schema->sql question naming its tables/columns
=========  ==========================================  =======================================

The schema positive is the record's own deduplicated schema snippet, the very text the retriever's
index holds, so question->schema pairs train exactly the retrieval task. Every candidate then passes
:mod:`coderag.training.synthesis_filter`; drops are counted by reason in the returned report.

The ``llm`` backend sends one prompt per (record, category) (templates in
``coderag/templates/synthesis/<category>.txt``) through any :class:`~coderag.generation.llm.SqlGenerator`
with bounded concurrency (transient failures retried by the OpenAI client); each finished reply is appended to a JSONL shard beside the
output, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import string
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from coderag.errors import ConfigError, CorpusError
from coderag.training.artifacts import PAIR_COLUMNS, save_dataset
from coderag.training.synthesis_filter import Candidate, filter_candidates
from coderag.training.synthesis_offline import (
    describe_sql,
    hybrid_question,
    paraphrase_question,
    record_rng,
    rewrite_sql,
    sql_objects,
)

log = logging.getLogger(__name__)

TASK_CATEGORIES = ("text2code", "code2text", "code2code", "hybrid")
BACKENDS = ("offline", "llm")
PAIRS_PER_RECORD = {"text2code": 3, "code2text": 1, "code2code": 2, "hybrid": 2}
_REQUIRED = ("id", "domain", "sql_prompt", "sql_context", "sql")
_SYSTEM = "You write precise training data for code retrieval models. Follow the instructions exactly."


@dataclass(frozen=True)
class _Item:
    key: str
    record_index: int
    category: str


def load_prompt_template(category: str) -> string.Template:
    """The prompt template for ``category`` (a data file shipped in the package).

    Args:
        category: one of :data:`TASK_CATEGORIES`.

    Returns:
        A ``string.Template`` to fill with the record's fields.

    Example:
        >>> sorted(load_prompt_template("code2text").get_identifiers())
        ['schema', 'sql']
    """
    text = resources.files("coderag").joinpath(f"templates/synthesis/{category}.txt").read_text()
    return string.Template(text)


def _validate(records, backend, categories, concurrency, max_pairs, timeout_s) -> tuple[str, ...]:
    if backend not in BACKENDS:
        raise ConfigError(f"synthesis backend {backend!r} is unknown: use one of {', '.join(BACKENDS)}.")
    cats = tuple(dict.fromkeys(categories))
    unknown = [c for c in cats if c not in TASK_CATEGORIES]
    if unknown or not cats:
        raise ConfigError(
            f"task categories {unknown or '(none)'} are invalid: choose from {', '.join(TASK_CATEGORIES)}."
        )
    if concurrency < 1 or timeout_s <= 0:
        raise ConfigError("concurrency must be >= 1 and timeout_s > 0.")
    if max_pairs is not None and max_pairs < 1:
        raise ConfigError(f"max_pairs must be a positive number, got {max_pairs}.")
    if not records:
        raise CorpusError("no records to synthesize pairs from: load a corpus with `coderag corpus` first.")
    missing = [k for k in _REQUIRED if k not in records[0]]
    if missing:
        raise CorpusError(f"records lack column(s) {', '.join(missing)}: pass gretel-format records.")
    return cats


def _item_key(record: dict, category: str) -> str:
    digest = zlib.crc32(f"{record['sql_prompt']}\n{record['sql']}".encode()) & 0xFFFFFFFF
    return f"{category}:{record['id']}:{digest:08x}"


def _offline_text(record: dict, category: str, seed: int) -> str:
    rng = record_rng(seed, record["id"], category)
    if category == "text2code":
        return paraphrase_question(record["sql_prompt"], rng)
    if category == "code2text":
        return describe_sql(record["sql"])
    if category == "code2code":
        return rewrite_sql(record["sql"], record["sql_context"])
    return hybrid_question(record["sql_prompt"], record["sql"], rng)


def _messages(record: dict, schema: str, category: str) -> list[dict[str, str]]:
    tables, _ = sql_objects(record["sql"])
    prompt = load_prompt_template(category).safe_substitute(
        question=record["sql_prompt"], sql=record["sql"], schema=schema, tables=", ".join(tables) or "(see SQL)"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]


def _clean_reply(reply: str, category: str) -> str:
    if category == "code2code":
        from coderag.sql.text import extract_sql

        return extract_sql(reply).strip()
    paragraphs = [p.strip() for p in reply.strip().split("\n\n") if p.strip()]
    text = paragraphs[0] if paragraphs else ""
    if category != "code2text":
        text = text.splitlines()[0] if text else ""
        for prefix in ("Question:", "Request:", "Rewritten question:"):
            if text.lower().startswith(prefix.lower()):
                text = text[len(prefix) :]
    return " ".join(text.split()).strip().strip('"').strip()


def _call_with_timeout(fn, timeout_s: float):
    """Run ``fn()`` and return its value, or raise TimeoutError after ``timeout_s``.

    The call runs in a daemon thread: a generator that hangs is abandoned (its thread ends whenever the
    underlying request does) instead of holding a pool slot forever.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller below, whatever it is
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, daemon=True, name="synth-call").start()
    if not finished.wait(timeout_s):
        raise TimeoutError(f"the LLM request took longer than {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _complete(generator, messages, max_tokens: int, timeout_s: float) -> str:
    """One LLM call bounded by ``timeout_s``. Transient failures are retried by the client itself
    (the OpenAI client's ``max_retries``: connection errors, 408/409/429/5xx; never other 4xx)."""
    return _call_with_timeout(lambda: generator.complete(messages, max_tokens=max_tokens, temperature=0.0), timeout_s)


def _read_shard(path: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                done[row["key"]] = row["text"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: its item is simply redone
    return done


def _generate_llm(items, records, snippets, generator, shard: Path, *, resume, concurrency,
                  max_tokens, timeout_s, show_progress) -> tuple[dict[str, str], dict[str, int]]:
    """Generate text for ``items``, appending each finished reply to ``shard`` as it arrives."""
    if not resume and shard.exists():
        shard.unlink()
    texts = _read_shard(shard)
    todo = [it for it in items if it.key not in texts]
    stats = {"resumed": len(items) - len(todo), "generated": 0, "generation_failed": 0}
    shard.parent.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="synth")
    with shard.open("a", encoding="utf-8") as out:

        def record(fut, it) -> None:
            try:
                reply = fut.result()
            except Exception as exc:
                stats["generation_failed"] += 1
                log.warning("generation failed for %s: %s", it.key, exc)
                return
            text = _clean_reply(reply, it.category)
            out.write(json.dumps({"key": it.key, "text": text}) + "\n")
            out.flush()
            texts[it.key] = text
            stats["generated"] += 1

        # At most `concurrency` requests are in flight: one per pool thread.
        futures = {
            pool.submit(
                _complete, generator,
                _messages(records[it.record_index], snippets[it.record_index], it.category),
                max_tokens, timeout_s,
            ): it
            for it in todo
        }
        handled = set()
        try:
            for fut in tqdm(as_completed(futures), total=len(futures), desc="synth (llm)",
                            disable=not show_progress):
                handled.add(fut)
                record(fut, futures[fut])
        except BaseException:
            # Interrupted (Ctrl-C, a kill surfacing as an exception): keep every reply that did finish,
            # so the rerun only redoes what was really lost.
            pool.shutdown(wait=True, cancel_futures=True)
            for fut, it in futures.items():
                if fut not in handled and fut.done() and not fut.cancelled() and fut.exception() is None:
                    record(fut, it)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return texts, stats


def _candidates(record: dict, index: int, schema: str, category: str, text: str) -> list[Candidate]:
    # Every pair carries its record's gold SQL as a check: a record whose SQL does not execute on its
    # own schema is untrustworthy, so none of its pairs survive (results are cached per record).
    q, sql = record["sql_prompt"], record["sql"]
    gold = (sql,)
    if category == "text2code":
        return [
            Candidate(q, schema, category, "question->schema", index, "schema", gold),
            Candidate(text, schema, category, "paraphrase->schema", index, "schema", gold),
            Candidate(text, sql, category, "paraphrase->sql", index, "sql", gold),
        ]
    if category == "code2text":
        return [Candidate(sql, text, category, "sql->description", index, "text", gold)]
    if category == "code2code":
        return [
            Candidate(sql, text, category, "sql->rewrite", index, "sql", (sql, text), equivalent_to=sql),
            Candidate(schema, sql, category, "schema->sql", index, "sql", gold),
        ]
    return [
        Candidate(text, schema, category, "hybrid_question->schema", index, "schema", gold),
        Candidate(f"{q}\n{schema}", sql, category, "question+schema->sql", index, "sql", gold),
    ]


def shard_path_for(output_dir: str | os.PathLike) -> Path:
    """Where the LLM backend keeps finished replies of an unfinished run for ``output_dir``.

    Args:
        output_dir: the pairs dataset directory.

    Returns:
        A hidden JSONL file beside ``output_dir``.

    Example:
        >>> shard_path_for("out/pairs").name
        '.pairs.synth-shard.jsonl'
    """
    output_dir = Path(output_dir)
    return output_dir.with_name(f".{output_dir.name}.synth-shard.jsonl")


def synthesize_pairs(
    records: list[dict[str, Any]],
    output_dir: str | os.PathLike,
    *,
    backend: str = "offline",
    generator=None,
    categories=TASK_CATEGORIES,
    max_pairs: int | None = None,
    seed: int = 0,
    concurrency: int = 4,
    resume: bool = True,
    timeout_s: float = 60.0,
    max_tokens: int = 200,
    sql_timeout_s: float = 5.0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Synthesize filtered pairs from ``records`` and save them as a ``datasets`` Dataset at ``output_dir``.

    Columns: anchor, positive, category, task, provenance (record id), backend, domain. The directory
    is published atomically (with ``synthesis_report.json`` inside). ``backend="llm"`` uses
    ``generator`` (any object with ``complete(messages, max_tokens=, temperature=)``); when it is None
    the local SmolLM2 generator is built. Each request is bounded by ``timeout_s`` (the OpenAI
    client retries transient failures itself); at most ``concurrency`` are in flight. With ``resume`` a rerun skips items whose replies
    are already in the shard; the shard is removed once the dataset is published.

    Returns a report: counts per category and task, drops per filter reason, generation counts.

    Args:
        records: gretel-format records (``id``, ``domain``, ``sql_prompt``, ``sql_context``, ``sql``).
        output_dir: where the pairs dataset is saved.
        backend: ``"offline"`` (procedural text) or ``"llm"``.
        generator: the LLM for ``backend="llm"``.
        categories: task categories to synthesize (subset of :data:`TASK_CATEGORIES`).
        max_pairs: cap on kept pairs (a seeded sample); ``None`` keeps all.
        seed: seed for record order, offline text and sampling.
        concurrency, resume, timeout_s, max_tokens: LLM backend settings (see above).
        sql_timeout_s: time limit for each SQL check of the filter.
        show_progress: show progress bars.

    Returns:
        The synthesis report (also saved as ``synthesis_report.json``).

    Raises:
        ConfigError: an unknown backend or category, or a bad ``concurrency``/``timeout_s``/``max_pairs``.
        CorpusError: no records, or records missing gretel columns.

    Example:
        >>> synthesize_pairs(load_corpus("builtin", limit=50), "out/pairs")["kept"]  # doctest: +SKIP
        180
    """
    from datasets import Dataset

    from coderag.corpus import dedupe_schemas

    cats = _validate(records, backend, categories, concurrency, max_pairs, timeout_s)
    started = time.perf_counter()
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    if max_pairs is not None:
        # Enough records to reach max_pairs after the filter drops some (generation is the cost).
        per_record = sum(PAIRS_PER_RECORD[c] for c in cats)
        order = order[: min(len(order), math.ceil(1.5 * max_pairs / per_record) + 1)]
    order.sort()
    chosen = [records[i] for i in order]
    schema_corpus = dedupe_schemas(chosen)
    snippets = [schema_corpus.snippets[j] for j in schema_corpus.record_to_snippet]
    items = [_Item(_item_key(r, c), i, c) for i, r in enumerate(chosen) for c in cats]

    gen_stats = {"resumed": 0, "generated": 0, "generation_failed": 0}
    shard = shard_path_for(output_dir)
    if backend == "offline":
        texts = {it.key: _offline_text(chosen[it.record_index], it.category, seed) for it in
                 tqdm(items, desc="synth (offline)", disable=not show_progress)}
        gen_stats["generated"] = len(texts)
    else:
        if generator is None:
            from coderag.generation.llm import LocalTransformersGenerator

            generator = LocalTransformersGenerator()
        log.info("llm synthesis: %d items, concurrency=%d, timeout=%.0fs", len(items), concurrency, timeout_s)
        texts, gen_stats = _generate_llm(
            items, chosen, snippets, generator, shard, resume=resume, concurrency=concurrency,
            max_tokens=max_tokens, timeout_s=timeout_s,
            show_progress=show_progress,
        )

    candidates = [
        cand
        for it in items
        if it.key in texts
        for cand in _candidates(chosen[it.record_index], it.record_index, snippets[it.record_index],
                                it.category, texts[it.key])
    ]
    result = filter_candidates(
        candidates, [r["sql_context"] for r in chosen], snippets, timeout_s=sql_timeout_s,
        trusted_sql=[r["sql"] for r in chosen],
        progress=lambda xs: tqdm(xs, desc="filter", disable=not show_progress),
    )
    kept = result.kept
    if max_pairs is not None and len(kept) > max_pairs:
        picked = sorted(random.Random(seed).sample(range(len(kept)), max_pairs))
        kept = [kept[i] for i in picked]

    rows = {col: [] for col in PAIR_COLUMNS}
    for cand in kept:
        rec = chosen[cand.record_index]
        for col, value in zip(PAIR_COLUMNS, (cand.anchor, cand.positive, cand.category, cand.task,
                                             str(rec["id"]), backend, str(rec["domain"]))):
            rows[col].append(value)
    dataset = Dataset.from_dict(rows)

    report = {
        "backend": backend,
        "records": len(chosen),
        "items": len(items),
        **gen_stats,
        "candidates": len(candidates),
        "kept": len(kept),
        "dropped": dict(sorted(result.dropped.items())),
        "per_category": {c: sum(1 for k in kept if k.category == c) for c in cats},
        "per_task": {t: n for t, n in sorted(_count(k.task for k in kept).items())},
        "seed": seed,
        "output_dir": str(output_dir),
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_dataset(dataset, output_dir, extra_files={"synthesis_report.json": json.dumps(report, indent=2)})
    if shard.exists():
        shard.unlink()
    log.info("synthesis done: %s", json.dumps(report))
    return report


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts

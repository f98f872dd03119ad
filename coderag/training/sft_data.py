"""The data of generator SFT: train-side records whose SQL executes, as inference prompts with their answers.

The generator learns the exact task it serves: each :class:`SftExample` is the prompt
:func:`~coderag.generation.prompting.build_messages` builds at inference (question + the retriever's
schemas, optionally retrieved examples) and the record's SQL in a ```sql block. Only records whose SQL is
one read-only query that executes on the record's own database (``sql_context``) are used, and records of
held-out domains never are. :func:`prepare_sft_examples` does it all; the training itself is
:mod:`coderag.training.generator_sft`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coderag.errors import ConfigError, CorpusError

PROMPT_SCHEMA_MODES = ("retrieved", "gold")


@dataclass
class SftExample:
    """One training conversation: the inference prompt's messages and the answer the model should give."""

    messages: list[dict[str, str]]
    answer: str
    domain: str
    record_id: str


def sql_answer(sql: str) -> str:
    """The assistant reply for ``sql``, shaped like the prompt's demonstration (one ```sql block).

    Example:
        >>> sql_answer("SELECT 1")
        '```sql\\nSELECT 1;\\n```'
    """
    body = sql.strip().rstrip(";").strip()
    return f"```sql\n{body};\n```"


def executing_records(records: Iterable[dict], *, timeout_s: float = 5.0) -> tuple[list[dict], Counter]:
    """The records whose SQL is one read-only query that runs on the database their ``sql_context`` builds.

    Args:
        records: gretel-format records (``sql``, ``sql_context``).
        timeout_s: time limit per query.

    Returns:
        ``(kept records, Counter of drop reasons)``: ``guard_refused`` (not one read-only query: the
        generator is asked for a SELECT), ``context_failed`` (the context does not build a database),
        ``execution_failed``.

    Example:
        >>> kept, dropped = executing_records([
        ...     {"sql": "SELECT a FROM t", "sql_context": "CREATE TABLE t (a INT);"},
        ...     {"sql": "SELECT b FROM t", "sql_context": "CREATE TABLE t (a INT);"}])
        >>> len(kept), dict(dropped)
        (1, {'execution_failed': 1})
    """
    from coderag.sql.execution import SqlContextError, SqlExecutionError, run_query, sqlite_from_context
    from coderag.sql.guard import sql_guard

    kept: list[dict] = []
    dropped: Counter = Counter()
    for record in records:
        sql = str(record.get("sql") or "")
        if not sql.strip() or not sql_guard(sql).allowed:
            dropped["guard_refused"] += 1
            continue
        try:
            conn = sqlite_from_context(str(record.get("sql_context") or ""))
        except SqlContextError:
            dropped["context_failed"] += 1
            continue
        try:
            run_query(conn, sql, timeout_s=timeout_s)
        except SqlExecutionError:
            dropped["execution_failed"] += 1
            continue
        finally:
            conn.close()
        kept.append(record)
    return kept, dropped


def retrieved_prompt_schemas(records: Sequence[dict], encoder_model, k: int,
                             corpus_records: Sequence[dict] | None = None) -> list[list[str]]:
    """Per record, the top-``k`` schema snippets the retriever returns for its question, gold always among them.

    The index holds the deduplicated schemas of ``corpus_records`` (default: ``records``); when the
    record's own schema is not in the top-``k`` it replaces the last hit, so every training prompt can
    be answered from what it shows, while the other hits teach the model to ignore distractors.

    Args:
        records: the training records.
        encoder_model: the retrieval encoder.
        k: snippets per prompt.
        corpus_records: records whose schemas form the index (never held-out ones).

    Returns:
        One list of ``k`` (or fewer, for a tiny corpus) snippets per record, best first.
    """
    from coderag.corpus import dedupe_schemas
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.search import retrieve_schemas

    corpus = list(corpus_records) if corpus_records is not None else list(records)
    schemas = dedupe_schemas(corpus + list(records))
    own = schemas.record_to_snippet[len(corpus):]
    index = SchemaIndex.build(encoder_model, schemas.snippets, domains=schemas.snippet_domains)
    hits = retrieve_schemas(index, encoder_model, [str(r["sql_prompt"]) for r in records], k=min(k, index.count))
    chosen = []
    for gold, row in zip(own, hits, strict=True):
        ids = [h.snippet_id for h in row]
        if gold not in ids:
            ids = ids[:-1] + [gold] if ids else [gold]
        chosen.append([schemas.snippets[i] for i in ids])
    return chosen


def gold_prompt_schemas(records: Sequence[dict]) -> list[list[str]]:
    """Per record, its own schema snippet alone (no retrieval: cheap, for small runs and tests)."""
    from coderag.corpus import schema_only

    return [[schema_only(str(r["sql_context"]))] for r in records]


def build_sft_examples(records: Sequence[dict], prompt_schemas: Sequence[Sequence[str]],
                       dialect: str = "SQLite", prompt_examples: Sequence[Sequence[Any]] | None = None
                       ) -> list[SftExample]:
    """One :class:`SftExample` per record: ``build_messages(question, schemas, examples=...)`` -> the record's SQL.

    Args:
        records: gretel-format records (``sql_prompt``, ``sql``, ``domain``, ``id``).
        prompt_schemas: the schema snippets of each record's prompt (same order).
        dialect: the dialect the system message names.
        prompt_examples: the retrieved question -> SQL examples of each record's prompt (same order; None:
            none in any prompt).

    Returns:
        The examples, in record order.

    Example:
        >>> ex = build_sft_examples([{"sql_prompt": "How many?", "sql": "SELECT COUNT(*) FROM t", "domain": "d",
        ...                           "id": 1}], [["CREATE TABLE t (a INT);"]])[0]
        >>> ex.messages[-1]["role"], ex.answer.splitlines()[1]
        ('user', 'SELECT COUNT(*) FROM t;')
    """
    from coderag.generation.prompting import build_messages

    if len(prompt_schemas) != len(records):
        raise ConfigError(f"{len(prompt_schemas)} schema lists for {len(records)} records")
    shots = [[] for _ in records] if prompt_examples is None else [list(row) for row in prompt_examples]
    if len(shots) != len(records):
        raise ConfigError(f"{len(shots)} example lists for {len(records)} records")
    return [SftExample(messages=build_messages(str(r["sql_prompt"]), list(schemas), dialect=dialect, examples=shown),
                       answer=sql_answer(str(r["sql"])), domain=str(r.get("domain", "")),
                       record_id=str(r.get("id", i)))
            for i, (r, schemas, shown) in enumerate(zip(records, prompt_schemas, shots, strict=True))]


def other_domain_prompt_examples(records: Sequence[dict], encoder_model, k: int, *, seed: int = 0,
                                 share: float = 0.5) -> list[list[Any]]:
    """Per record, ``k`` retrieved training examples from *other* domains, for a seeded ``share`` of the records.

    At inference the examples of a held-out question always come from other (training) domains; training
    prompts are built the same way, so the model learns to take the pattern of an example and the names of
    the schema. The other records get none, so the tuned model also answers prompts without examples.

    Args:
        records: the training records (the example pool, and the questions).
        encoder_model: the retrieval encoder.
        k: examples per prompt that gets them.
        seed: which records get examples.
        share: the fraction of records that get them.

    Returns:
        One list of :class:`~coderag.retrieval.examples.Example` per record (empty for the others).
    """
    from coderag.retrieval.encoder import encode
    from coderag.retrieval.examples import ExampleIndex

    pool = ExampleIndex.build(encoder_model, records)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(records)), round(share * len(records))))
    out: list[list[Any]] = [[] for _ in records]
    if not chosen:
        return out
    vectors = encode(encoder_model, [str(records[i]["sql_prompt"]) for i in chosen])  # (chosen, dim)
    found = pool.search_other_domains(vectors, [str(records[i].get("domain", "")) for i in chosen], k)
    for i, row in zip(chosen, found, strict=True):
        out[i] = row
    return out


def prepare_sft_examples(train_records: Sequence[dict], *, held_out_domains: Iterable[str] = (),
                         encoder_model=None, prompt_schemas: str = "retrieved", k: int = 3,
                         max_examples: int | None = None, seed: int = 0, examples: int = 0
                         ) -> tuple[list[SftExample], Counter]:
    """The training conversations: train-side records whose SQL executes, with their inference prompts.

    Args:
        train_records: gretel-format records of the train side.
        held_out_domains: domains whose records must never be trained on (dropped and counted).
        encoder_model: the retrieval encoder, for ``prompt_schemas="retrieved"`` (default: the offline one).
        prompt_schemas: ``retrieved`` (top-``k`` over the train-side schemas, gold kept in) or ``gold``.
        k: schemas per prompt.
        max_examples: seeded cap on the examples (None: all).
        seed: sampling seed.
        examples: retrieved question -> SQL examples of other training domains in half of the prompts
            (seeded; :func:`other_domain_prompt_examples`), so the tuned model uses ``--examples`` at
            inference; 0: none.

    Returns:
        ``(examples, Counter of dropped records by reason)``.

    Raises:
        ConfigError: ``prompt_schemas`` or ``k`` is invalid.
        CorpusError: no record survives the filters.

    Example:
        >>> examples, dropped = prepare_sft_examples(train, held_out_domains={"retail"},
        ...                                          prompt_schemas="gold")  # doctest: +SKIP
    """
    if prompt_schemas not in PROMPT_SCHEMA_MODES:
        raise ConfigError(f"prompt_schemas {prompt_schemas!r} is unknown: use one of {', '.join(PROMPT_SCHEMA_MODES)}.")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}.")
    from coderag.retrieval.examples import check_examples

    check_examples(examples)
    held_out = {str(d) for d in held_out_domains}
    records = [r for r in train_records if str(r.get("domain", "")) not in held_out]
    drops: Counter = Counter({"held_out_domain": len(train_records) - len(records)})
    records, failed = executing_records(records)
    drops.update(failed)
    if max_examples is not None and len(records) > max_examples:
        records = random.Random(seed).sample(records, max_examples)
    if not records:
        raise CorpusError("no training record is left after dropping held-out domains and SQL that does not "
                          f"execute ({dict(+drops)}): use a larger corpus.")
    if encoder_model is None and (prompt_schemas == "retrieved" or examples):
        from coderag.retrieval.encoder import load_encoder

        encoder_model = load_encoder(None)
    if prompt_schemas == "retrieved":
        schemas = retrieved_prompt_schemas(records, encoder_model, k)
    else:
        schemas = gold_prompt_schemas(records)
    shots = other_domain_prompt_examples(records, encoder_model, examples, seed=seed) if examples else None
    return build_sft_examples(records, schemas, prompt_examples=shots), +drops

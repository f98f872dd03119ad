"""Scoring the whole system on a benchmark: retrieval over every schema, generation, guard, execution, EX/EM.

A :class:`Benchmark` is a list of questions with gold SQL, the schema of every database they may be asked
against (the retrieval corpus) and a way to open each database. Two sources:

* Spider's release layout (:func:`load_spider_benchmark`): ``tables.json``, a questions file (``dev.json``
  by default) and ``database/<db_id>/<db_id>.sqlite``; one schema snippet per database;
* gretel-format records (:func:`load_gretel_benchmark`): each record's ``sql_context`` builds its database
  in memory; one snippet per distinct schema.

:func:`evaluate_benchmark` scores it with the test-suite evaluator's EX by default
(:mod:`coderag.evaluation.execution_match`), normalised and semantic EM
(:mod:`coderag.evaluation.exact_match`) and Spider hardness (:mod:`coderag.evaluation.hardness`) on every
question, with schemas ``retrieved`` (top-k of the encoder over all schemas), ``oracle`` (the gold
schema) or ``none``; or it scores given predictions (the official evaluator's ``--pred`` file).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from coderag.errors import ConfigError, CorpusError, GenerationError, GeneratorUnavailable

log = logging.getLogger(__name__)

SCHEMA_MODES = ("retrieved", "oracle", "none")
HARDNESS_LEVELS = ("easy", "medium", "hard", "extra", "unknown")


@dataclass
class BenchmarkQuestion:
    """One question: its database, gold SQL and (gretel) the context that builds its database."""

    id: str
    db_id: str
    question: str
    gold: str
    sql_complexity: str = ""
    sql_context: str | None = None
    index: int = 0


@dataclass
class Benchmark:
    """Questions, the schema text of every database (the retrieval corpus) and how to open a database.

    ``schema_ids`` maps each question to its gold schema's position in ``schemas``.
    """

    name: str
    questions: list[BenchmarkQuestion]
    schemas: list[str]
    schema_names: list[str]
    schema_ids: list[int]
    db_paths: dict[str, Path] = field(default_factory=dict)
    connect_fn: Callable[[BenchmarkQuestion], sqlite3.Connection] | None = None
    _file_schemas: dict[str, dict | None] = field(default_factory=dict, repr=False)
    # db_id -> a server Database (PostgreSQL, MariaDB) holding a copy of that database: then gold SQL is
    # transpiled to the server's dialect and every query runs there (see coderag.evaluation.dialects).
    server: Callable[[str], Any] | None = None
    transpile: bool = False

    @property
    def dialect(self) -> str:
        """The sqlglot dialect queries are executed in (``sqlite`` unless a server is set)."""
        return self.server(self.questions[0].db_id).dialect if self.server and self.questions else "sqlite"

    @property
    def dialect_label(self) -> str:
        """How the prompt names the dialect (``SQLite``, ``PostgreSQL``, ``MariaDB``)."""
        if not (self.server and self.questions):
            return "SQLite"
        return self.server(self.questions[0].db_id).label

    def connect(self, question: BenchmarkQuestion) -> sqlite3.Connection | Path:
        """The database of ``question``: its SQLite file (Spider) or an in-memory build of its context."""
        if self.connect_fn is not None:
            return self.connect_fn(question)
        if question.sql_context is not None:
            from coderag.sql.execution import sqlite_from_context

            return sqlite_from_context(question.sql_context)
        path = self.db_paths.get(question.db_id)
        if path is None:
            raise CorpusError(f"database {question.db_id} has no SQLite file in the benchmark: check database/")
        return path

    def sqlglot_schema(self, question: BenchmarkQuestion) -> dict | None:
        """The gold database's schema as sqlglot's mapping (for semantic EM), or None when unreadable."""
        from coderag.evaluation.exact_match import schema_from_sql_context, schema_from_sqlite

        try:
            if question.sql_context is not None:
                return schema_from_sql_context(question.sql_context)
            if question.db_id not in self._file_schemas:  # one PRAGMA read per database, not per question
                self._file_schemas[question.db_id] = schema_from_sqlite(self.db_paths[question.db_id])
            return self._file_schemas[question.db_id]
        except Exception:  # noqa: BLE001 - semantic EM falls back to normalised EM without a schema
            return None

    def limit(self, n: int | None) -> Benchmark:
        """The first ``n`` questions (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise ConfigError(f"--limit must be a positive number of questions, got {n}")
        return Benchmark(self.name, self.questions[:n], self.schemas, self.schema_names, self.schema_ids[:n],
                         self.db_paths, self.connect_fn, server=self.server, transpile=self.transpile)


def load_spider_benchmark(spider_dir: str | Path, questions: str | Path | None = None) -> Benchmark:
    """A benchmark in Spider's release layout.

    Args:
        spider_dir: folder holding ``tables.json`` and ``database/<db_id>/<db_id>.sqlite``.
        questions: the questions file (default ``dev.json`` beside ``tables.json``), a JSON list of
            objects with ``db_id``, ``question`` and ``query``.

    Returns:
        A :class:`Benchmark` whose retrieval corpus is one CREATE TABLE snippet per database of ``tables.json``.

    Example:
        >>> bench = load_spider_benchmark("../shared/datasets/spider")     # doctest: +SKIP
        >>> len(bench.questions), len(bench.schemas)                         # doctest: +SKIP
        (493, 166)
    """
    from coderag.corpus.spider import load_spider

    data = load_spider(spider_dir, "dev", questions_file=questions)
    names = list(data.schemas)
    position = {db_id: i for i, db_id in enumerate(names)}
    missing = sorted({r["domain"] for r in data.records} - set(data.db_paths))
    if missing:
        raise CorpusError(f"Spider databases {', '.join(missing[:3])} have no .sqlite file under "
                          f"{Path(spider_dir) / 'database'}: questions on them cannot be executed")
    qs = [BenchmarkQuestion(id=r["id"], db_id=r["domain"], question=r["sql_prompt"], gold=r["sql"],
                            sql_complexity=r["sql_complexity"]) for r in data.records]
    return Benchmark(name=f"spider:{Path(questions).name if questions else 'dev.json'}", questions=qs,
                     schemas=[data.schemas[n] for n in names], schema_names=names,
                     schema_ids=[position[q.db_id] for q in qs], db_paths=dict(data.db_paths))


def load_gretel_benchmark(records: Sequence[dict], name: str = "gretel",
                          corpus_records: Sequence[dict] = ()) -> Benchmark:
    """A benchmark from gretel-format records; ``corpus_records`` add their schemas to the retrieval corpus.

    Args:
        records: the questions (``sql_prompt``, ``sql``, ``sql_context``, ``domain``, ``sql_complexity``).
        name: a label for reports.
        corpus_records: more records whose schemas join the corpus (e.g. the training side), so retrieval
            searches every schema the production index holds.

    Returns:
        A :class:`Benchmark`; each question's database is built in memory from its own ``sql_context``.
    """
    from coderag.corpus import dedupe_schemas

    everything = list(corpus_records) + list(records)
    schemas = dedupe_schemas(everything)
    offset = len(corpus_records)
    qs = [BenchmarkQuestion(id=str(r.get("id", i)), db_id=str(r.get("domain", "")), question=str(r["sql_prompt"]),
                            gold=str(r["sql"]), sql_complexity=str(r.get("sql_complexity", "")),
                            sql_context=str(r["sql_context"]), index=i) for i, r in enumerate(records)]
    return Benchmark(name=name, questions=qs, schemas=list(schemas.snippets),
                     schema_names=[str(d) for d in schemas.snippet_domains],
                     schema_ids=[schemas.record_to_snippet[offset + i] for i in range(len(records))])


def read_predictions(path: str | Path, n: int) -> list[str]:
    """The official evaluator's ``--pred`` file: one query per line, in question order (first ``n`` used).

    A line may carry a tab and a db_id after the query (as the official gold files do); it is dropped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read predictions file {path.name} ({exc}): one SQL query per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < n:
        raise ConfigError(f"predictions file {path.name} has {len(lines)} lines but {n} questions are scored: "
                          "one query per question, in order (use --limit to score fewer)")
    return [line.split("\t")[0].strip() for line in lines[:n]]


@dataclass
class QuestionResult:
    """One scored question (a line of ``per_question.jsonl``)."""

    index: int
    id: str
    db_id: str
    question: str
    gold: str
    pred: str
    ex: bool
    em: bool
    em_semantic: bool
    hardness: str
    sql_complexity: str
    status: str  # ok | mismatch | parse_failure | guard_refused | execution_failure | generation_failure | gold_failure
    reason: str
    schemas: str
    gold_rank: int | None = None
    top1_score: float | None = None
    retrieved: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # questions of the examples in the prompt
    vote: dict[str, Any] | None = None  # n_candidates > 1: candidates, votes, chosen (Vote.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchmarkResult:
    """Per-question rows and the summary of one run (one schemas mode)."""

    rows: list[QuestionResult]
    summary: dict[str, Any]


def _breakdown(rows: Sequence[QuestionResult], key: Callable[[QuestionResult], str],
               order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[QuestionResult]] = defaultdict(list)
    for row in rows:
        groups[key(row) or "unknown"].append(row)
    names = [n for n in order if n in groups] + sorted(n for n in groups if n not in order)
    return {name: {"n": len(groups[name]), "ex": sum(r.ex for r in groups[name]) / len(groups[name]),
                   "em": sum(r.em for r in groups[name]) / len(groups[name]),
                   "em_semantic": sum(r.em_semantic for r in groups[name]) / len(groups[name])} for name in names}


def summarize(rows: Sequence[QuestionResult], **extra: Any) -> dict[str, Any]:
    """EX / EM rates, status counts and the breakdowns by hardness and ``sql_complexity``."""
    n = len(rows)
    statuses = Counter(r.status for r in rows)
    summary: dict[str, Any] = {
        "n": n,
        "ex": sum(r.ex for r in rows) / n if n else 0.0,
        "em": sum(r.em for r in rows) / n if n else 0.0,
        "em_semantic": sum(r.em_semantic for r in rows) / n if n else 0.0,
        "statuses": dict(statuses.most_common()),
        "by_hardness": _breakdown(rows, lambda r: r.hardness, HARDNESS_LEVELS),
        "by_sql_complexity": _breakdown(rows, lambda r: r.sql_complexity),
    }
    summary.update(extra)
    return summary


def sql_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The flat EX/EM figures of a summary the reports print: n, em, ex, em_semantic and failure counts."""
    statuses = summary.get("statuses", {})
    return {"n": summary["n"], "em": summary["em"], "ex": summary["ex"], "em_semantic": summary["em_semantic"],
            "parse_failures": statuses.get("parse_failure", 0), "guard_refusals": statuses.get("guard_refused", 0),
            "execution_failures": statuses.get("execution_failure", 0)}


def _retrieval(benchmark: Benchmark, encoder_model, k: int, show_progress: bool | None, index=None,
               lexical_weight: float | None = None):
    """(ranked schema ids, top scores, retrieval metrics) of every question over all the benchmark's schemas.

    ``index`` (a built :class:`~coderag.retrieval.index.SchemaIndex` over exactly the benchmark's schemas,
    in order) is searched instead of building one; a built one ranks with ``lexical_weight`` (default: the
    index default, :data:`~coderag.retrieval.lexical.DEFAULT_LEXICAL_WEIGHT`).
    """
    from coderag.evaluation.ranking import retrieval_metrics
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.search import retrieve_schemas

    if index is None:
        weight = {} if lexical_weight is None else {"lexical_weight": lexical_weight}
        index = SchemaIndex.build(encoder_model, benchmark.schemas, domains=benchmark.schema_names,
                                  show_progress=show_progress, **weight)
    elif list(index.snippets) != list(benchmark.schemas):
        raise ConfigError("the given index does not hold exactly the benchmark's schemas: let evaluation build one")
    depth = min(max(k, 10), index.count)
    hits = retrieve_schemas(index, encoder_model, [q.question for q in benchmark.questions], k=depth)
    ranked = [[h.snippet_id for h in row] for row in hits]
    scores = [[h.score for h in row] for row in hits]
    metrics = retrieval_metrics(ranked, benchmark.schema_ids)
    return ranked, scores, {key: round(value, 4) for key, value in metrics.items()}


def _prompt_schemas(benchmark: Benchmark, mode: str, ranked: list[list[int]] | None, k: int) -> list[list[str]]:
    if mode == "none":
        return [[] for _ in benchmark.questions]
    if mode == "oracle":
        return [[benchmark.schemas[i]] for i in benchmark.schema_ids]
    assert ranked is not None
    return [[benchmark.schemas[i] for i in row[:k]] for row in ranked]


def _replies(generator, prompts: list[list[dict[str, str]]], max_tokens: int) -> list[str | Exception]:
    """One reply per prompt: batched when the generator batches (a failure fails all), else one call
    each, where a :class:`GenerationError` scores that question 0 and an unreachable endpoint
    (:class:`GeneratorUnavailable`) stops the evaluation."""
    from concurrent.futures import ThreadPoolExecutor

    from coderag.generation.llm import OpenAIChatGenerator, complete_many

    if callable(getattr(generator, "complete_batch", None)):
        return list(complete_many(generator, prompts, max_tokens=max_tokens))

    def one(messages):
        try:
            return generator.complete(messages, max_tokens=max_tokens, temperature=0.0)
        except GeneratorUnavailable:
            raise
        except GenerationError as exc:
            return exc

    if isinstance(generator, OpenAIChatGenerator) and len(prompts) > 1:
        with ThreadPoolExecutor(max_workers=4) as pool:  # network-bound: a few requests in flight
            return list(pool.map(one, prompts))
    return [one(messages) for messages in prompts]


def _sampled(generator, prompts: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float
             ) -> list[list | Exception]:
    """``n`` sampled replies per prompt (:func:`~coderag.generation.voting.sample_many`): all in batches when
    the generator batches (a failure fails all), else per prompt, where a :class:`GenerationError` scores
    that question 0 and :class:`GeneratorUnavailable` stops the evaluation."""
    from coderag.generation.voting import sample_many

    if callable(getattr(generator, "sample_batch", None)) or callable(getattr(generator, "complete_batch", None)):
        return list(sample_many(generator, prompts, n, max_tokens=max_tokens, temperature=temperature))
    out: list[list | Exception] = []
    for messages in prompts:
        try:
            out.append(sample_many(generator, [messages], n, max_tokens=max_tokens, temperature=temperature)[0])
        except GeneratorUnavailable:
            raise
        except GenerationError as exc:
            out.append(exc)
    return out


def _vote_on(benchmark: Benchmark, index: int, replies: list, timeout_s: float, temperature: float):
    """The vote among ``replies`` for question ``index``, each allowed candidate run on the question's database."""
    from coderag.generation.voting import prepare_candidates, run_candidates, vote
    from coderag.sql.execution import open_sqlite_readonly, run_query

    question = benchmark.questions[index]
    dialect = benchmark.dialect
    candidates = prepare_candidates(replies, dialect, transpile=benchmark.transpile)
    if benchmark.server is not None:
        database = benchmark.server(question.db_id)
        run_candidates(candidates, lambda sql: database.run_query(sql, timeout_s=timeout_s))
    else:
        conn = benchmark.connect(question)
        conn = open_sqlite_readonly(conn) if isinstance(conn, Path) else conn
        try:
            run_candidates(candidates, lambda sql: run_query(conn, sql, timeout_s=timeout_s))
        finally:
            conn.close()
    return vote(candidates, dialect=dialect, temperature=temperature)


def score_prediction(benchmark: Benchmark, index: int, pred: str, *, ex_mode: str = "test-suite",
                     keep_distinct: bool = False, timeout_s: float = 5.0) -> tuple[bool, bool, bool, str, str]:
    """(ex, em, em_semantic, status, reason) of one predicted query for question ``index``."""
    from coderag.evaluation.exact_match import normalized_em, semantic_em
    from coderag.evaluation.execution_match import execution_match
    from coderag.sql.guard import sql_guard
    from coderag.sql.text import SqlParseError, parse_sql

    question = benchmark.questions[index]
    if not pred.strip():
        return False, False, False, "parse_failure", "no SQL in the reply"
    gold, dialect = question.gold, "sqlite"
    if benchmark.server is not None:
        from coderag.evaluation.dialects import gold_for_dialect, transpile_prediction

        database = benchmark.server(question.db_id)
        dialect = database.dialect
        try:
            gold = gold_for_dialect(question.gold, dialect, benchmark.sqlglot_schema(question))
        except Exception as exc:  # noqa: BLE001 - a dialect gap of the gold query, reported
            return False, False, False, "gold_failure", f"gold SQL does not transpile to {dialect}: {exc}"
        if benchmark.transpile:
            pred, error = transpile_prediction(pred, dialect, benchmark.sqlglot_schema(question))
            if error:
                return False, False, False, "parse_failure", error
    try:
        parse_sql(pred, dialect)
    except SqlParseError as exc:
        return False, False, False, "parse_failure", str(exc)
    em = normalized_em(pred, gold, dialect)
    em_semantic = em or semantic_em(pred, gold, benchmark.sqlglot_schema(question), dialect)
    verdict = sql_guard(pred, dialect)
    if not verdict.allowed:
        return False, em, em_semantic, "guard_refused", verdict.reason
    database = benchmark.server(question.db_id) if benchmark.server is not None else benchmark.connect(question)
    try:
        outcome = execution_match(database, pred, gold, mode=ex_mode, keep_distinct=keep_distinct,
                                  timeout_s=timeout_s, dialect=dialect)
    finally:
        if isinstance(database, sqlite3.Connection):
            database.close()
    if outcome.match:
        return True, em, em_semantic, "ok", outcome.reason
    if outcome.gold_error:
        return False, em, em_semantic, "gold_failure", outcome.reason
    if outcome.pred_error:
        return False, em, em_semantic, "execution_failure", outcome.reason
    return False, em, em_semantic, "mismatch", outcome.reason


def _examples_for(benchmark: Benchmark, example_index, encoder_model, k: int) -> list[list]:
    """The ``k`` retrieved examples of each question ([] each for ``k`` = 0); refuses an example index
    that holds a benchmark question (it must come from the training split only)."""
    if not k:  # before the import: scoring without examples needs no FAISS
        return [[] for _ in benchmark.questions]
    from coderag.retrieval.examples import retrieve_examples

    if example_index is None or encoder_model is None:
        raise ConfigError("examples in the prompt need an example index of the training split and the encoder: "
                          "build one with `coderag index build --examples K`, or use --examples 0")
    found = example_index if hasattr(example_index, "questions") else getattr(example_index, "examples", None)
    # Generated benchmarks share the corpus's domains: none of theirs may have given an example.
    asked = {q.db_id for q in benchmark.questions if q.sql_context is not None}
    leaked = asked & set(getattr(found, "domains", []))
    if leaked:
        raise ConfigError(f"the example index holds examples of {len(leaked)} of the benchmark's domains (e.g. "
                          f"{sorted(leaked)[0]!r}): build it from the training split only")
    return retrieve_examples(example_index, encoder_model, [q.question for q in benchmark.questions], k)


def evaluate_benchmark(benchmark: Benchmark, *, generator=None, encoder_model=None,
                       predictions: Sequence[str] | None = None, schemas: str = "retrieved", k: int = 3,
                       ex_mode: str = "test-suite", keep_distinct: bool = False, max_new_tokens: int = 128,
                       timeout_s: float = 5.0, show_progress: bool | None = None,
                       retrieval: tuple | None = None,
                       prompt_schemas: Sequence[Sequence[str]] | None = None, n_candidates: int = 1,
                       temperature: float = 0.7, example_index=None, examples: int = 0,
                       prompt_examples: Sequence[Sequence[Any]] | None = None) -> BenchmarkResult:
    """Score the system (or given ``predictions``) on every question of ``benchmark``.

    Args:
        benchmark: the questions, schemas and databases.
        generator: the SQL generator (anything with ``complete``; batched when it has ``complete_batch``).
        encoder_model: the retrieval encoder (needed for ``schemas="retrieved"``; with it, retrieval metrics
            over all schemas are reported in every mode).
        predictions: SQL per question, scored instead of generating (then ``generator`` is not used).
        schemas: ``retrieved`` (top-``k``), ``oracle`` (the gold schema) or ``none``.
        k: schemas put in the prompt.
        ex_mode: ``test-suite`` (the official evaluator's semantics) or ``strict``.
        keep_distinct: keep DISTINCT in test-suite mode.
        max_new_tokens: generation budget per question.
        timeout_s: time limit per query run.
        show_progress: progress bars (None: tqdm decides by terminal).
        retrieval: precomputed ``(ranked, scores, metrics)`` to reuse across modes.
        prompt_schemas: the snippets of each question's prompt, chosen by the caller (overrides ``schemas``).
        n_candidates: SQL candidates sampled per question and voted on by execution (1: one greedy reply);
            each row records its vote; a question none of whose candidates survives is answered with the
            greedy reply (its vote says ``"fallback": "greedy"``).
        temperature: sampling temperature of the candidates.
        example_index: an :class:`~coderag.retrieval.examples.ExampleIndex` of the training split (or a
            schema index holding one), searched with ``encoder_model``.
        examples: examples retrieved into each prompt (0: none); none of them may be a benchmark question.
        prompt_examples: the examples of each question's prompt, chosen by the caller (``(question, sql)``
            pairs or :class:`~coderag.retrieval.examples.Example`; overrides ``example_index``/``examples``),
            e.g. retrieved ahead on another machine.

    Returns:
        A :class:`BenchmarkResult` with one :class:`QuestionResult` per question, in order, and the summary.

    Example:
        >>> bench = load_spider_benchmark(spider_dir).limit(20)                         # doctest: +SKIP
        >>> gold = [q.gold for q in bench.questions]                                    # doctest: +SKIP
        >>> evaluate_benchmark(bench, predictions=gold, schemas="oracle").summary["ex"] # doctest: +SKIP
        1.0
    """
    from coderag.generation.prompting import _example_pair, build_messages
    from coderag.sql.text import extract_sql

    if schemas not in SCHEMA_MODES:
        raise ConfigError(f"--schemas {schemas!r} is unknown: use one of {', '.join(SCHEMA_MODES)}")
    if not benchmark.questions:
        raise ConfigError("the benchmark holds no questions")
    n = len(benchmark.questions)
    started = time.perf_counter()
    ranked = scores = None
    retrieval_summary: dict[str, Any] = {}
    if retrieval is not None:
        ranked, scores, retrieval_summary = retrieval
    elif encoder_model is not None:
        ranked, scores, retrieval_summary = _retrieval(benchmark, encoder_model, k, show_progress)
    elif schemas == "retrieved" and predictions is None and prompt_schemas is None:
        raise ConfigError("retrieved schemas need an encoder: pass --encoder or use --schemas oracle|none")
    t_retrieval = time.perf_counter() - started

    status_override: dict[int, tuple[str, str]] = {}
    votes: dict[int, dict[str, Any]] = {}
    shown: dict[int, list[str]] = {}
    if predictions is not None:
        if len(predictions) != n:
            raise ConfigError(f"{len(predictions)} predictions for {n} questions: one per question, in order")
        preds = [str(p) for p in predictions]
        mode_label = "predictions"
    else:
        if generator is None:
            raise ConfigError("scoring generated SQL needs a generator (or --predictions FILE)")
        chosen = prompt_schemas if prompt_schemas is not None else _prompt_schemas(benchmark, schemas, ranked, k)
        if len(chosen) != n:
            raise ConfigError(f"{len(chosen)} schema lists for {n} questions")
        label = "SQLite" if benchmark.transpile else benchmark.dialect_label  # transpile: SQLite, then sqlglot
        if prompt_examples is not None:
            if len(prompt_examples) != n:
                raise ConfigError(f"{len(prompt_examples)} example lists for {n} questions")
            shots = [list(row) for row in prompt_examples]
            examples = max((len(row) for row in shots), default=0)
        else:
            shots = _examples_for(benchmark, example_index, encoder_model, examples)
        for i, row in enumerate(shots):
            shown[i] = [_example_pair(e)[0] for e in row]
        prompts = [build_messages(q.question, list(s), dialect=label, examples=e)
                   for q, s, e in zip(benchmark.questions, chosen, shots, strict=True)]
        preds = []
        if n_candidates > 1:
            for i, replies in enumerate(tqdm(_sampled(generator, prompts, n_candidates, max_new_tokens, temperature),
                                             desc="vote", unit="q", disable=show_progress if show_progress is None
                                             else not show_progress)):
                if isinstance(replies, Exception):
                    status_override[i] = ("generation_failure", str(replies))
                    preds.append("")
                    continue
                outcome = _vote_on(benchmark, i, replies, timeout_s, temperature)
                if outcome.chosen is None:
                    outcome.fallback = "greedy"
                    preds.append("")  # filled below with the greedy reply
                else:
                    # the chosen reply's own SQL: scoring transpiles it again when the benchmark transpiles
                    preds.append(extract_sql(outcome.candidates[outcome.chosen].reply))
                votes[i] = outcome.to_dict()
            # No candidate survived: answer the greedy reply (likelier to run than a sample), all in one batch.
            fallback = [i for i, row in sorted(votes.items()) if row["fallback"]]
            for i, reply in zip(fallback, _replies(generator, [prompts[i] for i in fallback], max_new_tokens)
                                if fallback else [], strict=True):
                if isinstance(reply, Exception):
                    status_override[i] = ("generation_failure", str(reply))
                else:
                    preds[i] = extract_sql(reply)
        else:
            for i, reply in enumerate(_replies(generator, prompts, max_new_tokens)):
                if isinstance(reply, Exception):
                    status_override[i] = ("generation_failure", str(reply))
                    preds.append("")
                else:
                    preds.append(extract_sql(reply))
        mode_label = schemas if prompt_schemas is None else "given"
    t_generation = time.perf_counter() - started - t_retrieval

    from coderag.evaluation.hardness import hardness

    rows: list[QuestionResult] = []
    for i, (question, pred) in enumerate(tqdm(list(zip(benchmark.questions, preds, strict=True)), desc="score",
                                              unit="q", disable=show_progress if show_progress is None else
                                              not show_progress)):
        if i in status_override:
            ex = em = em_semantic = False
            status, reason = status_override[i]
        else:
            ex, em, em_semantic, status, reason = score_prediction(benchmark, i, pred, ex_mode=ex_mode,
                                                                   keep_distinct=keep_distinct, timeout_s=timeout_s)
        gold_rank = top1 = None
        retrieved: list[str] = []
        if ranked is not None:
            row_ids = ranked[i]
            gold_id = benchmark.schema_ids[i]
            gold_rank = row_ids.index(gold_id) + 1 if gold_id in row_ids else None
            top1 = round(float(scores[i][0]), 4) if scores[i] else None
            retrieved = [benchmark.schema_names[j] for j in row_ids[:k]]
        rows.append(QuestionResult(index=i, id=question.id, db_id=question.db_id, question=question.question,
                                   gold=question.gold, pred=pred, ex=ex, em=em, em_semantic=em_semantic,
                                   hardness=hardness(question.gold), sql_complexity=question.sql_complexity,
                                   status=status, reason=reason, schemas=mode_label, gold_rank=gold_rank,
                                   top1_score=top1, retrieved=retrieved, examples=shown.get(i, []),
                                   vote=votes.get(i)))
    t_scoring = time.perf_counter() - started - t_retrieval - t_generation
    summary = summarize(rows, benchmark=benchmark.name, schemas=mode_label, k=k, ex_mode=ex_mode,
                        dialect=benchmark.dialect,
                        keep_distinct=keep_distinct, retrieval=retrieval_summary,
                        n_candidates=n_candidates if predictions is None else 1,
                        examples=examples if predictions is None else 0,
                        timings_s={"retrieval": round(t_retrieval, 2), "generation": round(t_generation, 2),
                                   "scoring": round(t_scoring, 2)})
    log.info("benchmark %s schemas=%s n=%d ex=%.3f em=%.3f", benchmark.name, mode_label, n, summary["ex"],
             summary["em"])
    return BenchmarkResult(rows=rows, summary=summary)


def evaluate_modes(benchmark: Benchmark, modes: Sequence[str], *, encoder_model=None, index=None,
                   lexical_weight: float | None = None, **kwargs: Any) -> dict[str, BenchmarkResult]:
    """:func:`evaluate_benchmark` once per schemas mode, sharing one retrieval pass (over ``index`` if given).

    Args:
        benchmark: the questions.
        modes: schemas modes, e.g. ``["retrieved", "oracle", "none"]``; the first is the primary.
        encoder_model: the retrieval encoder.
        index: a built index over exactly ``benchmark.schemas`` (else one is built).
        lexical_weight: the hybrid weight of the index built here (default: the index default).
        **kwargs: passed to :func:`evaluate_benchmark`.

    Returns:
        Mode -> :class:`BenchmarkResult`, in ``modes`` order.
    """
    retrieval = _retrieval(benchmark, encoder_model, kwargs.get("k", 3), kwargs.get("show_progress"), index,
                           lexical_weight) if encoder_model is not None else None
    return {mode: evaluate_benchmark(benchmark, encoder_model=encoder_model, schemas=mode, retrieval=retrieval,
                                     **kwargs) for mode in modes}

"""Question -> SQL: retrieve schemas (and examples), prompt the LLM, extract, guard, optionally execute,
vote among sampled candidates, and repair.

This is the core of the RAG endpoint and of ``coderag ask``; both are thin shells around
:func:`answer_question` / :func:`answer_from_schemas`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from coderag.generation.prompting import build_messages
from coderag.generation.voting import (
    DEFAULT_SAMPLING_TEMPERATURE,
    check_n_candidates,
    prepare_candidates,
    prepare_sql,
    run_candidates,
    sample_replies,
    vote,
)
from coderag.retrieval.examples import Example, retrieve_examples
from coderag.retrieval.search import RetrievedSchema, retrieve_schemas, validate_question
from coderag.sql.databases import Database
from coderag.sql.execution import open_sqlite_readonly, run_query, sqlite_from_context


@dataclass
class Answer:
    """The outcome of one question: SQL (empty when none could be extracted), guard verdict, evidence."""

    question: str
    sql: str
    allowed: bool
    guard_reason: str
    statement_type: str = ""
    snippets: list[dict[str, Any]] = field(default_factory=list)
    reply: str = ""
    rows: list[list[Any]] | None = None
    execution_error: str | None = None
    repaired: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    dialect: str = "sqlite"
    examples: list[dict[str, Any]] = field(default_factory=list)  # the retrieved examples in the prompt
    vote: dict[str, Any] | None = None  # with n_candidates > 1: candidates, votes, chosen (Vote.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _repair_messages(messages: list[dict[str, str]], sql: str, error: str, label: str = "SQLite"
                     ) -> list[dict[str, str]]:
    """The original conversation plus the failed SQL and the database's error, asking for a fix."""
    error = error if error.startswith(f"{label} error") else f"{label} error: {error}"
    return [
        *messages,
        {"role": "assistant", "content": f"```sql\n{sql}\n```"},
        {"role": "user", "content": f"{error}\nReturn the corrected query in a ```sql block."},
    ]


def _run(connect, sql: str, timeout_s: float) -> list[list[Any]]:
    conn = connect()
    try:
        return [list(r) for r in run_query(conn, sql, timeout_s=timeout_s)]
    finally:
        conn.close()


def _execute(connect, run_sql, sql: str, timeout_s: float) -> list[list[Any]]:
    if run_sql is not None:
        return run_sql(sql)
    if isinstance(connect, Database):
        return [list(r) for r in connect.run_query(sql, timeout_s=timeout_s)]
    return _run(connect, sql, timeout_s)


def answer_from_schemas(question: str, schemas: list[str], generator, *, sql_context: str | None = None,
                        db_path: str | None = None, database: Database | None = None, transpile: bool = False,
                        repair: bool = True, max_tokens: int = 128, timeout_s: float = 5.0,
                        run_sql: Callable[[str], list[list[Any]]] | None = None, n_candidates: int = 1,
                        temperature: float = DEFAULT_SAMPLING_TEMPERATURE,
                        examples: Sequence[Example] = ()) -> Answer:
    """Generate, extract and guard SQL for ``question`` given retrieved ``schemas``.

    With ``sql_context`` (CREATE TABLE + INSERT statements) the guarded SQL is executed on an in-memory
    SQLite database built from it; with ``db_path`` on that SQLite file, opened read-only; with ``database``
    (any :class:`~coderag.sql.databases.Database`: SQLite, PostgreSQL, MariaDB) read-only at that database,
    and then the prompt names its dialect and the guard parses in it. ``run_sql`` replaces the first two
    (e.g. a :class:`~coderag.sql.sandbox.SandboxSession`'s ``run``, which builds a context once and runs
    every query in a worker process under hard limits). On an execution error the LLM is asked once to
    repair its query (the repaired SQL goes through the guard again).

    With ``n_candidates`` > 1, that many replies are sampled at ``temperature`` (in one call when the
    generator can) and the answer is the winner of :func:`~coderag.generation.voting.vote`: candidates that
    do not parse, are refused or fail to execute are dropped, the result most survivors share wins
    (``answer.vote`` records every candidate); when none survives, the single greedy reply is generated
    and answered as with ``n_candidates=1`` (executed, repaired as above; ``answer.vote["fallback"]`` is
    ``"greedy"``): a sampled candidate is likelier to be broken than the greedy reply.
    ``n_candidates=1`` is the single greedy reply.
    Generator failures propagate (``GenerationError`` / ``GeneratorUnavailable``).

    Args:
        question: the question.
        schemas: schema snippets for the prompt.
        generator: the SQL generator.
        sql_context: a context to build an in-memory database from (exclusive with ``db_path``).
        db_path: a SQLite file to run the SQL on, read-only.
        database: a database to run the SQL on, read-only (exclusive with the two above).
        transpile: ask the model for SQLite and rewrite its SQL into the database's dialect before the guard.
        repair: ask once for a fix when execution fails.
        max_tokens: generation budget.
        timeout_s: time limit of one query run.
        run_sql: executes one guarded query and returns its rows (exclusive with the two above).
        n_candidates: replies sampled and voted on (1: one greedy reply).
        temperature: sampling temperature of the candidates (n_candidates > 1).
        examples: retrieved question -> SQL examples for the prompt.

    Returns:
        An :class:`Answer` (``rows`` set when the SQL ran).

    Raises:
        ValueError: more than one of ``sql_context``, ``db_path``, ``database`` and ``run_sql`` is given.

    Example:
        >>> answer = answer_from_schemas("How many singers?", ["CREATE TABLE singer (id INT);"],
        ...                              generator, sql_context=context)  # doctest: +SKIP
        >>> answer.sql, answer.rows  # doctest: +SKIP
        ('SELECT COUNT(*) FROM singer', [[6]])
    """
    if sum(x is not None for x in (sql_context, db_path, database, run_sql)) > 1:
        raise ValueError("pass at most one of sql_context, db_path, database and run_sql")
    connect = None
    dialect, label = "sqlite", "SQLite"
    if run_sql is not None:
        connect = run_sql
    elif sql_context is not None:
        connect = lambda: sqlite_from_context(sql_context)  # noqa: E731
    elif db_path is not None:
        connect = lambda: open_sqlite_readonly(db_path)  # noqa: E731
    elif database is not None:
        dialect, label = database.dialect, database.label
        connect = database
    timings: dict[str, float] = {}
    # With transpile the model is asked for SQLite (what small models write best) and sqlglot converts it.
    check_n_candidates(n_candidates)
    messages = build_messages(question, schemas, dialect="SQLite" if transpile else label, examples=examples)
    shown = [e.to_dict() if isinstance(e, Example) else {"question": e[0], "sql": e[1]} for e in examples]
    answer = None
    voted: dict[str, Any] | None = None
    if n_candidates > 1:
        answer, voted = _voted_answer(question, messages, generator, n_candidates, temperature, connect, run_sql,
                                      dialect, transpile, max_tokens, timeout_s, timings)
    if answer is not None:
        answer.examples = shown
    else:
        t0 = time.perf_counter()
        reply = generator.complete(messages, max_tokens=max_tokens, temperature=0.0)
        # with a vote before it, "generate" and "execute" already timed the sampled candidates
        timings["generate_greedy" if voted is not None else "generate"] = (time.perf_counter() - t0) * 1000
        sql, verdict = prepare_sql(reply, dialect, transpile)
        answer = Answer(question=question, sql=sql, allowed=verdict.allowed, guard_reason=verdict.reason,
                        statement_type=verdict.statement_type, reply=reply, timings_ms=timings, dialect=dialect,
                        examples=shown, vote=voted)
        if not verdict.allowed or connect is None:
            return answer
        t0 = time.perf_counter()
        try:
            answer.rows = _execute(connect, run_sql, sql, timeout_s)
        except Exception as exc:  # noqa: BLE001 - any database failure is reported and may be repaired
            answer.execution_error = str(exc)
        timings["execute_greedy" if voted is not None else "execute"] = (time.perf_counter() - t0) * 1000
    if answer.execution_error and repair:
        sql = answer.sql
        t0 = time.perf_counter()
        reply2 = generator.complete(_repair_messages(messages, sql, answer.execution_error, label),
                                    max_tokens=max_tokens, temperature=0.0)
        timings["repair"] = (time.perf_counter() - t0) * 1000
        sql2, verdict2 = prepare_sql(reply2, dialect, transpile)
        answer.repaired = True
        answer.reply, answer.sql = reply2, sql2
        answer.allowed, answer.guard_reason = verdict2.allowed, verdict2.reason
        answer.statement_type = verdict2.statement_type
        answer.rows, answer.execution_error = None, None
        if verdict2.allowed:
            t0 = time.perf_counter()
            try:
                answer.rows = _execute(connect, run_sql, sql2, timeout_s)
            except Exception as exc:  # noqa: BLE001
                answer.execution_error = str(exc)
            timings["execute_repaired"] = (time.perf_counter() - t0) * 1000
    return answer


def _voted_answer(question: str, messages, generator, n: int, temperature: float, connect, run_sql, dialect: str,
                  transpile: bool, max_tokens: int, timeout_s: float, timings: dict[str, float]
                  ) -> tuple[Answer | None, dict[str, Any]]:
    """Sample ``n`` candidates, execute the allowed ones (when there is a database) and answer the vote's winner.

    Returns ``(answer, vote record)``; the answer is None when no candidate survived (the record then says
    ``"fallback": "greedy"``: the caller answers the greedy reply)."""
    t0 = time.perf_counter()
    replies = sample_replies(generator, messages, n, max_tokens=max_tokens, temperature=temperature)
    timings["generate"] = (time.perf_counter() - t0) * 1000
    candidates = prepare_candidates(replies, dialect, transpile)
    if connect is not None:
        t0 = time.perf_counter()
        run_candidates(candidates, lambda sql: _execute(connect, run_sql, sql, timeout_s))
        timings["execute"] = (time.perf_counter() - t0) * 1000
    result = vote(candidates, dialect=dialect, temperature=temperature)
    if result.chosen is None:
        result.fallback = "greedy"
        return None, result.to_dict()
    chosen = candidates[result.chosen]
    answer = Answer(question=question, sql=chosen.sql, allowed=True, guard_reason=chosen.guard_reason,
                    statement_type=chosen.statement_type, reply=chosen.reply, timings_ms=timings, dialect=dialect,
                    vote=result.to_dict())
    if chosen.status == "ok":
        answer.rows = chosen.rows
    return answer, answer.vote


def answer_question(question: str, *, index, encoder_model, generator, k: int = 3,
                    min_score: float | None = None, sql_context: str | None = None, db_path: str | None = None,
                    database: Database | None = None, transpile: bool = False, repair: bool = True,
                    max_tokens: int = 128, n_candidates: int = 1,
                    temperature: float = DEFAULT_SAMPLING_TEMPERATURE, examples: int = 0) -> Answer:
    """Retrieve the top-``k`` schemas (and ``examples`` training examples) for ``question`` and answer it
    with :func:`answer_from_schemas`.

    Args:
        question: the user's question (validated with :func:`~coderag.retrieval.search.validate_question`).
        index: the :class:`~coderag.retrieval.index.SchemaIndex` to retrieve from.
        encoder_model: the encoder the index was built with.
        generator: the SQL generator (``complete(messages, max_tokens=, temperature=)``).
        k: schemas to retrieve.
        min_score: optional cosine floor for retrieved schemas.
        sql_context: a context to execute the SQL on (exclusive with ``db_path``).
        db_path: a SQLite file to execute the SQL on, read-only.
        database: a database (SQLite, PostgreSQL, MariaDB) to execute the SQL on, read-only.
        transpile: rewrite the generated SQL from SQLite into the database's dialect first.
        repair: ask once for a fix when execution fails.
        max_tokens: generation budget.
        n_candidates: candidates sampled and voted on (1: one greedy reply).
        temperature: sampling temperature of the candidates.
        examples: question -> SQL examples retrieved from the index's example index into the prompt (0: none).

    Returns:
        An :class:`Answer` whose ``snippets`` are the retrieved schemas.

    Raises:
        QuestionError: the question is invalid.
        ConfigError: ``examples`` > 0 and the index holds no examples.
        SchemaIndexError: the encoder does not match the index.

    Example:
        >>> answer_question("How many singers?", index=index, encoder_model=model, generator=gen).sql  # doctest: +SKIP
        'SELECT COUNT(*) FROM singer'
    """
    question = validate_question(question)
    t0 = time.perf_counter()
    hits: list[RetrievedSchema] = retrieve_schemas(index, encoder_model, [question], k=k, min_score=min_score)[0]
    shots = retrieve_examples(index, encoder_model, [question], examples)[0]
    retrieve_ms = (time.perf_counter() - t0) * 1000
    answer = answer_from_schemas(question, [h.text for h in hits], generator, sql_context=sql_context,
                                 db_path=db_path, database=database, transpile=transpile, repair=repair,
                                 max_tokens=max_tokens, n_candidates=n_candidates, temperature=temperature,
                                 examples=shots)
    answer.snippets = [h.to_dict() for h in hits]
    answer.timings_ms = {"retrieve": retrieve_ms, **answer.timings_ms}
    return answer

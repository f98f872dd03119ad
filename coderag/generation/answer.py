"""Question -> SQL: retrieve schemas, prompt the LLM, extract, guard, optionally execute and repair.

This is the core of the RAG endpoint and of ``coderag ask``; both are thin shells around
:func:`answer_question` / :func:`answer_from_schemas`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from coderag.generation.prompting import build_messages
from coderag.retrieval.search import RetrievedSchema, retrieve_schemas, validate_question
from coderag.sql.databases import Database, transpile_sql
from coderag.sql.execution import SqlExecutionError, open_sqlite_readonly, run_query, sqlite_from_context
from coderag.sql.guard import GuardVerdict, sql_guard
from coderag.sql.text import extract_sql


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


def _prepare(reply: str, dialect: str, transpile: bool) -> tuple[str, GuardVerdict]:
    """The reply's SQL (transpiled from SQLite when asked) and the guard's verdict in ``dialect``."""
    sql = extract_sql(reply)
    if transpile and sql:
        try:
            sql = transpile_sql(sql, dialect)
        except SqlExecutionError as exc:
            return sql, GuardVerdict(False, f"refused: {exc}", "")
    return sql, sql_guard(sql, dialect)


def answer_from_schemas(question: str, schemas: list[str], generator, *, sql_context: str | None = None,
                        db_path: str | None = None, database: Database | None = None, transpile: bool = False,
                        repair: bool = True, max_tokens: int = 128, timeout_s: float = 5.0,
                        run_sql: Callable[[str], list[list[Any]]] | None = None) -> Answer:
    """Generate, extract and guard SQL for ``question`` given retrieved ``schemas``.

    With ``sql_context`` (CREATE TABLE + INSERT statements) the guarded SQL is executed on an in-memory
    SQLite database built from it; with ``db_path`` on that SQLite file, opened read-only; with ``database``
    (any :class:`~coderag.sql.databases.Database`: SQLite, PostgreSQL, MariaDB) read-only at that database,
    and then the prompt names its dialect and the guard parses in it. ``run_sql`` replaces the first two
    (e.g. a :class:`~coderag.sql.sandbox.SandboxSession`'s ``run``, which builds a context once and runs
    every query in a worker process under hard limits). On an execution error the LLM is asked once to
    repair its query (the repaired SQL goes through the guard again).
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
    messages = build_messages(question, schemas, dialect="SQLite" if transpile else label)
    t0 = time.perf_counter()
    reply = generator.complete(messages, max_tokens=max_tokens, temperature=0.0)
    timings["generate"] = (time.perf_counter() - t0) * 1000
    sql, verdict = _prepare(reply, dialect, transpile)
    answer = Answer(question=question, sql=sql, allowed=verdict.allowed, guard_reason=verdict.reason,
                    statement_type=verdict.statement_type, reply=reply, timings_ms=timings, dialect=dialect)
    if not verdict.allowed or connect is None:
        return answer
    t0 = time.perf_counter()
    try:
        answer.rows = _execute(connect, run_sql, sql, timeout_s)
    except Exception as exc:  # noqa: BLE001 - any database failure is reported and may be repaired
        answer.execution_error = str(exc)
    timings["execute"] = (time.perf_counter() - t0) * 1000
    if answer.execution_error and repair:
        t0 = time.perf_counter()
        reply2 = generator.complete(_repair_messages(messages, sql, answer.execution_error, label),
                                    max_tokens=max_tokens, temperature=0.0)
        timings["repair"] = (time.perf_counter() - t0) * 1000
        sql2, verdict2 = _prepare(reply2, dialect, transpile)
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


def answer_question(question: str, *, index, encoder_model, generator, k: int = 3,
                    min_score: float | None = None, sql_context: str | None = None, db_path: str | None = None,
                    database: Database | None = None, transpile: bool = False, repair: bool = True,
                    max_tokens: int = 128) -> Answer:
    """Retrieve the top-``k`` schemas for ``question`` and answer it with :func:`answer_from_schemas`.

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

    Returns:
        An :class:`Answer` whose ``snippets`` are the retrieved schemas.

    Raises:
        QuestionError: the question is invalid.
        SchemaIndexError: the encoder does not match the index.

    Example:
        >>> answer_question("How many singers?", index=index, encoder_model=model, generator=gen).sql  # doctest: +SKIP
        'SELECT COUNT(*) FROM singer'
    """
    question = validate_question(question)
    t0 = time.perf_counter()
    hits: list[RetrievedSchema] = retrieve_schemas(index, encoder_model, [question], k=k, min_score=min_score)[0]
    retrieve_ms = (time.perf_counter() - t0) * 1000
    answer = answer_from_schemas(question, [h.text for h in hits], generator, sql_context=sql_context,
                                 db_path=db_path, database=database, transpile=transpile, repair=repair,
                                 max_tokens=max_tokens)
    answer.snippets = [h.to_dict() for h in hits]
    answer.timings_ms = {"retrieve": retrieve_ms, **answer.timings_ms}
    return answer

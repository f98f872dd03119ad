"""Exact Match of SQL: as normalised text, and after sqlglot's optimizer has put both queries in one form.

:func:`normalized_em` is the project's Exact Match (:func:`coderag.evaluation.sql_metrics.exact_match`,
built on :func:`coderag.sql.text.normalize_sql`): same text once spacing, case and quoting are normalised.

:func:`semantic_em` first rewrites both queries with ``sqlglot.optimizer.optimize`` (qualify every column
with its table, using the schema when one is given; canonical table aliases ``_0``, ``_1`` ... in order of
appearance; normalize, canonicalize, simplify, which also sorts the terms of AND / OR) and compares the
generated SQL. So ``SELECT name FROM singer`` equals ``SELECT T1.name FROM singer AS T1``, and
``WHERE a = 1 AND b = 2`` equals ``WHERE b = 2 AND a = 1``. Without a schema an unqualified column cannot
be tied to its table, so ``name`` and ``t.name`` stay different unless the query has them written the
same way. Where the optimizer fails on either query (an unknown column, SQL it cannot handle), the
result is that of :func:`normalized_em`.

The schema is sqlglot's mapping ``{table: {column: type}}``; :func:`schema_from_sql_context` builds it from
CREATE TABLE statements and :func:`schema_from_sqlite` from a SQLite file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.optimizer import optimize
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.canonicalize import canonicalize
from sqlglot.optimizer.normalize import normalize
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.simplify import simplify

from coderag.evaluation.sql_metrics import exact_match
from coderag.sql.execution import open_sqlite_readonly
from coderag.sql.text import SqlParseError, normalize_sql, parse_sql, split_statements

log = logging.getLogger(__name__)

Schema = dict[str, dict[str, str]]
# qualify first: every later rule needs qualified columns.
_RULES = (qualify, normalize, annotate_types, canonicalize, simplify)
_UNKNOWN_TYPE = "UNKNOWN"


def normalized_em(pred: str, gold: str, dialect: str = "sqlite") -> bool:
    """Exact Match on normalised SQL text (the project's EM metric).

    Args:
        pred: Predicted SQL.
        gold: Gold SQL.
        dialect: sqlglot dialect of both. For ``"sqlite"`` this is exactly
            :func:`coderag.evaluation.sql_metrics.exact_match`; other dialects compare
            :func:`~coderag.sql.text.normalize_sql` forms in that dialect.

    Returns:
        True when both normalise to the same non-empty text.

    Example:
        >>> normalized_em("select  NAME from Singer;", "SELECT name FROM singer")
        True
    """
    if dialect == "sqlite":
        return exact_match(pred, gold)
    pred_norm = normalize_sql(pred, dialect)
    return bool(pred_norm) and pred_norm == normalize_sql(gold, dialect)


def _known_columns(schema: Mapping[str, Mapping[str, str]]) -> set[str]:
    return {str(column).lower() for columns in schema.values() for column in columns}


def _double_quoted_strings_to_literals(tree: exp.Expression, columns: set[str]) -> exp.Expression:
    """SQLite reads ``"France"`` as a string when no column is called France; so do we, given the schema."""
    for column in list(tree.find_all(exp.Column)):
        identifier = column.this
        if (not column.table and isinstance(identifier, exp.Identifier) and identifier.quoted
                and identifier.name.lower() not in columns):
            column.replace(exp.Literal.string(identifier.name))
    return tree


def canonical_sql(sql: str, schema: Mapping[str, Mapping[str, str]] | None = None, dialect: str = "sqlite") -> str:
    """``sql`` rewritten by sqlglot's optimizer into the form :func:`semantic_em` compares.

    Args:
        sql: One SQL query.
        schema: ``{table: {column: type}}``; without it unqualified columns stay unqualified.
        dialect: sqlglot dialect to read and write.

    Returns:
        The optimised query, every identifier quoted.

    Raises:
        SqlParseError: ``sql`` does not parse. Errors of the optimizer (``sqlglot.errors.OptimizeError``
            and others) propagate.

    Example:
        >>> canonical_sql("SELECT T1.name FROM singer AS T1", {"singer": {"name": "TEXT"}})
        'SELECT "_0"."name" AS "name" FROM "singer" AS "_0"'
    """
    tree = parse_sql((sql or "").strip().rstrip(";"), dialect)
    if schema:
        tree = _double_quoted_strings_to_literals(tree, _known_columns(schema))
    optimized = optimize(tree, schema=dict(schema) if schema else None, dialect=dialect, rules=_RULES,
                         isolate_tables=False, canonicalize_table_aliases=True,
                         validate_qualify_columns=bool(schema))
    return optimized.sql(dialect=dialect, identify=True)


def semantic_em(pred: str, gold: str, schema: Mapping[str, Mapping[str, str]] | None = None,
                dialect: str = "sqlite") -> bool:
    """Exact Match after sqlglot's optimizer has rewritten both queries into one canonical form.

    Equates queries that differ only in table qualification (``name`` vs ``t.name``, given the schema),
    table aliases (``FROM singer`` vs ``FROM singer AS T1``), the order of AND / OR terms, and what
    simplification removes (``20 < age`` vs ``age > 20``). Falls back to :func:`normalized_em` when the
    optimizer fails on either query.

    Args:
        pred: Predicted SQL.
        gold: Gold SQL.
        schema: ``{table: {column: type}}`` (see :func:`schema_from_sql_context`,
            :func:`schema_from_sqlite`), or None.
        dialect: sqlglot dialect of both queries.

    Returns:
        True when both queries have the same canonical form.

    Example:
        >>> schema = {"singer": {"name": "TEXT", "age": "INT", "country": "TEXT"}}
        >>> semantic_em("SELECT name FROM singer WHERE age > 20 AND country = 'FR'",
        ...             "SELECT T1.name FROM singer AS T1 WHERE T1.country = 'FR' AND T1.age > 20", schema)
        True
    """
    if not (pred or "").strip() or not (gold or "").strip():
        return False
    if normalized_em(pred, gold, dialect):
        return True
    try:
        return canonical_sql(pred, schema, dialect) == canonical_sql(gold, schema, dialect)
    except Exception as exc:  # noqa: BLE001 - the optimizer raises many kinds of errors; EM falls back
        log.debug("semantic EM falls back to normalised EM: %s", exc)
        return False


def _type_name(declared: str | None, dialect: str) -> str:
    """A column type sqlglot can read (``UNKNOWN`` for none or an unreadable one: SQLite allows both)."""
    text = (declared or "").strip()
    if not text:
        return _UNKNOWN_TYPE
    try:
        return exp.DataType.build(text, dialect=dialect).sql(dialect=dialect)
    except (sqlglot.errors.SqlglotError, ValueError):
        return _UNKNOWN_TYPE


def schema_from_sql_context(sql_context: str, dialect: str = "sqlite") -> Schema:
    """sqlglot's schema mapping ``{table: {column: type}}`` from the CREATE TABLE statements of a context.

    Other statements (INSERT ...) are ignored, and so are statements that do not parse unless they are
    CREATE TABLE statements.

    Args:
        sql_context: SQL text holding CREATE TABLE (and possibly INSERT) statements.
        dialect: sqlglot dialect to parse it with.

    Returns:
        Tables in order of creation, each mapping its columns to their types as sqlglot writes them in
        ``dialect`` (``VARCHAR(20)`` -> ``TEXT(20)`` in SQLite; ``UNKNOWN`` when untyped).

    Raises:
        SqlParseError: A CREATE TABLE statement does not parse.

    Example:
        >>> schema_from_sql_context("CREATE TABLE singer (id INT, name TEXT); INSERT INTO singer VALUES (1, 'a');")
        {'singer': {'id': 'INTEGER', 'name': 'TEXT'}}
    """
    schema: Schema = {}
    for statement in split_statements(sql_context or ""):
        is_create = statement.lstrip().upper().startswith("CREATE")
        try:
            tree = parse_sql(statement, dialect)
        except SqlParseError as exc:
            if is_create:
                raise SqlParseError(f"a CREATE TABLE statement of the sql_context does not parse: {exc}") from exc
            continue
        if not (isinstance(tree, exp.Create) and tree.kind == "TABLE" and isinstance(tree.this, exp.Schema)):
            continue
        columns: dict[str, str] = {}
        for definition in tree.this.expressions:
            if isinstance(definition, exp.ColumnDef):
                kind = definition.args.get("kind")
                columns[definition.name] = _type_name(kind.sql(dialect=dialect) if kind else None, dialect)
            elif isinstance(definition, exp.Identifier):  # an untyped column: CREATE TABLE t (a, b)
                columns[definition.name] = _UNKNOWN_TYPE
        schema[tree.this.this.name] = columns
    return schema


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_from_sqlite(path: str | Path, dialect: str = "sqlite") -> Schema:
    """sqlglot's schema mapping ``{table: {column: type}}`` of a SQLite file (``PRAGMA table_info``).

    Args:
        path: The ``.sqlite`` file; it is opened read-only.
        dialect: sqlglot dialect the types are written in.

    Returns:
        Every table but SQLite's own (``sqlite_*``), mapping its columns to their declared types.

    Raises:
        SqlContextError: The file does not exist or cannot be opened.

    Example:
        >>> schema_from_sqlite("../shared/datasets/spider/database/concert_singer/concert_singer.sqlite")["stadium"]["Capacity"]  # doctest: +SKIP
        'INTEGER'
    """
    conn = open_sqlite_readonly(path)
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY rowid")]
        return {table: {column: _type_name(declared, dialect)
                        for _cid, column, declared, *_rest in conn.execute(f"PRAGMA table_info({_quote(table)})")}
                for table in tables}
    finally:
        conn.close()

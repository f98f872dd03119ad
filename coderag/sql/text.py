"""SQL as text: pull it out of an LLM reply, parse it with sqlglot, normalise it for Exact Match."""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp

from coderag.errors import CodeRAGError

# sqlglot logs a warning for every statement it falls back to parsing as a Command (PRAGMA-like text,
# REPLACE INTO, ...). Callers get a SqlParseError or a guard verdict instead, so the warning is noise.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


class SqlParseError(CodeRAGError):
    """SQL text is empty or sqlglot cannot parse it."""


# An info string (```sql) only counts when a newline follows it: in ```SELECT 1``` the word is code.
_FENCE = re.compile(r"```(?:[ \t]*([A-Za-z0-9_+-]+)?[ \t]*\n)?(.*?)(?:```|\Z)", re.DOTALL)
_SQL_PREFIX = re.compile(r"^\s*(?:sql(?:ite)?\s*(?:query)?\s*:|query\s*:|answer\s*:)\s*", re.IGNORECASE)
# Info strings of a fenced block that mark it as SQL (a model asked for PostgreSQL may write ```postgresql).
SQL_FENCE_TAGS = frozenset({"sql", "sqlite", "postgresql", "postgres", "psql", "pgsql", "mysql", "mariadb"})
_QUERY_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_STATEMENT_START = re.compile(r"\b(INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|ATTACH|DETACH|PRAGMA|REPLACE|VACUUM|BEGIN|"
                              r"REINDEX|ANALYZE|SELECT|WITH)\b", re.IGNORECASE)
_STRING_OR_CODE = re.compile(r"('(?:[^']|'')*'?)|([^']+)")


def _fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """(language tag, body) of every ``` block; an unclosed last fence runs to the end of the reply."""
    return [((m.group(1) or "").lower(), m.group(2)) for m in _FENCE.finditer(reply)]


def split_statements(sql: str) -> list[str]:
    """``sql`` cut at semicolons that are outside quotes and comments; empty pieces dropped.

    Args:
        sql: SQL text holding zero or more statements.

    Returns:
        The statements, stripped, without their semicolons.

    Example:
        >>> split_statements("SELECT 1; SELECT ';' ;")
        ['SELECT 1', "SELECT ';'"]
    """
    pieces, current, i, n = [], [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            j = sql.find(close, i + 1)
            j = n - 1 if j < 0 else j
            current.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            current.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            current.append(sql[i:j])
            i = j
        elif ch == ";":
            pieces.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def _all_statements(text: str) -> str:
    """Every statement of ``text``, joined by ``"; "``, without trailing semicolons.

    Never only the first: a reply ``SELECT ...; DROP TABLE t`` must reach the guard whole (which refuses
    more than one statement) rather than be cut to its harmless-looking start.
    """
    return "; ".join(split_statements(text))


def extract_sql(reply: str) -> str:
    """The SQL query an LLM reply holds, without fences, prose or trailing semicolons ("" if none).

    Prefers a ```sql (or ```sqlite, ```postgresql, ```mysql, ...) block, then any ``` block that contains SELECT/WITH; without fences
    it takes the text from the first SELECT/WITH keyword up to a blank line. When the SQL holds several
    statements all of them are returned, joined by ``"; "`` (the guard refuses more than one).

    Args:
        reply: the raw text the LLM returned.

    Returns:
        The query text, or ``""`` when the reply holds no SQL.

    Example:
        >>> extract_sql("Here it is:\\n```sql\\nSELECT name FROM singer;\\n```")
        'SELECT name FROM singer'
    """
    if not reply or not reply.strip():
        return ""
    blocks = _fenced_blocks(reply)
    tagged = [body for lang, body in blocks if lang in SQL_FENCE_TAGS]
    untagged = [body for lang, body in blocks if lang not in SQL_FENCE_TAGS and _QUERY_START.search(body)]
    for body in tagged + untagged:
        sql = _all_statements(_SQL_PREFIX.sub("", body.strip()))
        if sql:
            return sql
    text = reply.replace("```", "\n\n")
    match = _QUERY_START.search(text)
    if match is None:
        return ""
    # Unfenced SQL ends where prose starts; a blank line is the reliable boundary an LLM leaves.
    start = match.start()
    paragraph_start = max(text.rfind("\n\n", 0, start), 0)
    before = text[paragraph_start:start]
    if ";" in before:
        # "INSERT ...; SELECT ...": statements ahead of the query belong to it, so the guard sees them.
        earlier = _STATEMENT_START.search(before)
        if earlier is not None:
            start = paragraph_start + earlier.start()
    body = re.split(r"\n\s*\n", text[start:], maxsplit=1)[0]
    return _all_statements(body)


def parse_statements(sql: str, dialect: str = "sqlite") -> list[exp.Expression]:
    """Every statement in ``sql`` as a sqlglot tree; raises :class:`SqlParseError` when unparseable.

    Args:
        sql: SQL text with one or more statements.
        dialect: the sqlglot dialect to read.

    Returns:
        One sqlglot expression per statement.

    Raises:
        SqlParseError: ``sql`` is empty, holds only comments/semicolons, does not parse, or is nested too
            deeply for the parser.

    Example:
        >>> [t.key for t in parse_statements("SELECT 1; DELETE FROM t")]
        ['select', 'delete']
    """
    if not sql or not sql.strip():
        raise SqlParseError("the SQL is empty: the reply held no query.")
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqlParseError(f"the SQL does not parse as {dialect}: {first_line}") from exc
    except RecursionError:
        # sqlglot's parser recurses once per nesting level; ~45 parentheses exhaust Python's stack limit.
        raise SqlParseError("the SQL is nested too deeply to parse (too many parentheses or subqueries).") from None
    if not trees:
        raise SqlParseError("the SQL holds no statement, only comments or semicolons.")
    return trees


def parse_sql(sql: str, dialect: str = "sqlite") -> exp.Expression:
    """The single statement in ``sql`` as a sqlglot tree; :class:`SqlParseError` if unparseable or several.

    Args:
        sql: SQL text holding exactly one statement.
        dialect: the sqlglot dialect to read.

    Returns:
        The statement's sqlglot expression.

    Raises:
        SqlParseError: ``sql`` is empty, does not parse, or holds more than one statement.

    Example:
        >>> parse_sql("select name from singer").sql()
        'SELECT name FROM singer'
    """
    trees = parse_statements(sql, dialect)
    if len(trees) != 1:
        raise SqlParseError(f"expected one SQL statement, found {len(trees)}.")
    return trees[0]


def _lower_outside_strings(sql: str) -> str:
    return "".join(m.group(1) or m.group(2).lower() for m in _STRING_OR_CODE.finditer(sql))


def normalize_sql(sql: str, dialect: str = "sqlite") -> str:
    """A canonical form of ``sql`` for Exact Match.

    Parsed and regenerated by sqlglot (consistent spacing, ``AS`` aliases, ``<>``), identifiers unquoted,
    everything but string literals lower-cased, trailing semicolons dropped. Unparseable SQL falls back to
    whitespace and case normalisation so two spellings of the same broken text still compare equal.

    Args:
        sql: the SQL text (may be empty or unparseable).
        dialect: the sqlglot dialect to read and write.

    Returns:
        The normalised SQL, or ``""`` for empty input.

    Example:
        >>> normalize_sql('SELECT  Name FROM "Singer" WHERE x != 1;')
        'select name from singer where x <> 1'
    """
    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return ""
    try:
        tree = parse_sql(text, dialect)
    except SqlParseError:
        return _lower_outside_strings(" ".join(text.split()))
    for identifier in tree.find_all(exp.Identifier):
        identifier.set("quoted", False)
    return _lower_outside_strings(tree.sql(dialect=dialect, normalize=True))

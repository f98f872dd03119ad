"""Schema snippets: the CREATE part of a ``sql_context``, its normal form, and deduplication.

What gets embedded and indexed is the schema (CREATE TABLE / CREATE VIEW statements) of each record;
INSERTed rows are left out because they bloat embeddings without saying what a table is. Records that
share a schema (several questions per schema, as in gretel) map to one snippet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coderag.sql.text import split_statements

_SCHEMA_STATEMENT = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY)\s+)?"
    r"(?:VIRTUAL\s+)?(?:TABLE|VIEW)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""")
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words that cannot stand unquoted as a column or table name in SQLite / sqlglot.
_RESERVED = {"ORDER", "GROUP", "SELECT", "FROM", "WHERE", "TABLE", "INDEX", "KEY", "PRIMARY", "FOREIGN",
             "REFERENCES", "LIMIT", "OFFSET", "UNION", "JOIN", "ON", "AS", "BY", "TO", "IN", "IS", "NOT",
             "NULL", "AND", "OR", "CASE", "WHEN", "THEN", "ELSE", "END", "DEFAULT", "CHECK", "UNIQUE",
             "VALUES", "SET", "ALL", "DISTINCT", "HAVING", "INTO", "CREATE", "DROP", "ALTER", "ADD",
             "COLUMN", "CONSTRAINT", "TRANSACTION", "COMMIT", "ROLLBACK", "EXISTS", "BETWEEN", "LIKE",
             "GLOB", "CROSS", "NATURAL", "LEFT", "RIGHT", "FULL", "OUTER", "INNER", "USING", "WINDOW",
             "OVER", "PARTITION", "FILTER", "RANGE", "ROWS", "CURRENT", "DESC", "ASC", "COLLATE", "ESCAPE",
             "CAST", "VIEW", "TRIGGER", "WITH", "RECURSIVE", "REPLACE", "IF", "MATCH", "REGEXP", "INTERVAL"}


def quote_identifier(name: str) -> str:
    """``name`` as-is when it is a plain, non-reserved identifier, else double-quoted.

    Args:
        name: a table or column name.

    Returns:
        The identifier, ready to go into SQL.

    Example:
        >>> quote_identifier("name"), quote_identifier("order"), quote_identifier("Song Name")
        ('name', '"order"', '"Song Name"')
    """
    if _PLAIN_IDENTIFIER.match(name) and name.upper() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def create_table_statement(table: str, columns: list[tuple[str, str]], primary_key: list[str],
                           foreign_keys: list[tuple[str, str, str]]) -> str:
    """One ``CREATE TABLE`` statement: the one schema renderer of the builtin corpus and of Spider.

    Training pairs, the index and outside benchmarks all see schemas in this one form: columns with
    their types, a single-column primary key inline, a composite one as a constraint, then the foreign
    keys; identifiers quoted only when they must be.

    Args:
        table: the table name.
        columns: ``(name, SQL type)`` in order.
        primary_key: the primary-key column names (empty: none).
        foreign_keys: ``(column, referenced table, referenced column)``.

    Example:
        >>> create_table_statement("orders", [("id", "INT"), ("customer_id", "INT")], ["id"],
        ...                        [("customer_id", "customers", "id")])
        'CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, FOREIGN KEY (customer_id) REFERENCES customers(id));'
    """
    parts = []
    for name, sql_type in columns:
        part = f"{quote_identifier(name)} {sql_type}"
        if len(primary_key) == 1 and name == primary_key[0]:
            part += " PRIMARY KEY"
        parts.append(part)
    if len(primary_key) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(quote_identifier(c) for c in primary_key)})")
    for column, ref_table, ref_column in foreign_keys:
        parts.append(f"FOREIGN KEY ({quote_identifier(column)}) REFERENCES "
                     f"{quote_identifier(ref_table)}({quote_identifier(ref_column)})")
    return f"CREATE TABLE {quote_identifier(table)} ({', '.join(parts)});"


def _without_leading_comments(statement: str) -> str:
    return re.sub(r"^(?:\s*(?:--[^\n]*|/\*.*?\*/))*\s*", "", statement, flags=re.DOTALL)


def schema_only(sql_context: str) -> str:
    """The CREATE TABLE / CREATE VIEW statements of ``sql_context``, each ending in ';', one per line.

    A context without any such statement is returned stripped, so no record ends up without a snippet.
    """
    creates = [_without_leading_comments(s) for s in split_statements(sql_context)]
    creates = [s for s in creates if _SCHEMA_STATEMENT.match(s)]
    if not creates:
        return sql_context.strip()
    return "\n".join(f"{s};" for s in creates)


def normalize_schema(text: str) -> str:
    """A canonical form for comparing schemas: case and whitespace folded outside quoted strings.

    Keywords and identifiers are lowercased, runs of whitespace become one space, spaces around
    punctuation ``( ) , ;`` are dropped and trailing semicolons are stripped. Quoted literals are kept.
    """
    parts = _QUOTED.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
            continue
        part = re.sub(r"\s+", " ", part.lower())
        out.append(re.sub(r"\s*([(),;])\s*", r"\1", part))
    return "".join(out).strip().rstrip(";").strip()


@dataclass
class SchemaCorpus:
    """Unique schema snippets and, for every input record, the index of its snippet."""

    snippets: list[str]
    snippet_domains: list[str]
    record_to_snippet: list[int]
    duplicates_dropped: int


def dedupe_schemas(records: list[dict]) -> SchemaCorpus:
    """Deduplicate the records' schema snippets (``schema_only`` of ``sql_context``) by normalized text.

    The first record carrying a schema decides its snippet text and domain; ``duplicates_dropped`` is
    ``len(records) - len(snippets)``.
    """
    snippets: list[str] = []
    domains: list[str] = []
    record_to_snippet: list[int] = []
    by_key: dict[str, int] = {}
    by_context: dict[str, int] = {}  # records that share a context skip re-splitting it
    for record in records:
        context = record["sql_context"]
        idx = by_context.get(context)
        if idx is None:
            snippet = schema_only(context)
            key = normalize_schema(snippet)
            idx = by_key.get(key)
            if idx is None:
                idx = by_key[key] = len(snippets)
                snippets.append(snippet)
                domains.append(str(record.get("domain", "")))
            by_context[context] = idx
        record_to_snippet.append(idx)
    return SchemaCorpus(snippets, domains, record_to_snippet, len(records) - len(snippets))

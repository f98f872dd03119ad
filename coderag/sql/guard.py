"""The guard: only a single read-only query may ever reach a database.

The check is an allowlist over sqlglot's syntax tree: the one statement must be a query (SELECT,
WITH ... SELECT, UNION/INTERSECT/EXCEPT, a parenthesised query) and no node anywhere in it may write,
define, attach, configure or control a transaction (a data-modifying CTE hides an INSERT inside a
SELECT). Execution adds a second line of defence: :mod:`coderag.sql.execution` runs queries under an
SQLite authorizer that denies the same things.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sqlglot import exp

from coderag.sql.text import SqlParseError, parse_statements, split_statements

# Node types that change data, schema, connection or transaction state.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.DML, exp.DDL, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
    exp.TruncateTable, exp.Command, exp.Pragma, exp.Attach, exp.Detach, exp.Grant, exp.Revoke,
    exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Use, exp.Analyze, exp.Copy, exp.LoadData,
    exp.Kill, exp.Cache, exp.Uncache, exp.Refresh,
)
# SQLite functions that reach outside the database (extensions, files) or are not deterministic reads.
FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
_FIRST_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class GuardVerdict:
    """Whether SQL may run, why (a sentence either way), and the kind of statement it is (e.g. SELECT)."""

    allowed: bool
    reason: str
    statement_type: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?(\*/|\Z)", " ", sql, flags=re.DOTALL)


def _statement_type(tree: exp.Expression, sql: str) -> str:
    """The statement's leading keyword as a person would say it (sqlglot parses REINDEX as a column)."""
    if isinstance(tree, exp.Select) and tree.args.get("with") is not None:
        return "WITH"
    word = _FIRST_WORD.search(_strip_comments(sql).lstrip(" \t\r\n(;"))
    return word.group(0).upper() if word else tree.key.upper()


def _statement_texts(sql: str, trees: list[exp.Expression]) -> list[str]:
    """Each statement's own text (for naming its kind), without re-generating SQL from a deep tree."""
    texts = split_statements(sql)
    return texts if len(texts) == len(trees) else [t.key for t in trees]


def _forbidden_node(tree: exp.Expression) -> exp.Expression | None:
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            return node
        if isinstance(node, exp.Select) and node.args.get("into") is not None:
            return node.args["into"]
        if isinstance(node, (exp.Anonymous, exp.Func)):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in FORBIDDEN_FUNCTIONS:
                return node
    return None


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Into):
        return "SELECT ... INTO (creates a table)"
    if isinstance(node, (exp.Anonymous, exp.Func)):
        return f"the function {node.name or node.sql_name()}()"
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return node.key.upper()


def sql_guard(sql: str, dialect: str = "sqlite") -> GuardVerdict:
    """Allow ``sql`` only when it is exactly one read-only query; otherwise refuse with the reason.

    Args:
        sql: the SQL text to check (typically from :func:`coderag.sql.text.extract_sql`).
        dialect: the sqlglot dialect it is parsed with (``sqlite``, ``postgres``, ``mysql``): the one of
            the database it would run on.

    Returns:
        A :class:`GuardVerdict`; unparseable or empty SQL is refused, never raised.

    Example:
        >>> sql_guard("SELECT name FROM singer").allowed
        True
        >>> sql_guard("DROP TABLE singer").reason
        'refused: DROP is not a read-only query; only SELECT / WITH ... SELECT may run.'
    """
    if not sql or not sql.strip():
        return GuardVerdict(False, "refused: there is no SQL to run.", "")
    try:
        trees = parse_statements(sql, dialect)
    except SqlParseError as exc:
        return GuardVerdict(False, f"refused: {exc}", "")
    if len(trees) > 1:
        kinds = ", ".join(_statement_type(t, text) for t, text in zip(trees, _statement_texts(sql, trees)))
        return GuardVerdict(False, f"refused: {len(trees)} statements ({kinds}); only a single query may run.",
                            "MULTIPLE")
    tree = trees[0]
    kind = _statement_type(tree, sql)
    if not isinstance(tree, exp.Query):
        return GuardVerdict(False, f"refused: {kind} is not a read-only query; only SELECT / WITH ... SELECT "
                                   "may run.", kind)
    bad = _forbidden_node(tree)
    if bad is not None:
        where = "inside a WITH clause" if bad.find_ancestor(exp.CTE) is not None else "inside the query"
        return GuardVerdict(False, f"refused: {_describe(bad)} {where} would change or escape the database.",
                            kind)
    return GuardVerdict(True, f"allowed: a single read-only {kind} query.", kind)

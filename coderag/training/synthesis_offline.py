"""Deterministic, LLM-free text for the four synthesis categories.

The offline backend derives every generated field from the record itself: template paraphrases of
the question, a plain-English description read off the SQL's syntax tree, an equivalent rewrite of
the SQL by sqlglot's optimizer, and a text+code "hybrid" question naming the tables and columns the
SQL touches. Each choice is keyed on (seed, record id), so the same inputs always give the same pairs.
"""

from __future__ import annotations

import random
import re
import zlib

import sqlglot
from sqlglot import exp

_PARAPHRASES = (
    "{q}",
    "Write a SQL query to answer: {bare}",
    "Which tables do I need to answer this: {bare}?",
    "Question about the database: {q}",
    "How would I find this with SQL: {bare_lc}?",
    "Help me query the data: {bare}.",
    "{bare} (SQL please)",
    "I want to know: {bare_lc}.",
)
# Light lexical swaps so paraphrases differ in more than their frame.
_SWAPS = (
    (r"^(?i:show|list)\b", "Give me"),
    (r"^(?i:what is)\b", "Find"),
    (r"^(?i:what are)\b", "Find"),
    (r"^(?i:how many)\b", "Count how many"),
    (r"^(?i:find)\b", "Look up"),
    (r"^(?i:get)\b", "Retrieve"),
)
_HYBRID_FRAMES = (
    "{bare} -- using table(s) {tables}{cols}",
    "[{tables}] {bare}{cols}",
    "{bare}. Relevant SQL objects: {tables}{cols}",
)


def record_rng(seed: int, record_id, category: str) -> random.Random:
    """A random stream that depends only on (seed, record id, category), not on process hash seeds."""
    return random.Random(zlib.crc32(f"{seed}:{record_id}:{category}".encode()))


def _bare(question: str) -> str:
    return question.strip().rstrip("?.! ").strip()


def paraphrase_question(question: str, rng: random.Random) -> str:
    """A template paraphrase of ``question`` that is never identical to it (unless it is empty)."""
    bare = _bare(question)
    if not bare:
        return ""
    swapped = bare
    for pattern, replacement in _SWAPS:
        if re.search(pattern, bare):
            swapped = re.sub(pattern, replacement, bare, count=1)
            break
    lower = swapped[:1].lower() + swapped[1:]
    frames = [f for f in _PARAPHRASES if f != "{q}" or swapped != bare]
    frame = rng.choice(frames)
    text = frame.format(q=swapped if frame == "{q}" else question.strip(), bare=swapped, bare_lc=lower)
    return text if text.strip() != question.strip() else f"Write a SQL query to answer: {bare}"


def sql_objects(sql: str) -> tuple[list[str], list[str]]:
    """Table and column names referenced by ``sql`` (sorted, unique); empty lists if it does not parse."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return [], []
    tables = sorted({t.name for t in tree.find_all(exp.Table) if t.name})
    columns = sorted({c.name for c in tree.find_all(exp.Column) if c.name and c.name != "*"})
    return tables, columns


def hybrid_question(question: str, sql: str, rng: random.Random) -> str:
    """The question with the SQL objects it needs spelled out (a text+code query)."""
    tables, columns = sql_objects(sql)
    bare = _bare(question)
    if not bare or not tables:
        return ""
    cols = f"; columns {', '.join(columns[:6])}" if columns else ""
    return rng.choice(_HYBRID_FRAMES).format(bare=bare, tables=", ".join(tables), cols=cols)


def _clause(tree: exp.Expression, key: str) -> str:
    node = tree.args.get(key)
    if node is None:
        return ""
    body = node.this if isinstance(node, (exp.Where, exp.Having)) else node
    return body.sql(dialect="sqlite")


def describe_sql(sql: str) -> str:
    """A plain-English description of what ``sql`` does, read off its syntax tree ("" if unparseable)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return ""
    if tree is None:
        return ""
    tables = ", ".join(sorted({t.name for t in tree.find_all(exp.Table) if t.name})) or "the database"
    where = _clause(tree, "where")
    if isinstance(tree, exp.Insert):
        return f"Inserts new rows into {tables}."
    if isinstance(tree, exp.Update):
        sets = ", ".join(e.sql(dialect="sqlite") for e in tree.expressions)
        return f"Updates {tables}, setting {sets}" + (f" where {where}." if where else " for every row.")
    if isinstance(tree, exp.Delete):
        return f"Deletes rows from {tables}" + (f" where {where}." if where else ".")
    select = tree if isinstance(tree, exp.Select) else tree.find(exp.Select)
    if select is None:
        return f"Runs a {tree.key.upper()} statement on {tables}."
    outputs = ", ".join(e.sql(dialect="sqlite") for e in select.expressions)
    parts = [f"Returns {outputs} from {tables}"]
    if where:
        parts.append(f"for rows where {where}")
    group = select.args.get("group")
    if group is not None:
        parts.append("grouped by " + ", ".join(e.sql(dialect="sqlite") for e in group.expressions))
    having = _clause(select, "having")
    if having:
        parts.append(f"keeping groups where {having}")
    order = select.args.get("order")
    if order is not None:
        parts.append("ordered by " + ", ".join(e.sql(dialect="sqlite") for e in order.expressions))
    limit = select.args.get("limit")
    if limit is not None and limit.expression is not None:
        parts.append(f"limited to {limit.expression.sql(dialect='sqlite')} rows")
    if select.args.get("distinct") is not None:
        parts[0] = parts[0].replace("Returns ", "Returns the distinct ", 1)
    return ", ".join(parts) + "."


def _schema_mapping(sql_context: str) -> dict[str, dict[str, str]]:
    """{table: {column: type}} from the CREATE TABLE statements of a context (for sqlglot's optimizer)."""
    mapping: dict[str, dict[str, str]] = {}
    try:
        statements = sqlglot.parse(sql_context, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return mapping
    for stmt in statements:
        if not isinstance(stmt, exp.Create) or not isinstance(stmt.this, exp.Schema):
            continue
        table = stmt.this.this.name
        cols = {}
        for col in stmt.this.expressions:
            if isinstance(col, exp.ColumnDef):
                kind = col.args.get("kind")
                cols[col.name] = kind.sql(dialect="sqlite") if kind is not None else "TEXT"
        if table and cols:
            mapping[table] = cols
    return mapping


def rewrite_sql(sql: str, sql_context: str) -> str:
    """An equivalent rewrite of ``sql`` (qualified, aliased, normalized by sqlglot); "" when none differs.

    Equivalence is checked later by executing both on the record's database; this only proposes.
    """
    from sqlglot.optimizer import optimize

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return ""
    if tree is None:
        return ""
    candidates = []
    if isinstance(tree, (exp.Select, exp.Union)):
        try:
            optimized = optimize(tree.copy(), schema=_schema_mapping(sql_context), dialect="sqlite")
            candidates.append(optimized.sql(dialect="sqlite"))
        except Exception:  # the optimizer rejects some valid queries; fall back to a plain rewrite
            pass
    candidates.append(tree.sql(dialect="sqlite", identify=True, pretty=True))
    original = " ".join(sql.split()).lower()
    for candidate in candidates:
        if " ".join(candidate.split()).lower() != original:
            return candidate
    return ""

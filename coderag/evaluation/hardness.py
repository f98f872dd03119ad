"""Spider hardness levels (easy / medium / hard / extra) of a gold SQL query, computed on sqlglot trees.

The rules are those of Spider's official evaluator (``Evaluator.eval_hardness``): three counts taken on the
*top-level* query only, then fixed thresholds.

* component 1: one each for a WHERE, GROUP BY, ORDER BY and LIMIT clause; one per joined table (tables
  and FROM-subqueries in the FROM clause, minus one); one per ``OR`` and one per ``LIKE`` among the
  conditions of WHERE, HAVING and the JOIN ``ON`` clauses.
* component 2: one per subquery used as a condition's value (``x IN (SELECT ...)``, ``x > (SELECT ...)``) in
  WHERE, HAVING or ``ON``, plus one for a set operation (UNION / INTERSECT / EXCEPT). A subquery in FROM
  counts as a joined table, not here.
* others: one each for more than one aggregate, more than one SELECT item, more than one WHERE condition
  and more than one GROUP BY item.

The aggregate count reproduces the official code as it runs, quirks included, so levels agree with
published Spider breakdowns: it counts aggregated SELECT items and ORDER BY operands, and also WHERE and
HAVING conditions negated with ``NOT`` (``NOT IN``, ``NOT LIKE``) and each AND / OR that joins HAVING
conditions.

Clauses written after the last branch of a set operation (``... UNION SELECT ... ORDER BY x LIMIT 3``)
belong to that last branch, as in the official parser, and so do not count at the top level.

Spaced operators of Spider's gold queries (``! =``) are joined before parsing, as the official tokenizer
does. The official evaluator needs the query to parse with its own parser and raises otherwise. Here SQL that
sqlglot cannot parse, or that is not a query (INSERT, CREATE, several statements), gets
:data:`UNKNOWN` instead of an exception, so one bad gold query cannot stop a whole evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from coderag.evaluation.execution_match import join_spaced_operators
from coderag.sql.text import SqlParseError, parse_sql

LEVELS = ("easy", "medium", "hard", "extra")
UNKNOWN = "unknown"

_AGGREGATES = (exp.Max, exp.Min, exp.Count, exp.Sum, exp.Avg)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)


@dataclass(frozen=True)
class HardnessCounts:
    """The three counts Spider's hardness is decided on."""

    component1: int
    component2: int
    others: int


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Paren, exp.Alias)):
        node = node.this
    return node


def _is_aggregate(node: exp.Expression | None) -> bool:
    return node is not None and isinstance(_unwrap(node), _AGGREGATES)


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], list[str]]:
    """The condition units and connectors ("and" / "or") of a boolean expression, flattened."""
    if node is None:
        return [], []
    node = _unwrap(node)
    if isinstance(node, exp.Connector):  # And / Or
        left_units, left_ops = _conditions(node.this)
        right_units, right_ops = _conditions(node.expression)
        return left_units + right_units, [*left_ops, node.key, *right_ops]
    return [node], []


def _is_negated(unit: exp.Expression) -> bool:
    # NOT IN parses as Not(In); NOT LIKE may parse as Like(negate=True).
    return isinstance(unit, exp.Not) or bool(unit.args.get("negate"))


def _comparison(unit: exp.Expression) -> exp.Expression:
    return _unwrap(unit.this) if isinstance(unit, exp.Not) else unit


def _nested_values(unit: exp.Expression) -> int:
    """How many of a condition's values are subqueries (``IN (SELECT ...)``, ``= (SELECT ...)``)."""
    comparison = _comparison(unit)
    values = [comparison.args.get(key) for key in ("expression", "query", "low", "high")]
    return sum(isinstance(_unwrap(v), (exp.Subquery, exp.Query)) for v in values if isinstance(v, exp.Expression))


def _top_select(tree: exp.Expression) -> tuple[exp.Select | None, bool]:
    """The leftmost SELECT of ``tree`` and whether a set operation follows it."""
    node, set_op = _unwrap(tree), False
    while True:
        if isinstance(node, exp.Subquery):
            node = _unwrap(node.this)
        elif isinstance(node, exp.SetOperation):
            node, set_op = _unwrap(node.this), True
        else:
            break
    return (node if isinstance(node, exp.Select) else None), set_op


def _from_clause(select: exp.Select) -> exp.Expression | None:
    return select.args.get("from_") or select.args.get("from")


def hardness_counts(sql: str, dialect: str = "sqlite") -> HardnessCounts | None:
    """The component-1, component-2 and "others" counts of ``sql`` (``None`` when it is not a query).

    Args:
        sql: One SQL query.
        dialect: sqlglot dialect to parse it with.

    Returns:
        The counts of the top-level query, or ``None`` when ``sql`` does not parse or is not a SELECT.

    Example:
        >>> hardness_counts("SELECT name FROM singer WHERE age > 20 ORDER BY age")
        HardnessCounts(component1=2, component2=0, others=0)
    """
    try:
        tree = parse_sql(join_spaced_operators(sql), dialect)
    except SqlParseError:
        return None
    select, set_op = _top_select(tree)
    if select is None:
        return None

    joins = select.args.get("joins") or []
    tables = (1 if _from_clause(select) is not None else 0) + len(joins)
    join_units: list[exp.Expression] = []
    join_ops: list[str] = []
    for join in joins:
        units, ops = _conditions(join.args.get("on"))
        if join_units and units:  # the official parser joins the ON clauses' conditions with "and"
            join_ops.append("and")
        join_units += units
        join_ops += ops
    where = select.args.get("where")
    where_units, where_ops = _conditions(where.this if where is not None else None)
    having = select.args.get("having")
    having_units, having_ops = _conditions(having.this if having is not None else None)
    group = select.args.get("group")
    group_items = list(group.expressions) if group is not None else []
    order = select.args.get("order")
    order_items = [o.this if isinstance(o, exp.Ordered) else o for o in order.expressions] if order else []

    all_units = join_units + where_units + having_units
    component1 = sum((bool(where_units), bool(group_items), bool(order_items), select.args.get("limit") is not None))
    component1 += max(tables - 1, 0)
    component1 += (join_ops + where_ops + having_ops).count("or")
    component1 += sum(isinstance(_comparison(u), exp.Like) for u in all_units)

    component2 = sum(_nested_values(u) for u in all_units) + int(set_op)

    order_operands = []
    for item in order_items:
        item = _unwrap(item)
        order_operands += [item.this, item.expression] if isinstance(item, _ARITHMETIC) else [item]
    aggregates = (sum(_is_aggregate(e) for e in select.expressions)
                  + sum(_is_negated(u) for u in where_units)
                  + sum(_is_aggregate(g) for g in group_items)
                  + sum(_is_aggregate(o) for o in order_operands)
                  + sum(_is_negated(u) for u in having_units) + len(having_ops))
    others = sum((aggregates > 1, len(select.expressions) > 1, len(where_units) > 1, len(group_items) > 1))
    return HardnessCounts(component1, component2, others)


def level_from_counts(counts: HardnessCounts) -> str:
    """The Spider level for given counts, by the official thresholds.

    Args:
        counts: Component-1, component-2 and "others" counts.

    Returns:
        One of ``"easy"``, ``"medium"``, ``"hard"``, ``"extra"``.

    Example:
        >>> level_from_counts(HardnessCounts(component1=1, component2=0, others=0))
        'easy'
    """
    c1, c2, others = counts.component1, counts.component2, counts.others
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if ((others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0)
            or (c1 <= 1 and others == 0 and c2 <= 1)):
        return "hard"
    return "extra"


def hardness(sql: str, dialect: str = "sqlite") -> str:
    """Spider's hardness level of ``sql``: ``easy``, ``medium``, ``hard`` or ``extra``.

    Args:
        sql: One SQL query (typically a gold query).
        dialect: sqlglot dialect to parse it with.

    Returns:
        The level, or :data:`UNKNOWN` (``"unknown"``) when ``sql`` does not parse or is not a query.

    Example:
        >>> hardness("SELECT count(*) FROM singer")
        'easy'
        >>> hardness("SELECT name FROM singer WHERE id NOT IN (SELECT singer_id FROM concert)")
        'hard'
    """
    counts = hardness_counts(sql, dialect)
    return UNKNOWN if counts is None else level_from_counts(counts)

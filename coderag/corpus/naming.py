"""Spider-like naming for generated schemas: identifier styles, abbreviations and ``T1``-style aliases.

Real databases are not all snake_case: ``Singer_ID``, ``customerName``, ``EMP_NO`` and ``tbl_Orders``
sit beside ``order_date``. A schema drawn with the ``naming`` feature gets one :class:`NamingStyle`
for all of its tables and columns, so sibling schemas of a domain differ in their spelling as well as
their vocabulary, and questions (written in plain words) have to reach them through the meaning of the
names rather than their surface. Joined gold queries may also be written with ``T1``/``T2`` aliases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from coderag.corpus.schemas import quote_identifier

CASES = ("snake", "pascal_snake", "camel", "pascal", "upper")
# Short forms seen in real schemas; a word without an entry is kept whole.
ABBREVIATIONS = {
    "account": "acct", "address": "addr", "amount": "amt", "average": "avg", "capacity": "cap",
    "category": "cat", "certification": "cert", "code": "cd", "count": "cnt", "customer": "cust",
    "date": "dt", "department": "dept", "description": "descr", "distance": "dist", "employee": "emp",
    "experience": "exp", "identifier": "ident", "location": "loc", "manager": "mgr", "maximum": "max",
    "minimum": "min", "minutes": "mins", "name": "nm", "number": "no", "percent": "pct", "price": "prc",
    "product": "prod", "quantity": "qty", "rating": "rtg", "reference": "ref", "registration": "reg",
    "revenue": "rev", "score": "scr", "seconds": "secs", "station": "stn", "status": "stat",
    "temperature": "temp", "total": "tot", "transaction": "txn", "type": "typ", "value": "val",
    "weight": "wt", "years": "yrs", "year": "yr", "service": "svc", "schedule": "sched",
}


@dataclass(frozen=True)
class NamingStyle:
    """How one schema spells its identifiers.

    Attributes:
        case: one of :data:`CASES`.
        abbreviate: shorten words found in :data:`ABBREVIATIONS`.
        table_prefix: a prefix for table names (``""``, ``"tbl_"``, ``"t_"``), spelt in ``case``.
    """

    case: str = "snake"
    abbreviate: bool = False
    table_prefix: str = ""

    def column(self, name: str) -> str:
        """``name`` (snake_case) in this style.

        Args:
            name: a snake_case column name.

        Returns:
            The styled name; the snake_case one when the styled name would need quoting in SQL.

        Example:
            >>> NamingStyle("pascal_snake").column("singer_id"), NamingStyle("camel", True).column("order_date")
            ('Singer_ID', 'orderDt')
        """
        return self._styled(name.split("_"))

    def table(self, name: str) -> str:
        """``name`` (snake_case) in this style, with the style's table prefix.

        Args:
            name: a snake_case table name.

        Returns:
            The styled table name (the original when the styled one would need quoting).

        Example:
            >>> NamingStyle("pascal", table_prefix="tbl_").table("hospital_stays")
            'TblHospitalStays'
        """
        words = ([self.table_prefix.rstrip("_")] if self.table_prefix else []) + name.split("_")
        return self._styled(words, fallback=name)

    def _styled(self, words: list[str], fallback: str | None = None) -> str:
        words = [w for w in words if w]
        if self.abbreviate:
            words = [ABBREVIATIONS.get(w, w) for w in words]
        if self.case == "snake":
            out = "_".join(words)
        elif self.case == "upper":
            out = "_".join(words).upper()
        elif self.case == "pascal_snake":
            out = "_".join("ID" if w == "id" else w.capitalize() for w in words)
        elif self.case == "camel":
            out = words[0] + "".join("ID" if w == "id" else w.capitalize() for w in words[1:])
        elif self.case == "pascal":
            out = "".join("ID" if w == "id" else w.capitalize() for w in words)
        else:
            raise ValueError(f"unknown naming case {self.case!r}; expected one of {', '.join(CASES)}")
        original = fallback if fallback is not None else "_".join(words)
        return out if quote_identifier(out) == out else original


def draw_naming_style(rng: random.Random) -> NamingStyle:
    """A seeded naming style: about a third of schemas stay snake_case, as in the classic corpus.

    Args:
        rng: the schema's random stream.

    Returns:
        A :class:`NamingStyle`.

    Example:
        >>> draw_naming_style(random.Random(0)).case in CASES
        True
    """
    case = rng.choices(CASES, weights=(4, 3, 2, 2, 1))[0]
    return NamingStyle(case=case, abbreviate=rng.random() < 0.35,
                       table_prefix=rng.choices(("", "tbl_", "t_"), weights=(8, 1, 1))[0])


def alias_tables(sql: str) -> str:
    """Rewrite a joined query Spider's way: each table gets ``AS T1``, ``T2`` ... and columns use them.

    Queries without a join, or with a CTE or subquery (whose scopes the rewrite would have to follow), are
    returned unchanged.

    Args:
        sql: one SQLite query.

    Returns:
        The aliased query (SQLite dialect, as sqlglot writes it), or ``sql`` itself.

    Example:
        >>> alias_tables("SELECT a.x, b.y FROM a JOIN b ON a.id = b.a_id;")
        'SELECT T1.x, T2.y FROM a AS T1 JOIN b AS T2 ON T1.id = T2.a_id;'
    """
    tree = sqlglot.parse_one(sql.rstrip().rstrip(";"), read="sqlite")
    if not tree.find(exp.Join) or tree.find(exp.With) or tree.find(exp.Subquery) or tree.find(exp.Union):
        return sql
    if any(isinstance(node, exp.Select) for node in tree.find_all(exp.Select) if node is not tree):
        return sql
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        if table.alias:
            return sql
        aliases[table.name] = f"T{len(aliases) + 1}"
        table.set("alias", exp.TableAlias(this=exp.to_identifier(aliases[table.name])))
    for col in tree.find_all(exp.Column):
        if col.table and col.table in aliases:
            col.set("table", exp.to_identifier(aliases[col.table]))
    return tree.sql(dialect="sqlite") + ";"

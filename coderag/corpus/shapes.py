"""One concrete schema of a domain: tables with chosen names, typed columns, keys and INSERTed rows.

A :class:`SchemaInstance` is drawn from a :class:`~coderag.corpus.domain_spec.DomainSpec` with a seeded
``random.Random``: the shape (which of the domain's entities appear), table and column names, type
spelling and rows all vary, so sibling schemas of one domain read differently. Optional *features*
widen the variety (the ``builtin-varied`` corpus turns them all on): ``shapes`` favours 3- and 4-table
schemas and adds generic columns (status, rating, version ...) so tables carry 6-12 columns; ``naming``
spells every identifier in one Spider-like :class:`~coderag.corpus.naming.NamingStyle` and writes joined
gold queries with ``T1`` aliases; ``synonyms`` words about half of the column labels indirectly
(:mod:`coderag.corpus.synonyms`). Without features the output is the classic corpus, draw for draw.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from coderag.corpus.domain_spec import FIRST_NAMES, LAST_NAMES, PEOPLE, ColumnSpec, DomainSpec, EntitySpec, column
from coderag.corpus.naming import NamingStyle, draw_naming_style
from coderag.corpus.schemas import create_table_statement
from coderag.corpus.synonyms import indirect_label

# Shapes by table count; "c" is the grouping entity referenced by "a", "f" the fact table.
SHAPES: tuple[tuple[str, ...], ...] = (("a", "f"), ("a", "b", "f"), ("c", "a", "f"), ("c", "a", "b", "f"))
SHAPE_WEIGHTS = (3, 4, 2, 2)
# With the ``shapes`` feature: mostly 3- and 4-table schemas, as in multi-table benchmark databases.
WIDE_SHAPE_WEIGHTS = (1, 3, 2, 4)
# Schema features beyond the classic corpus (see the module docstring); "domains" is the generator's.
FEATURES = ("domains", "shapes", "naming", "synonyms")
# Bookkeeping columns real tables carry beside their domain attributes (``shapes`` feature).
GENERIC_ATTRIBUTES = tuple(column(spec) for spec in (
    "cat:status|record_status:status:Active,Inactive,Pending,Archived",
    "int:priority|priority_level:priority:1-5",
    "real:rating|star_rating:rating:1-5",
    "cat:notes|remarks:notes:none,follow up,verified,flagged",
    "cat:contact_email|email:contact email:info@example.org,desk@example.org,help@example.org",
    "cat:phone|phone_number:phone number:555-0100,555-0101,555-0142,555-0199",
    "int:created_year|year_created:year created:2005-2024",
    "int:version|revision:version:1-9",
    "cat:source_system|data_source:data source:web,api,import,manual",
    "cat:currency|currency_code:currency:USD,EUR,GBP,JPY",
    "int:external_ref|legacy_id:external reference:1000-9999",
    "cat:language|lang:language:en,es,fr,de",
    "real:discount_pct|discount:discount percent:0-30",
    "cat:is_active|active_flag:active flag:Y,N",
))

# Type spellings seen in gretel's contexts; one is picked per schema.
TYPE_STYLES = (
    {"int": "INT", "text": "VARCHAR(50)", "real": "DECIMAL(10,2)", "date": "DATE"},
    {"int": "INTEGER", "text": "TEXT", "real": "REAL", "date": "DATE"},
    {"int": "INT", "text": "VARCHAR(100)", "real": "FLOAT", "date": "DATE"},
)
DATE_START = dt.date(2021, 1, 1)
DATE_DAYS = 4 * 365


@dataclass
class Column:
    name: str
    sql_type: str
    label: str = ""
    kind: str = ""  # "pk" | "name" | "fk" | "cat" | "int" | "real" | "date"


@dataclass
class Table:
    name: str
    singular: str
    plural: str
    columns: list[Column]
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)  # (column, table, column)
    rows: list[tuple] = field(default_factory=list)

    @property
    def pk(self) -> str:
        return self.columns[0].name

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def values(self, name: str) -> list[Any]:
        i = [c.name for c in self.columns].index(name)
        return [row[i] for row in self.rows]

    def create_statement(self) -> str:
        return create_table_statement(self.name, [(c.name, c.sql_type) for c in self.columns], [self.pk],
                                      self.foreign_keys)

    def insert_statement(self) -> str:
        rows = ", ".join("(" + ", ".join(sql_literal(v) for v in row) + ")" for row in self.rows)
        return f"INSERT INTO {self.name} VALUES {rows};"


@dataclass
class Roles:
    """Which column plays which part, so question templates can be written once for every domain."""

    a_name: str
    a_cat: Column
    a_num: Column
    f_fk_a: str
    f_date: Column
    f_measure: Column
    f_cat: Column
    b_name: str | None = None
    b_cat: Column | None = None
    f_fk_b: str | None = None
    c_name: str | None = None
    a_fk_c: str | None = None


@dataclass
class SchemaInstance:
    domain: DomainSpec
    a: Table
    f: Table
    roles: Roles
    b: Table | None = None
    c: Table | None = None
    alias_joins: bool = False  # write joined gold queries with T1/T2 aliases (``naming`` feature)

    @property
    def tables(self) -> list[Table]:
        """Tables in creation order (referenced tables first)."""
        return [t for t in (self.c, self.a, self.b, self.f) if t is not None]

    def sql_context(self) -> str:
        creates = [t.create_statement() for t in self.tables]
        inserts = [t.insert_statement() for t in self.tables]
        return "\n".join(creates + inserts)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def snake(words: str) -> str:
    return words.lower().replace(" ", "_").replace("-", "_")


def _plural_wording(plural: str, table_name: str, rng: random.Random) -> str:
    """How questions call a table's rows: the domain's word, or (half the time) the table's own words.

    People asking about a database tend to use its vocabulary ("inpatients", "hospital stays"); using it
    makes sibling schemas of one domain distinguishable from the question, as in real corpora.
    """
    words = table_name.replace("_", " ")
    return words if words.endswith("s") and rng.random() < 0.5 else plural


def _pick_name(options: tuple[str, ...], used: set[str], rng: random.Random) -> str:
    free = [o for o in options if o not in used] or [f"{options[0]}_{len(used)}"]
    name = rng.choice(free)
    used.add(name)
    return name


def _number(spec: ColumnSpec, rng: random.Random) -> int | float:
    if spec.kind == "int":
        return rng.randint(int(spec.low), int(spec.high))
    digits = 2 if spec.high >= 10 else 3 if spec.high >= 1 else 4
    return round(rng.uniform(spec.low, spec.high), digits)


def _attribute_value(spec: ColumnSpec, rng: random.Random) -> Any:
    return rng.choice(spec.values) if spec.kind == "cat" else _number(spec, rng)


def _names(pool, n: int, rng: random.Random) -> list[str]:
    if pool == PEOPLE:
        people = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
        return rng.sample(people, n)
    return rng.sample(list(pool), min(n, len(pool)))


def _entity_table(spec: EntitySpec, types: dict[str, str], rng: random.Random, n_rows: int, *,
                  id_style: str, extra_attrs: int, generic: int = 0) -> tuple[Table, Column, Column | None]:
    """A table for ``spec`` with one categorical, one numeric (when the spec has one) and extra attributes."""
    used: set[str] = set()
    pk = "id" if id_style == "id" else f"{snake(spec.singular)}_id"
    used.add(pk)
    name_col = _pick_name(spec.name_columns, used, rng)
    cats = [a for a in spec.attributes if a.kind == "cat"]
    nums = [a for a in spec.attributes if a.kind != "cat"]
    chosen = [rng.choice(cats)] + ([rng.choice(nums)] if nums else [])
    rest = [a for a in spec.attributes if a not in chosen]
    chosen += rng.sample(rest, min(extra_attrs, len(rest)))
    if generic:
        chosen += rng.sample(GENERIC_ATTRIBUTES, generic)
    columns = [Column(pk, types["int"], kind="pk"), Column(name_col, types["text"], spec.singular, "name")]
    attr_cols = []
    for attr in chosen:
        sql_type = types["text"] if attr.kind == "cat" else types[attr.kind]
        attr_cols.append(Column(_pick_name(attr.names, used, rng), sql_type, attr.label, attr.kind))
    columns += attr_cols
    table_name = _pick_name(spec.tables, set(), rng)
    table = Table(table_name, spec.singular, _plural_wording(spec.plural, table_name, rng), columns)
    names = _names(spec.names, n_rows, rng)
    table.rows = [(i + 1, name, *(_attribute_value(a, rng) for a in chosen)) for i, name in enumerate(names)]
    cat_col = attr_cols[0]
    num_col = attr_cols[1] if nums else None
    return table, cat_col, num_col


def build_schema(domain: DomainSpec, rng: random.Random, features: frozenset[str] = frozenset()) -> SchemaInstance:
    """Draw one schema of ``domain``: shape, names, types and rows all come from ``rng``.

    Args:
        domain: the domain to draw from.
        rng: the schema's random stream; equal streams give equal schemas.
        features: any of ``shapes``, ``naming``, ``synonyms`` (:data:`FEATURES`); none = the classic corpus.

    Returns:
        The :class:`SchemaInstance`, rows included.

    Example:
        >>> from coderag.corpus.domains import DOMAINS
        >>> s = build_schema(DOMAINS[0], random.Random(0), frozenset({"shapes", "naming"}))
        >>> s.a.name == build_schema(DOMAINS[0], random.Random(0), frozenset({"shapes", "naming"})).a.name
        True
    """
    wide = "shapes" in features
    shape = rng.choices(SHAPES, weights=WIDE_SHAPE_WEIGHTS if wide else SHAPE_WEIGHTS)[0]
    types = rng.choice(TYPE_STYLES)
    id_style = rng.choice(("id", "entity_id"))
    c = b = None
    c_name = a_fk_c = b_name = b_cat = None
    if "c" in shape:
        c, _, _ = _entity_table(domain.c, types, rng, rng.randint(4, 5), id_style=id_style, extra_attrs=0,
                                generic=rng.randint(0, 2) if wide else 0)
        c_name = c.columns[1].name
    a, a_cat, a_num = _entity_table(domain.a, types, rng, rng.randint(6, 9), id_style=id_style,
                                    extra_attrs=rng.randint(0, 1), generic=rng.randint(2, 6) if wide else 0)
    if c is not None:
        a_fk_c = f"{snake(domain.c.singular)}_id"
        a.columns.append(Column(a_fk_c, types["int"], domain.c.singular, "fk"))
        a.foreign_keys.append((a_fk_c, c.name, c.pk))
        c_ids = c.values(c.pk)
        a.rows = [row + (rng.choice(c_ids),) for row in a.rows]
    if "b" in shape:
        b, b_cat, _ = _entity_table(domain.b, types, rng, rng.randint(4, 6), id_style=id_style,
                                    extra_attrs=rng.randint(0, 1), generic=rng.randint(1, 4) if wide else 0)
        b_name = b.columns[1].name
    f, f_roles = _fact_table(domain, types, rng, id_style, a, b, generic=rng.randint(1, 3) if wide else 0)
    roles = Roles(a_name=a.columns[1].name, a_cat=a_cat, a_num=a_num, b_name=b_name, b_cat=b_cat,
                  c_name=c_name, a_fk_c=a_fk_c, **f_roles)
    schema = SchemaInstance(domain=domain, a=a, b=b, c=c, f=f, roles=roles)
    if "synonyms" in features:
        for table in schema.tables:
            for col in table.columns:
                if col.kind in ("cat", "int", "real", "date") and rng.random() < 0.5:
                    col.label = indirect_label(col.label, rng)
    if "naming" in features:
        _apply_naming(schema, draw_naming_style(rng))
        schema.alias_joins = rng.random() < 0.6
    return schema


def _apply_naming(schema: SchemaInstance, style: NamingStyle) -> None:
    """Rename every table and column of ``schema`` in ``style``, keeping keys and roles consistent."""
    table_names = {t.name: style.table(t.name) for t in schema.tables}
    if len({n.lower() for n in table_names.values()}) < len(table_names):
        table_names = {n: n for n in table_names}
    column_names: dict[str, dict[str, str]] = {}
    for table in schema.tables:
        renamed: dict[str, str] = {}
        taken: set[str] = set()
        for col in table.columns:
            new = style.column(col.name)
            if new.lower() in taken:
                new = col.name if col.name.lower() not in taken else f"{col.name}_{len(taken)}"
            taken.add(new.lower())
            renamed[col.name] = new
            col.name = new
        column_names[table.name] = renamed
    for table in schema.tables:
        table.foreign_keys = [(column_names[table.name][col], table_names[ref], column_names[ref][ref_col])
                              for col, ref, ref_col in table.foreign_keys]
    r = schema.roles
    a, f = column_names[schema.a.name], column_names[schema.f.name]
    r.a_name, r.f_fk_a = a[r.a_name], f[r.f_fk_a]
    if r.a_fk_c is not None:
        r.a_fk_c = a[r.a_fk_c]
    if schema.b is not None:
        r.b_name, r.f_fk_b = column_names[schema.b.name][r.b_name], f[r.f_fk_b]
    if schema.c is not None:
        r.c_name = column_names[schema.c.name][r.c_name]
    for table in schema.tables:
        table.name = table_names[table.name]


def _fact_table(domain: DomainSpec, types, rng: random.Random, id_style: str, a: Table, b: Table | None,
                generic: int = 0):
    spec = domain.fact
    used: set[str] = set()
    pk = "id" if id_style == "id" else f"{snake(spec.singular)}_id"
    used.add(pk)
    fk_a = f"{snake(domain.a.singular)}_id"
    fk_b = f"{snake(domain.b.singular)}_id" if b is not None else None
    used.update(x for x in (fk_a, fk_b) if x)
    date = Column(_pick_name(spec.date_columns, used, rng), types["date"], spec.date_label, "date")
    measures = rng.sample(spec.measures, rng.randint(1, len(spec.measures)))
    measure_cols = [Column(_pick_name(m.names, used, rng), types[m.kind], m.label, m.kind) for m in measures]
    cat_spec = rng.choice(spec.attributes)
    cat = Column(_pick_name(cat_spec.names, used, rng), types["text"], cat_spec.label, "cat")
    columns = [Column(pk, types["int"], kind="pk"), Column(fk_a, types["int"], domain.a.singular, "fk")]
    foreign_keys = [(fk_a, a.name, a.pk)]
    if b is not None:
        columns.append(Column(fk_b, types["int"], domain.b.singular, "fk"))
        foreign_keys.append((fk_b, b.name, b.pk))
    columns += [date, *measure_cols, cat]
    extras = rng.sample(GENERIC_ATTRIBUTES, generic) if generic else []
    for spec_x in extras:
        sql_type = types["text"] if spec_x.kind == "cat" else types[spec_x.kind]
        columns.append(Column(_pick_name(spec_x.names, used, rng), sql_type, spec_x.label, spec_x.kind))
    table_name = _pick_name(spec.tables, {a.name, b.name if b else ""}, rng)
    table = Table(table_name, spec.singular, _plural_wording(spec.plural, table_name, rng), columns,
                  foreign_keys)
    # Facts reference only some of the main entities, so "which X have no Y" questions have answers.
    a_ids = a.values(a.pk)
    active = a_ids[: max(2, len(a_ids) - rng.randint(1, 2))]
    b_ids = b.values(b.pk) if b is not None else []
    for i in range(rng.randint(10, 16)):
        day = (DATE_START + dt.timedelta(days=rng.randrange(DATE_DAYS))).isoformat()
        row = [i + 1, rng.choice(active)] + ([rng.choice(b_ids)] if b is not None else [])
        row += [day, *(_number(m, rng) for m in measures), rng.choice(cat_spec.values)]
        row += [_attribute_value(x, rng) for x in extras]
        table.rows.append(tuple(row))
    return table, {"f_fk_a": fk_a, "f_fk_b": fk_b, "f_date": date, "f_measure": measure_cols[0], "f_cat": cat}

"""The vocabulary the builtin generator's domains are written in.

Column specs are compact strings ``"kind:name1|name2:label:values"`` where kind is ``cat`` (values: a
comma list), ``int`` or ``real`` (values: ``lo-hi``); several names let two schemas of one domain name
the same attribute differently.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_NAMES = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira",
               "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Victor")
LAST_NAMES = ("Silva", "Okafor", "Chen", "Novak", "Garcia", "O'Neil", "Haddad", "Kowalski", "Tanaka",
              "Dubois", "Mensah", "Rossi", "Ivanova", "Patel", "Larsen", "Moreau")
PEOPLE = "PEOPLE"


@dataclass(frozen=True)
class ColumnSpec:
    kind: str  # "cat" | "int" | "real"
    names: tuple[str, ...]
    label: str
    values: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0


def column(spec: str) -> ColumnSpec:
    """Parse ``"kind:name1|name2:label:values"`` into a :class:`ColumnSpec`."""
    kind, names, label, values = spec.split(":", 3)
    if kind == "cat":
        return ColumnSpec(kind, tuple(names.split("|")), label, tuple(values.split(",")))
    low, high = values.split("-")
    return ColumnSpec(kind, tuple(names.split("|")), label, low=float(low), high=float(high))


@dataclass(frozen=True)
class EntitySpec:
    singular: str
    plural: str
    tables: tuple[str, ...]
    name_columns: tuple[str, ...]
    names: tuple[str, ...] | str  # a pool of names, or PEOPLE for generated person names
    attributes: tuple[ColumnSpec, ...]


@dataclass(frozen=True)
class FactSpec:
    singular: str
    plural: str
    tables: tuple[str, ...]
    date_columns: tuple[str, ...]
    date_label: str
    measures: tuple[ColumnSpec, ...]
    attributes: tuple[ColumnSpec, ...]


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str
    a: EntitySpec  # main entity: every fact row references one
    b: EntitySpec  # second entity: facts reference it in 3- and 4-table shapes
    fact: FactSpec
    c: EntitySpec | None = None  # grouping entity referenced by ``a`` in 4-table shapes


def entity(singular, plural, tables, name_columns, names, *attrs) -> EntitySpec:
    pool = names if names == PEOPLE else tuple(names.split(","))
    return EntitySpec(singular, plural, tuple(tables.split("|")), tuple(name_columns.split("|")), pool,
                      tuple(column(a) for a in attrs))


def fact(singular, plural, tables, date_columns, date_label, measures, attrs) -> FactSpec:
    return FactSpec(singular, plural, tuple(tables.split("|")), tuple(date_columns.split("|")), date_label,
                    tuple(column(m) for m in measures), tuple(column(a) for a in attrs))


REGION = entity("region", "regions", "regions|territories|sales_regions", "region_name|name",
                "North,South,East,West,Central,Coastal,Highlands",
                "cat:country|nation:country:USA,Canada,Mexico,Brazil,Germany,India,Kenya")


def domain(name, description, a, b, f, c=REGION) -> DomainSpec:
    return DomainSpec(name, description, a, b, f, c)

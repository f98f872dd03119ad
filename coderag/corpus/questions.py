"""Question / gold-SQL templates over a :class:`~coderag.corpus.shapes.SchemaInstance`.

Every template is written once in terms of column roles (main entity ``a``, fact table ``f``, optional
second entity ``b`` and grouping entity ``c``) and phrased with the domain's own words, so a question
names the entities whose schema answers it. A template returns ``None`` when the schema's shape lacks
what it needs. Filter values and thresholds are drawn from the INSERTed rows so results are non-empty.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from coderag.corpus.shapes import SchemaInstance, sql_literal

ANALYTICS = "analytics and reporting"
RETRIEVAL = "data retrieval"


@dataclass(frozen=True)
class Draft:
    question: str
    sql: str
    complexity: str
    task_type: str
    explanation: str


Template = Callable[[SchemaInstance, random.Random], "Draft | None"]


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article."""
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _threshold(values: list, rng: random.Random) -> int | float:
    """A value strictly below the largest one, so ``> threshold`` keeps some rows."""
    ordered = sorted(set(values))
    x = ordered[rng.randrange(max(1, len(ordered) // 3), len(ordered)) - 1] if len(ordered) > 1 else ordered[0] - 1
    return math.floor(x) if isinstance(x, float) and x >= 10 else x


def _year(s: SchemaInstance, rng: random.Random) -> str:
    return rng.choice(sorted({d[:4] for d in s.f.values(s.roles.f_date.name)}))


def filter_by_category(s, rng):
    r, a = s.roles, s.a
    v = rng.choice(a.values(r.a_cat.name))
    q = rng.choice([f"List all {a.plural} whose {r.a_cat.label} is '{v}'.",
                    f"Which {a.plural} have {r.a_cat.label} '{v}'?"])
    sql = f"SELECT {r.a_name} FROM {a.name} WHERE {r.a_cat.name} = {sql_literal(v)};"
    return Draft(q, sql, "basic SQL", RETRIEVAL, f"Selects the {a.plural} from {a.name} whose {r.a_cat.name} equals {sql_literal(v)}.")


def count_above(s, rng):
    r, a = s.roles, s.a
    x = _threshold(a.values(r.a_num.name), rng)
    q = rng.choice([f"How many {a.plural} have {_a(r.a_num.label)} greater than {x}?",
                    f"Count the {a.plural} with {r.a_num.label} above {x}."])
    sql = f"SELECT COUNT(*) FROM {a.name} WHERE {r.a_num.name} > {x};"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Counts rows of {a.name} where {r.a_num.name} exceeds {x}.")


def top_n(s, rng):
    r, a = s.roles, s.a
    n = rng.randint(2, 4)
    q = rng.choice([f"Show the {n} {a.plural} with the highest {r.a_num.label}.",
                    f"What are the top {n} {a.plural} by {r.a_num.label}?"])
    sql = f"SELECT {r.a_name}, {r.a_num.name} FROM {a.name} ORDER BY {r.a_num.name} DESC LIMIT {n};"
    return Draft(q, sql, "basic SQL", RETRIEVAL, f"Orders {a.name} by {r.a_num.name} descending and keeps the first {n} rows.")


def facts_in_year(s, rng):
    r, f = s.roles, s.f
    y = _year(s, rng)
    q = rng.choice([f"List all {f.plural} from {y} with their {r.f_measure.label}.",
                    f"Which {f.plural} took place in {y}, and what was their {r.f_measure.label}?"])
    sql = (f"SELECT {f.pk}, {r.f_date.name}, {r.f_measure.name} FROM {f.name} "
           f"WHERE {r.f_date.name} BETWEEN '{y}-01-01' AND '{y}-12-31' ORDER BY {r.f_date.name};")
    return Draft(q, sql, "basic SQL", RETRIEVAL, f"Filters {f.name} to dates in {y} and orders them by {r.f_date.name}.")


def average_per_category(s, rng):
    r, f = s.roles, s.f
    q = rng.choice([f"What is the average {r.f_measure.label} of {f.plural} for each {r.f_cat.label}?",
                    f"Show the mean {r.f_measure.label} of {f.plural} grouped by {r.f_cat.label}."])
    sql = f"SELECT {r.f_cat.name}, AVG({r.f_measure.name}) FROM {f.name} GROUP BY {r.f_cat.name};"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Groups {f.name} by {r.f_cat.name} and averages {r.f_measure.name}.")


def total_in_year(s, rng):
    r, f = s.roles, s.f
    y = _year(s, rng)
    q = rng.choice([f"What was the total {r.f_measure.label} of all {f.plural} in {y}?",
                    f"Sum the {r.f_measure.label} across {f.plural} recorded in {y}."])
    sql = f"SELECT SUM({r.f_measure.name}) FROM {f.name} WHERE strftime('%Y', {r.f_date.name}) = '{y}';"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Sums {r.f_measure.name} over the {f.name} rows dated in {y}.")


def count_per_category(s, rng):
    r, a = s.roles, s.a
    q = rng.choice([f"How many {a.plural} are there for each {r.a_cat.label}?",
                    f"Count the {a.plural} per {r.a_cat.label}."])
    sql = f"SELECT {r.a_cat.name}, COUNT(*) FROM {a.name} GROUP BY {r.a_cat.name};"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Groups {a.name} by {r.a_cat.name} and counts each group.")


def categories_having(s, rng):
    r, a = s.roles, s.a
    top = max(Counter(a.values(r.a_cat.name)).values())
    if top < 2:
        return None
    k = rng.randint(1, top - 1)
    q = rng.choice([f"Which {r.a_cat.label} values are shared by more than {k} {a.plural}?",
                    f"List each {r.a_cat.label} that has more than {k} {a.plural}."])
    sql = f"SELECT {r.a_cat.name}, COUNT(*) FROM {a.name} GROUP BY {r.a_cat.name} HAVING COUNT(*) > {k};"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Counts {a.name} per {r.a_cat.name} and keeps groups larger than {k}.")


def min_max(s, rng):
    r, a = s.roles, s.a
    q = rng.choice([f"What are the lowest and highest {r.a_num.label} among {a.plural}?",
                    f"Find the minimum and maximum {r.a_num.label} of all {a.plural}."])
    sql = f"SELECT MIN({r.a_num.name}), MAX({r.a_num.name}) FROM {a.name};"
    return Draft(q, sql, "aggregation", ANALYTICS, f"Takes MIN and MAX of {r.a_num.name} over {a.name}.")


def _join_af(s) -> str:
    r = s.roles
    return f"{s.a.name} JOIN {s.f.name} ON {s.a.name}.{s.a.pk} = {s.f.name}.{r.f_fk_a}"


def total_per_entity(s, rng):
    r, a, f = s.roles, s.a, s.f
    q = rng.choice([f"What is the total {r.f_measure.label} of {f.plural} for each {a.singular}?",
                    f"For every {a.singular}, sum the {r.f_measure.label} of their {f.plural}."])
    sql = (f"SELECT {a.name}.{r.a_name}, SUM({f.name}.{r.f_measure.name}) FROM {_join_af(s)} "
           f"GROUP BY {a.name}.{r.a_name};")
    return Draft(q, sql, "single join", ANALYTICS, f"Joins {a.name} to {f.name} and sums {r.f_measure.name} per {a.singular}.")


def facts_of_category(s, rng):
    r, a, f = s.roles, s.a, s.f
    v = rng.choice(a.values(r.a_cat.name))
    q = rng.choice([f"List the {f.plural} of {a.plural} whose {r.a_cat.label} is '{v}', with their {r.f_measure.label}.",
                    f"Show the {r.f_measure.label} of every {f.singular} made by {a.plural} with {r.a_cat.label} '{v}'."])
    sql = (f"SELECT {a.name}.{r.a_name}, {f.name}.{r.f_measure.name} FROM {_join_af(s)} "
           f"WHERE {a.name}.{r.a_cat.name} = {sql_literal(v)};")
    return Draft(q, sql, "single join", RETRIEVAL, f"Joins {a.name} to {f.name} and keeps {a.plural} with {r.a_cat.name} = {sql_literal(v)}.")


def count_per_second_entity(s, rng):
    r, b, f = s.roles, s.b, s.f
    if b is None:
        return None
    q = rng.choice([f"How many {f.plural} are linked to each {b.singular}?",
                    f"Count the {f.plural} per {b.singular}."])
    sql = (f"SELECT {b.name}.{r.b_name}, COUNT({f.name}.{f.pk}) FROM {b.name} JOIN {f.name} "
           f"ON {b.name}.{b.pk} = {f.name}.{r.f_fk_b} GROUP BY {b.name}.{r.b_name};")
    return Draft(q, sql, "single join", ANALYTICS, f"Joins {b.name} to {f.name} and counts {f.plural} per {b.singular}.")


def average_for_second_category(s, rng):
    r, b, f = s.roles, s.b, s.f
    if b is None:
        return None
    v = rng.choice(b.values(r.b_cat.name))
    q = rng.choice([f"What is the average {r.f_measure.label} of {f.plural} involving {b.plural} whose {r.b_cat.label} is '{v}'?",
                    f"Average {r.f_measure.label} of {f.plural} for {b.plural} with {r.b_cat.label} '{v}'?"])
    sql = (f"SELECT AVG({f.name}.{r.f_measure.name}) FROM {f.name} JOIN {b.name} ON {f.name}.{r.f_fk_b} = "
           f"{b.name}.{b.pk} WHERE {b.name}.{r.b_cat.name} = {sql_literal(v)};")
    return Draft(q, sql, "single join", ANALYTICS, f"Joins {f.name} to {b.name}, filters {r.b_cat.name} = {sql_literal(v)} and averages {r.f_measure.name}.")


def three_table_average(s, rng):
    r, a, b, f = s.roles, s.a, s.b, s.f
    if b is None:
        return None
    v = rng.choice(a.values(r.a_cat.name))
    q = rng.choice([f"For {a.plural} with {r.a_cat.label} '{v}', what is the average {r.f_measure.label} of their {f.plural} per {b.singular}?",
                    f"Per {b.singular}, show the average {r.f_measure.label} of {f.plural} for {a.plural} whose {r.a_cat.label} is '{v}'."])
    sql = (f"SELECT {b.name}.{r.b_name}, AVG({f.name}.{r.f_measure.name}) FROM {_join_af(s)} JOIN {b.name} "
           f"ON {b.name}.{b.pk} = {f.name}.{r.f_fk_b} WHERE {a.name}.{r.a_cat.name} = {sql_literal(v)} "
           f"GROUP BY {b.name}.{r.b_name};")
    return Draft(q, sql, "multiple_joins", ANALYTICS, f"Joins {a.name}, {f.name} and {b.name}, filters on {r.a_cat.name} and averages {r.f_measure.name} per {b.singular}.")


def total_per_group(s, rng):
    r, a, c, f = s.roles, s.a, s.c, s.f
    if c is None:
        return None
    q = rng.choice([f"What is the total {r.f_measure.label} of {f.plural} in each {c.singular} of the {a.plural}?",
                    f"Break down the {r.f_measure.label} of {f.plural} by the {c.singular} of their {a.singular}."])
    sql = (f"SELECT {c.name}.{r.c_name}, SUM({f.name}.{r.f_measure.name}) FROM {c.name} JOIN {a.name} "
           f"ON {a.name}.{r.a_fk_c} = {c.name}.{c.pk} JOIN {f.name} ON {f.name}.{r.f_fk_a} = {a.name}.{a.pk} "
           f"GROUP BY {c.name}.{r.c_name};")
    return Draft(q, sql, "multiple_joins", ANALYTICS, f"Joins {c.name}, {a.name} and {f.name} and sums {r.f_measure.name} per {c.singular}.")


def count_per_group(s, rng):
    r, a, c = s.roles, s.a, s.c
    if c is None:
        return None
    q = rng.choice([f"How many {a.plural} are in each {c.singular}?", f"Count the {a.plural} per {c.singular}."])
    sql = (f"SELECT {c.name}.{r.c_name}, COUNT({a.name}.{a.pk}) FROM {c.name} JOIN {a.name} "
           f"ON {a.name}.{r.a_fk_c} = {c.name}.{c.pk} GROUP BY {c.name}.{r.c_name};")
    return Draft(q, sql, "single join", ANALYTICS, f"Joins {c.name} to {a.name} and counts {a.plural} per {c.singular}.")


def above_average(s, rng):
    r, a = s.roles, s.a
    q = rng.choice([f"Which {a.plural} have {_a(r.a_num.label)} above the average of all {a.plural}?",
                    f"List the {a.plural} whose {r.a_num.label} is higher than average."])
    sql = f"SELECT {r.a_name}, {r.a_num.name} FROM {a.name} WHERE {r.a_num.name} > (SELECT AVG({r.a_num.name}) FROM {a.name});"
    return Draft(q, sql, "subqueries", RETRIEVAL, f"Compares each {r.a_num.name} in {a.name} with the average computed by a subquery.")


def without_facts(s, rng):
    r, a, f = s.roles, s.a, s.f
    q = rng.choice([f"Which {a.plural} have no {f.plural} on record?",
                    f"List the {a.plural} that do not appear in any {f.singular}."])
    sql = f"SELECT {r.a_name} FROM {a.name} WHERE {a.pk} NOT IN (SELECT {r.f_fk_a} FROM {f.name});"
    return Draft(q, sql, "subqueries", RETRIEVAL, f"Keeps {a.plural} whose {a.pk} is absent from {f.name}.{r.f_fk_a}.")


def with_large_fact(s, rng):
    r, a, f = s.roles, s.a, s.f
    x = _threshold(f.values(r.f_measure.name), rng)
    q = rng.choice([f"Which {a.plural} have at least one {f.singular} with {r.f_measure.label} over {x}?",
                    f"List the {a.plural} that had {_a(f.singular)} whose {r.f_measure.label} exceeded {x}."])
    sql = (f"SELECT {r.a_name} FROM {a.name} WHERE {a.pk} IN "
           f"(SELECT {r.f_fk_a} FROM {f.name} WHERE {r.f_measure.name} > {x});")
    return Draft(q, sql, "subqueries", RETRIEVAL, f"Uses a subquery on {f.name} to find {a.plural} with {r.f_measure.name} above {x}.")


def rank_within_category(s, rng):
    r, a = s.roles, s.a
    q = rng.choice([f"Rank the {a.plural} by {r.a_num.label} within each {r.a_cat.label}.",
                    f"Within every {r.a_cat.label}, rank {a.plural} from highest to lowest {r.a_num.label}."])
    sql = (f"SELECT {r.a_name}, {r.a_cat.name}, {r.a_num.name}, RANK() OVER (PARTITION BY {r.a_cat.name} "
           f"ORDER BY {r.a_num.name} DESC) AS rank_in_group FROM {a.name};")
    return Draft(q, sql, "window functions", ANALYTICS, f"Applies RANK() partitioned by {r.a_cat.name} and ordered by {r.a_num.name}.")


def running_total(s, rng):
    r, f = s.roles, s.f
    q = rng.choice([f"Show the running total of {r.f_measure.label} over {f.plural} ordered by {r.f_date.label}.",
                    f"What is the cumulative {r.f_measure.label} of {f.plural} over time?"])
    sql = (f"SELECT {r.f_date.name}, {r.f_measure.name}, SUM({r.f_measure.name}) OVER (ORDER BY {r.f_date.name}, "
           f"{f.pk}) AS running_total FROM {f.name};")
    return Draft(q, sql, "window functions", ANALYTICS, f"Uses SUM() as a window over {f.name} ordered by {r.f_date.name}.")


def previous_value(s, rng):
    r, f = s.roles, s.f
    q = rng.choice([f"For each {f.singular}, show its {r.f_measure.label} next to that of the previous {f.singular} by {r.f_date.label}.",
                    f"Compare every {f.singular}'s {r.f_measure.label} with the one before it in time."])
    sql = (f"SELECT {f.pk}, {r.f_date.name}, {r.f_measure.name}, LAG({r.f_measure.name}) OVER (ORDER BY "
           f"{r.f_date.name}, {f.pk}) AS previous_value FROM {f.name};")
    return Draft(q, sql, "window functions", ANALYTICS, f"Uses LAG() over {f.name} ordered by {r.f_date.name} to fetch the previous {r.f_measure.name}.")


def top_entity_cte(s, rng):
    r, a, f = s.roles, s.a, s.f
    q = rng.choice([f"Which {a.singular} has the highest total {r.f_measure.label} across their {f.plural}?",
                    f"Find the {a.singular} with the largest combined {r.f_measure.label} of {f.plural}."])
    sql = (f"WITH totals AS (SELECT {r.f_fk_a}, SUM({r.f_measure.name}) AS total FROM {f.name} GROUP BY {r.f_fk_a}) "
           f"SELECT {a.name}.{r.a_name}, totals.total FROM totals JOIN {a.name} ON {a.name}.{a.pk} = totals.{r.f_fk_a} "
           f"ORDER BY totals.total DESC LIMIT 1;")
    return Draft(q, sql, "CTEs", ANALYTICS, f"A CTE sums {r.f_measure.name} per {a.singular}; the outer query joins {a.name} and keeps the top one.")


def union_of_filters(s, rng):
    r, a = s.roles, s.a
    v = rng.choice(a.values(r.a_cat.name))
    x = _threshold(a.values(r.a_num.name), rng)
    q = rng.choice([f"List the {a.plural} whose {r.a_cat.label} is '{v}' or whose {r.a_num.label} exceeds {x}.",
                    f"Which {a.plural} either have {r.a_cat.label} '{v}' or {_a(r.a_num.label)} above {x}?"])
    sql = (f"SELECT {r.a_name} FROM {a.name} WHERE {r.a_cat.name} = {sql_literal(v)} UNION "
           f"SELECT {r.a_name} FROM {a.name} WHERE {r.a_num.name} > {x};")
    return Draft(q, sql, "set operations", RETRIEVAL, f"Combines two filters on {a.name} with UNION.")


def monthly_counts(s, rng):
    r, f = s.roles, s.f
    y = _year(s, rng)
    q = rng.choice([f"How many {f.plural} were there in each month of {y}?",
                    f"Show the monthly number of {f.plural} during {y}."])
    sql = (f"SELECT strftime('%m', {r.f_date.name}) AS month, COUNT(*) FROM {f.name} "
           f"WHERE strftime('%Y', {r.f_date.name}) = '{y}' GROUP BY month;")
    return Draft(q, sql, "aggregation", ANALYTICS, f"Extracts the month of {r.f_date.name} for {y} and counts {f.plural} per month.")


TEMPLATES: tuple[Template, ...] = (
    filter_by_category, count_above, top_n, facts_in_year, average_per_category, total_in_year,
    count_per_category, categories_having, min_max, total_per_entity, facts_of_category,
    count_per_second_entity, average_for_second_category, three_table_average, total_per_group,
    count_per_group, above_average, without_facts, with_large_fact, rank_within_category, running_total,
    previous_value, top_entity_cte, union_of_filters, monthly_counts,
)

"""The builtin corpus: a procedural, seeded generator of gretel-format text-to-SQL records.

Schemas are drawn round-robin over the domains so every domain appears; each schema gets 4-6 questions
(as in gretel, several questions share one schema, which is why schema deduplication matters). Every
gold query is run on an in-memory SQLite database built from its ``sql_context`` while generating; a
template whose result would be empty is skipped in favour of another.
"""

from __future__ import annotations

import random
import sqlite3

from coderag.corpus.domains import DOMAINS
from coderag.corpus.questions import TEMPLATES
from coderag.corpus.shapes import build_schema
from coderag.errors import ConfigError

MIN_QUESTIONS, MAX_QUESTIONS = 4, 6


def generate_corpus(n_records: int = 2000, n_domains: int = 40, seed: int = 0) -> list[dict]:
    """Return ``n_records`` gretel-format records over ``n_domains`` domains, identical for equal seeds.

    Every record's ``sql`` runs on SQLite built from its ``sql_context`` and returns at least one row.

    Args:
        n_records: how many records (at least 1).
        n_domains: how many builtin domains to draw schemas from (1 to ``len(DOMAINS)``).
        seed: the generator seed.

    Returns:
        Record dicts with an ``id`` (from 1) and the gretel columns, in shuffled order.

    Raises:
        ConfigError: ``n_records`` or ``n_domains`` is out of range.

    Example:
        >>> records = generate_corpus(n_records=6, n_domains=2)
        >>> len(records), len({r["domain"] for r in records})
        (6, 2)
    """
    if n_records < 1:
        raise ConfigError(f"n_records must be at least 1, got {n_records}.")
    if not 1 <= n_domains <= len(DOMAINS):
        raise ConfigError(f"n_domains must be between 1 and {len(DOMAINS)}, got {n_domains}.")
    domains = DOMAINS[:n_domains]
    records: list[dict] = []
    schema_no = 0
    while len(records) < n_records:
        domain = domains[schema_no % n_domains]
        rng = random.Random(f"coderag-corpus:{seed}:{schema_no}")
        records.extend(_records_for_schema(domain, rng))
        schema_no += 1
    records = records[:n_records]
    random.Random(f"coderag-corpus-order:{seed}").shuffle(records)
    return [{"id": i + 1, **record} for i, record in enumerate(records)]


def _records_for_schema(domain, rng: random.Random) -> list[dict]:
    schema = build_schema(domain, rng)
    context = schema.sql_context()
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(context)
        wanted = rng.randint(MIN_QUESTIONS, MAX_QUESTIONS)
        out: list[dict] = []
        for template in rng.sample(TEMPLATES, len(TEMPLATES)):
            draft = template(schema, rng)
            if draft is None:
                continue
            # A failing gold query is a bug in a template: let it surface instead of skipping it.
            rows = conn.execute(draft.sql).fetchall()
            if not any(value is not None for row in rows for value in row):
                continue
            out.append({
                "domain": domain.name,
                "domain_description": domain.description,
                "sql_complexity": draft.complexity,
                "sql_task_type": draft.task_type,
                "sql_prompt": draft.question,
                "sql_context": context,
                "sql": draft.sql,
                "sql_explanation": draft.explanation,
            })
            if len(out) == wanted:
                break
        return out
    finally:
        conn.close()

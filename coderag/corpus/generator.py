"""The builtin corpus: a procedural, seeded generator of gretel-format text-to-SQL records.

Schemas are drawn round-robin over the domains so every domain appears; each schema gets 4-6 questions
(as in gretel, several questions share one schema, which is why schema deduplication matters). Every
gold query is run on an in-memory SQLite database built from its ``sql_context`` while generating; a
template whose result would be empty is skipped in favour of another.

``features`` (any of :data:`~coderag.corpus.shapes.FEATURES`; :data:`VARIED` is all of them, the
``builtin-varied`` corpus) widens the corpus: ``domains`` adds the domains of
:mod:`coderag.corpus.more_domains`, the others change how each schema is drawn (see
:mod:`coderag.corpus.shapes`). No features gives the classic corpus.
"""

from __future__ import annotations

import random
import sqlite3

from coderag.corpus.domains import DOMAINS
from coderag.corpus.more_domains import MORE_DOMAINS
from coderag.corpus.naming import alias_tables
from coderag.corpus.questions import TEMPLATES
from coderag.corpus.shapes import FEATURES, build_schema
from coderag.errors import ConfigError

MIN_QUESTIONS, MAX_QUESTIONS = 4, 6
CLASSIC_DOMAINS = 40
VARIED: frozenset[str] = frozenset(FEATURES)


def available_domains(features=frozenset()) -> tuple:
    """The domains a corpus with ``features`` draws from: the classic ones, plus more with ``domains``.

    Args:
        features: generator features (see :data:`~coderag.corpus.shapes.FEATURES`).

    Returns:
        A tuple of :class:`~coderag.corpus.domain_spec.DomainSpec`.

    Example:
        >>> len(available_domains()) < len(available_domains({"domains"}))
        True
    """
    return DOMAINS + MORE_DOMAINS if "domains" in features else DOMAINS


def generate_corpus(n_records: int = 2000, n_domains: int | None = None, seed: int = 0,
                    features=frozenset()) -> list[dict]:
    """Return ``n_records`` gretel-format records over ``n_domains`` domains, identical for equal seeds.

    Every record's ``sql`` runs on SQLite built from its ``sql_context`` and returns at least one row.

    Args:
        n_records: how many records (at least 1).
        n_domains: how many domains to draw schemas from (1 to ``len(available_domains(features))``);
            default 40 for the classic corpus, every available domain with the ``domains`` feature.
        seed: the generator seed.
        features: any of ``domains``, ``shapes``, ``naming``, ``synonyms`` (:data:`VARIED`: all).

    Returns:
        Record dicts with an ``id`` (from 1) and the gretel columns, in shuffled order.

    Raises:
        ConfigError: ``n_records`` or ``n_domains`` is out of range, or a feature is unknown.

    Example:
        >>> records = generate_corpus(n_records=6, n_domains=2)
        >>> len(records), len({r["domain"] for r in records})
        (6, 2)
    """
    features = frozenset(features)
    if features - VARIED:
        raise ConfigError(f"unknown corpus feature(s) {', '.join(sorted(features - VARIED))}; "
                          f"choose from {', '.join(FEATURES)}.")
    pool = available_domains(features)
    if n_domains is None:
        n_domains = len(pool) if "domains" in features else CLASSIC_DOMAINS
    if n_records < 1:
        raise ConfigError(f"n_records must be at least 1, got {n_records}.")
    if not 1 <= n_domains <= len(pool):
        raise ConfigError(f"n_domains must be between 1 and {len(pool)}, got {n_domains}.")
    domains = pool[:n_domains]
    records: list[dict] = []
    schema_no = 0
    while len(records) < n_records:
        domain = domains[schema_no % n_domains]
        rng = random.Random(f"coderag-corpus:{seed}:{schema_no}")
        records.extend(_records_for_schema(domain, rng, features))
        schema_no += 1
    records = records[:n_records]
    random.Random(f"coderag-corpus-order:{seed}").shuffle(records)
    return [{"id": i + 1, **record} for i, record in enumerate(records)]


def _records_for_schema(domain, rng: random.Random, features: frozenset[str]) -> list[dict]:
    schema = build_schema(domain, rng, features)
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
            sql = alias_tables(draft.sql) if schema.alias_joins else draft.sql
            # A failing gold query is a bug in a template: let it surface instead of skipping it.
            rows = conn.execute(sql).fetchall()
            if not any(value is not None for row in rows for value in row):
                continue
            out.append({
                "domain": domain.name,
                "domain_description": domain.description,
                "sql_complexity": draft.complexity,
                "sql_task_type": draft.task_type,
                "sql_prompt": draft.question,
                "sql_context": context,
                "sql": sql,
                "sql_explanation": draft.explanation,
            })
            if len(out) == wanted:
                break
        return out
    finally:
        conn.close()

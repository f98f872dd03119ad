"""The gretel record format (``gretelai/synthetic_text_to_sql``) and its validation."""

from __future__ import annotations

from collections.abc import Iterable

from coderag.errors import CorpusError

GRETEL_COLUMNS: tuple[str, ...] = (
    "id", "domain", "domain_description", "sql_complexity", "sql_task_type", "sql_prompt", "sql_context",
    "sql", "sql_explanation",
)


def missing_columns(columns: Iterable[str]) -> list[str]:
    """The gretel columns absent from ``columns``, in gretel order."""
    present = set(columns)
    return [c for c in GRETEL_COLUMNS if c not in present]


def require_columns(columns: Iterable[str], source: str) -> None:
    """Raise :class:`CorpusError` naming the missing gretel columns and the source they are missing from."""
    missing = missing_columns(columns)
    if missing:
        raise CorpusError(
            f"corpus {source} lacks the gretel column(s) {', '.join(missing)}: every record needs "
            f"{', '.join(GRETEL_COLUMNS)} (as in gretelai/synthetic_text_to_sql); add or rename them.")

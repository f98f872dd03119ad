"""Outside data stays outside: find evaluation questions or schemas inside training text.

Spider's questions and schemas are evaluation data only. :func:`find_outside_overlap` looks for them in
training texts (pair anchors, positives, negatives, corpus records) after normalising case, punctuation
and whitespace, so a copy that was re-cased or re-spaced is still found:

- a question of at least ``min_words`` words is leaked when its normalised text occurs inside a
  normalised training text (shorter ones, such as "How many employees are there?", are generic enough
  for a template to write them too, so they prove nothing);
- a table is leaked when a training ``CREATE TABLE`` has the same name and every one of its columns
  (tables of at least ``min_columns`` columns: a 3-column ``users`` table can arise by chance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from coderag.training.artifacts import TrainingDataError

_NON_WORD = re.compile(r"[^0-9a-z]+")
_CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([`\"\[]?[\w ]+?[`\"\]]?)\s*\((.*?)\)\s*;",
                     re.IGNORECASE | re.DOTALL)
_CONSTRAINT = re.compile(r"^(PRIMARY|FOREIGN|UNIQUE|CHECK|CONSTRAINT)\b", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lowercase words separated by single spaces: ``"How many  Singers?"`` -> ``"how many singers"``.

    Example:
        >>> normalize_text("What's the  NAME of T1?")
        'what s the name of t1'
    """
    return _NON_WORD.sub(" ", str(text).lower()).strip()


def _identifier(raw: str) -> str:
    return raw.strip().strip('`"[]').strip().lower()


def table_signatures(sql: str) -> list[tuple[str, frozenset[str]]]:
    """``(table name, column names)`` of every ``CREATE TABLE`` in ``sql``, lowercased and unquoted.

    Example:
        >>> table_signatures('CREATE TABLE "Singer" (id INT PRIMARY KEY, Name TEXT, PRIMARY KEY (id));')
        [('singer', frozenset({'id', 'name'}))]
    """
    out = []
    for name, body in _CREATE.findall(sql):
        columns = set()
        for part in re.split(r",(?![^()]*\))", body):  # commas outside DECIMAL(10,2) / FOREIGN KEY (a, b)
            part = part.strip()
            if not part or _CONSTRAINT.match(part):
                continue
            quoted = re.match(r'^("(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\])', part)
            columns.add(_identifier(quoted.group(1) if quoted else part.split()[0]))
        out.append((_identifier(name), frozenset(columns)))
    return out


@dataclass
class OutsideOverlap:
    """What of the outside data was found in the training texts (empty lists: nothing)."""

    questions: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.questions or self.tables)

    def describe(self, limit: int = 3) -> str:
        parts = []
        if self.questions:
            parts.append(f"{len(self.questions)} question(s), e.g. {self.questions[:limit]}")
        if self.tables:
            parts.append(f"{len(self.tables)} table(s), e.g. {self.tables[:limit]}")
        return "; ".join(parts) or "nothing"


def find_outside_overlap(training_texts: Iterable[str], questions: Iterable[str], schemas: Iterable[str], *,
                         min_words: int = 7, min_columns: int = 4) -> OutsideOverlap:
    """The outside ``questions`` and ``schemas`` tables that occur in ``training_texts``.

    Args:
        training_texts: every text training reads (anchors, positives, negatives, schema contexts).
        questions: outside questions (e.g. Spider dev ``question`` fields).
        schemas: outside schema texts holding ``CREATE TABLE`` statements.
        min_words: shortest question checked.
        min_columns: smallest outside table checked.

    Returns:
        An :class:`OutsideOverlap`; falsy when nothing leaked.

    Example:
        >>> bool(find_outside_overlap(["Q: how many singers from France do we have?"],
        ...                           ["How many singers from France do we have"], []))
        True
    """
    texts = list(training_texts)
    normalized = [normalize_text(t) for t in texts]
    # word-bounded search; normalised texts hold no newline, so a match never spans two texts
    blob = " " + " \n ".join(normalized) + " "
    leaked_questions = []
    for question in dict.fromkeys(questions):
        key = normalize_text(question)
        if len(key.split()) >= min_words and f" {key} " in blob:
            leaked_questions.append(question)
    trained_tables: dict[str, list[frozenset[str]]] = {}
    for text in dict.fromkeys(texts):
        if "create" in text.lower():
            for name, columns in table_signatures(text):
                trained_tables.setdefault(name, []).append(columns)
    leaked_tables = []
    for schema in schemas:
        for name, columns in table_signatures(schema):
            if len(columns) >= min_columns and any(columns <= seen for seen in trained_tables.get(name, [])):
                leaked_tables.append(f"{name}({', '.join(sorted(columns))})")
    return OutsideOverlap(leaked_questions, sorted(set(leaked_tables)))


def pair_texts(pairs) -> list[str]:
    """Every text column of a pairs dataset a model trains on: anchor, positive, negative_<i>."""
    columns = [c for c in pairs.column_names if c in ("anchor", "positive") or c.startswith("negative_")]
    return [text for c in columns for text in pairs[c]]


def check_no_outside_data(training_texts: Iterable[str], questions: Iterable[str], schemas: Iterable[str],
                          *, source: str = "the training pairs") -> None:
    """Raise :class:`TrainingDataError` when outside questions or schemas occur in ``training_texts``.

    Example:
        >>> check_no_outside_data(["how many orders"], ["Which singer is oldest?"], [])
    """
    overlap = find_outside_overlap(training_texts, questions, schemas)
    if overlap:
        raise TrainingDataError(f"{source} contain outside evaluation data ({overlap.describe()}): evaluation "
                                "questions and schemas must never be trained on; rebuild the pairs from the "
                                "synthetic corpus only.")

"""The text-to-SQL prompt: one template (``coderag/templates/text_to_sql.txt``) for every backend.

The template's sections: ``[system]``; one fixed demonstration (``[example_user]`` /
``[example_assistant]``), which is what makes a 135M-parameter model answer with a bare ```sql block
instead of prose; ``[user]`` (retrieved schemas plus question) and ``[user_no_schema]`` (the
no-retrieval baseline: the question alone, so nothing from the gold record leaks into it); ``[examples]``
(retrieved question -> SQL pairs of the training split, DAIL-SQL style) opens the user message when the
caller passes examples. It is short on
purpose: the offline LLM pays for every prompt token on two CPU cores.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from coderag.errors import QuestionError

TEMPLATE_FILE = "templates/text_to_sql.txt"
_SECTION = re.compile(r"^\[(\w+)\]\s*$", re.MULTILINE)
_SECTIONS = ("system", "example_user", "example_assistant", "user", "user_no_schema", "examples")


@lru_cache(maxsize=1)
def load_template() -> dict[str, string.Template]:
    """The template's sections by name, read once from the package data file.

    Returns:
        ``string.Template`` per section (``system``, ``example_user``, ``example_assistant``, ``user``,
        ``user_no_schema``, ``examples``).

    Raises:
        RuntimeError: the packaged template lacks a section.

    Example:
        >>> sorted(load_template())
        ['example_assistant', 'example_user', 'examples', 'system', 'user', 'user_no_schema']
    """
    text = resources.files("coderag").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = {name: string.Template(body.strip("\n")) for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    missing = [name for name in _SECTIONS if name not in sections]
    if missing:
        raise RuntimeError(f"{TEMPLATE_FILE} lacks the section(s) {', '.join(missing)}")
    return sections


def _example_pair(example: Any) -> tuple[str, str]:
    if isinstance(example, (tuple, list)) and len(example) == 2:
        question, sql = example
    else:
        question, sql = getattr(example, "question", None), getattr(example, "sql", None)
    if not isinstance(question, str) or not isinstance(sql, str):
        raise TypeError(f"an example needs a question and an SQL string, got {example!r}")
    return " ".join(question.split()), " ".join(sql.split())


def build_messages(question: str, schemas: list[str], dialect: str = "SQLite",
                   examples: Sequence[Any] = ()) -> list[dict[str, str]]:
    """OpenAI chat messages asking for one SELECT in ``dialect`` in a ```sql block.

    ``schemas`` are the retrieved CREATE TABLE snippets, best first; an empty list gives the
    no-retrieval baseline prompt. ``examples`` (retrieved question -> SQL pairs of the training split,
    most similar first) are listed before the tables, most similar last (nearest the question).
    Raises :class:`QuestionError` for an empty question.

    Args:
        question: the user's question.
        schemas: retrieved schema snippets, best first (may be empty).
        dialect: the database's SQL dialect as the system message names it (``SQLite``, ``PostgreSQL``,
            ``MariaDB``, ``MySQL``).
        examples: objects with ``question`` and ``sql`` (:class:`~coderag.retrieval.examples.Example`) or
            ``(question, sql)`` pairs; empty for none.

    Returns:
        System, demonstration (user + assistant) and user messages as ``{"role", "content"}`` dicts.

    Raises:
        QuestionError: the question is empty or not a string.

    Example:
        >>> [m["role"] for m in build_messages("How many singers?", ["CREATE TABLE singer (id INT);"])]
        ['system', 'user', 'assistant', 'user']
    """
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty: ask something about the data in plain words.")
    template = load_template()
    cleaned = [s.strip() for s in schemas if s and s.strip()]
    if cleaned:
        user = template["user"].safe_substitute(question=question.strip(), schemas="\n\n".join(cleaned))
    else:
        user = template["user_no_schema"].safe_substitute(question=question.strip())
    pairs = [_example_pair(e) for e in examples]
    if pairs:
        listed = "\n\n".join(f"Question: {q}\nSQL: {sql}" for q, sql in reversed(pairs))
        user = template["examples"].safe_substitute(examples=listed) + "\n\n" + user
    return [
        {"role": "system", "content": template["system"].safe_substitute(dialect=dialect)},
        {"role": "user", "content": template["example_user"].safe_substitute()},
        {"role": "assistant", "content": template["example_assistant"].safe_substitute()},
        {"role": "user", "content": user},
    ]

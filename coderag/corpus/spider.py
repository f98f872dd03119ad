"""Spider (Yu et al., 2018) in its own release layout, read into gretel-format records.

``root`` holds ``tables.json`` (schemas of every database), ``dev.json`` (and, in a full release,
``train_spider.json``) and ``database/<db_id>/<db_id>.sqlite``. Each question becomes a gretel record
whose ``domain`` is its ``db_id`` and whose ``sql_context`` is its database's CREATE TABLE statements
rendered from ``tables.json`` (types, primary and foreign keys). The rows live in the SQLite files, so
execution accuracy on Spider runs gold and predicted SQL on ``db_paths[db_id]``, not on the context.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from coderag.corpus.schemas import create_table_statement, quote_identifier  # noqa: F401 - re-exported
from coderag.errors import CorpusError

SPLIT_FILES = {"dev": ("dev.json",), "train": ("train_spider.json", "train_others.json")}
_TYPES = {"text": "TEXT", "number": "NUMERIC", "time": "DATETIME", "boolean": "BOOLEAN", "others": "TEXT"}



@dataclass
class SpiderData:
    """Spider questions as gretel records, the SQLite file of each database, and every schema."""

    records: list[dict]
    db_paths: dict[str, Path]  # only databases whose .sqlite file is present
    schemas: dict[str, str]  # db_id -> CREATE TABLE text, for every database in tables.json

    @property
    def all_schemas(self) -> list[str]:
        """Schema texts of every database, in tables.json order (the retrieval corpus)."""
        return list(self.schemas.values())


def render_schema(db: dict) -> str:
    """CREATE TABLE statements (types, primary keys, foreign keys) for one tables.json entry.

    Args:
        db: one database of Spider's ``tables.json`` (``table_names_original``, ``column_names_original``,
            ``column_types``, ``primary_keys``, ``foreign_keys``).

    Returns:
        One ``CREATE TABLE`` statement per table, newline-separated.

    Example:
        >>> render_schema({"table_names_original": ["singer"], "column_names_original": [[-1, "*"], [0, "id"]],
        ...                "column_types": ["text", "number"], "primary_keys": [1], "foreign_keys": []})
        'CREATE TABLE singer (id NUMERIC PRIMARY KEY);'
    """
    tables = db["table_names_original"]
    columns = db["column_names_original"]  # [table index, name]; entry 0 is (-1, "*")
    types = db["column_types"]
    primary = {c for pk in db["primary_keys"] for c in (pk if isinstance(pk, list) else [pk])}
    statements = []
    for t, table in enumerate(tables):
        if table.lower().startswith("sqlite_"):
            continue  # SQLite's own bookkeeping (sqlite_sequence), listed by tables.json for a few dbs
        ids = [i for i, (owner, _) in enumerate(columns) if owner == t]
        foreign = [(columns[src][1], tables[columns[dst][0]], columns[dst][1])
                   for src, dst in db["foreign_keys"] if columns[src][0] == t]
        statements.append(create_table_statement(
            table, [(columns[i][1], _TYPES.get(types[i], "TEXT")) for i in ids],
            [columns[i][1] for i in ids if i in primary], foreign))
    return "\n".join(statements)


def sql_complexity(sql: str) -> str:
    """A gretel-style complexity label for a Spider query, from its surface form.

    Args:
        sql: a Spider gold query.

    Returns:
        One of ``"set operations"``, ``"subqueries"``, ``"multiple_joins"``, ``"single join"``,
        ``"aggregation"``, ``"basic SQL"``.

    Example:
        >>> sql_complexity("SELECT count(*) FROM singer")
        'aggregation'
    """
    upper = " ".join(sql.upper().split())
    if re.search(r"\b(UNION|INTERSECT|EXCEPT)\b", upper):
        return "set operations"
    if upper.count("SELECT") > 1:
        return "subqueries"
    joins = upper.count(" JOIN ")
    if joins > 1:
        return "multiple_joins"
    if joins == 1:
        return "single join"
    if re.search(r"\b(COUNT|SUM|AVG|MIN|MAX)\s*\(|\bGROUP BY\b", upper):
        return "aggregation"
    return "basic SQL"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read Spider file {path}: {exc}; use an unmodified Spider release.") from exc


def load_spider(root: Path | str, split: str = "dev", *, questions_file: Path | str | None = None) -> SpiderData:
    """Read a Spider directory: ``split`` questions as gretel records, SQLite paths and all schemas.

    ``questions_file`` (a JSON list with ``db_id``, ``question``, ``query``) replaces the split's own file.

    Args:
        root: the unpacked Spider release (``tables.json``, ``dev.json``, ``database/``).
        split: ``"dev"`` or ``"train"``.
        questions_file: an optional questions file to read instead of the split's.

    Returns:
        A :class:`SpiderData` with the records, the present ``.sqlite`` paths and every database's schema.

    Raises:
        CorpusError: an unknown split, a missing or malformed file, or a question naming an unknown database.

    Example:
        >>> data = load_spider("../shared/datasets/spider", "dev")  # doctest: +SKIP
        >>> data.records[0]["domain"]  # doctest: +SKIP
        'concert_singer'
    """
    root = Path(root)
    if split not in SPLIT_FILES:
        raise CorpusError(f"unknown Spider split {split!r}: use one of {', '.join(SPLIT_FILES)}.")
    if not (root / "tables.json").is_file():
        raise CorpusError(f"{root} is not a Spider directory (no tables.json): point at the unpacked release.")
    dbs = _read_json(root / "tables.json")
    schemas = {db["db_id"]: render_schema(db) for db in dbs}
    db_paths = {db_id: p for db_id in schemas if (p := root / "database" / db_id / f"{db_id}.sqlite").is_file()}
    if questions_file is not None:
        files = [Path(questions_file)]
        if not files[0].is_file():
            raise CorpusError(f"questions file {files[0]} does not exist: pass a Spider-format JSON file.")
    else:
        files = [root / name for name in SPLIT_FILES[split] if (root / name).is_file()]
    if not files:
        raise CorpusError(f"{root} has no {SPLIT_FILES[split][0]}: the Spider {split} questions are missing.")
    examples = []
    for f in files:
        loaded = _read_json(f)
        if not isinstance(loaded, list):
            raise CorpusError(f"questions file {f.name} is not a JSON list of questions.")
        examples += loaded
    records = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or not all(isinstance(ex.get(key), str) for key in ("db_id", "question", "query")):
            raise CorpusError(f"Spider question {i} lacks a db_id, question or query string: use Spider's format.")
        db_id = ex["db_id"]
        if db_id not in schemas:
            raise CorpusError(f"Spider question {i} names database {db_id!r}, which tables.json lacks.")
        sql = ex["query"].strip()
        records.append({
            "id": f"spider-{split}-{i}",
            "domain": db_id,
            "domain_description": f"Spider database {db_id}",
            "sql_complexity": sql_complexity(sql),
            "sql_task_type": "analytics and reporting",
            "sql_prompt": ex["question"],
            "sql_context": schemas[db_id],
            "sql": sql,
            "sql_explanation": "",
        })
    return SpiderData(records=records, db_paths=db_paths, schemas=schemas)

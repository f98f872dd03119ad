"""Text-to-SQL corpora in the gretel format: generate, load, validate, deduplicate schemas."""

from coderag.corpus.generator import generate_corpus
from coderag.corpus.loading import load_corpus
from coderag.corpus.records import GRETEL_COLUMNS, missing_columns, require_columns
from coderag.corpus.schemas import SchemaCorpus, dedupe_schemas, normalize_schema, schema_only, split_statements

__all__ = [
    "GRETEL_COLUMNS", "SchemaCorpus", "dedupe_schemas", "generate_corpus", "load_corpus", "missing_columns",
    "normalize_schema", "require_columns", "schema_only", "split_statements",
]

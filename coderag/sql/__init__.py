"""SQL as text (extraction, parsing, normalisation), the read-only guard, and safe execution."""

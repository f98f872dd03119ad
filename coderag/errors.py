"""User-facing errors.

Every error a user can cause derives from :class:`CodeRAGError`; its message is one sentence that says
what was wrong and what to do. The CLI prints it on one line and exits non-zero; servers turn it into
an HTTP 4xx with a JSON body.
"""


class CodeRAGError(Exception):
    """Base class for errors caused by input, configuration or missing artifacts."""


class CorpusError(CodeRAGError):
    """A corpus source cannot be read or lacks the gretel columns."""


class SchemaIndexError(CodeRAGError):
    """An index directory is missing, corrupt or inconsistent with its manifest or encoder."""


class EncoderError(CodeRAGError):
    """An encoder cannot be loaded from the given name or path."""


class GenerationError(CodeRAGError):
    """The LLM backend failed or is unreachable."""


class GeneratorUnavailable(GenerationError):
    """The LLM endpoint cannot be reached (connection refused, timeout, 5xx)."""


class QuestionError(CodeRAGError):
    """A question is empty, too long or otherwise unusable."""


class ConfigError(CodeRAGError):
    """A setting has an invalid value."""

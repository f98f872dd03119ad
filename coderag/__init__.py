"""CodeRAG: retrieval-augmented Text-to-SQL.

The core package holds every stage as plain functions and small classes; the CLI, the KFP components
and the KServe models are thin shells around it.
"""

__version__ = "0.1.0"

"""Scoring: SQL metrics (Exact Match, Execution Accuracy), ranking metrics of retrieval, and reports."""

"""Execution-guided voting: sample several SQL candidates, run them, return the result most of them share.

The recipe of self-consistency for text-to-SQL: ``n`` replies are sampled at a temperature > 0; a
candidate whose reply holds no SQL, that does not parse or that the guard refuses is dropped, and so is
one that fails to execute; the survivors are grouped by their result set (compared as the evaluator
compares results: rows as a bag unless either query has ORDER BY, columns in any order; see
:func:`~coderag.evaluation.execution_match.results_match`), and the largest group wins. A tie between
groups goes to the one holding the candidate with the highest mean token log-probability when the
generator reports it, else to the group found first; the winner's SQL is that best candidate's.
Without a database to run on, candidates are grouped by their normalised SQL text instead.

:func:`sample_replies` / :func:`sample_many` get the candidates in as few calls as the generator allows
(``sample`` / ``sample_batch`` of the backends: one ``n=`` request to an OpenAI-compatible endpoint, one
batched decode of the local model), :func:`prepare_candidates` extracts and guards them,
:func:`run_candidates` executes them and :func:`vote` picks one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from coderag.config import MAX_CANDIDATES
from coderag.errors import GenerationError
from coderag.generation.llm import SampledReply
from coderag.sql.databases import transpile_sql
from coderag.sql.execution import SqlExecutionError
from coderag.sql.guard import GuardVerdict, sql_guard
from coderag.sql.text import extract_sql

DEFAULT_SAMPLING_TEMPERATURE = 0.7


@dataclass
class Candidate:
    """One sampled reply on its way through extraction, guard, execution and the vote.

    ``status`` is ``ok`` (executed), ``unexecuted`` (allowed, but there was no database),
    ``parse_failure`` (no SQL, or SQL that does not parse), ``guard_refused`` or ``execution_failure``.
    """

    reply: str
    sql: str
    status: str
    guard_reason: str = ""
    statement_type: str = ""
    mean_logprob: float | None = None
    rows: list[list[Any]] | None = None
    error: str = ""  # the database's message when execution failed
    votes: int = 0

    @property
    def survives(self) -> bool:
        """Whether the candidate takes part in the vote."""
        return self.status in ("ok", "unexecuted")

    def to_dict(self) -> dict[str, Any]:
        """The candidate as a result row records it (rows left out: the chosen answer carries its own)."""
        out = asdict(self)
        out.pop("rows")
        out.pop("reply")
        return out


@dataclass
class Vote:
    """The outcome of one vote: every candidate, the chosen one's index (None: none survived), its votes.

    ``fallback`` says what was answered instead when none survived (``"greedy"``: the single greedy reply,
    set by the caller that generated it); empty otherwise.
    """

    candidates: list[Candidate]
    chosen: int | None
    temperature: float
    fallback: str = ""

    @property
    def votes(self) -> int:
        """How many candidates share the chosen candidate's result."""
        return 0 if self.chosen is None else self.candidates[self.chosen].votes

    def to_dict(self) -> dict[str, Any]:
        """``{"n", "temperature", "chosen", "votes", "survivors", "fallback", "candidates": [...]}`` for answers
        and rows."""
        return {"n": len(self.candidates), "temperature": self.temperature, "chosen": self.chosen,
                "votes": self.votes, "survivors": sum(c.survives for c in self.candidates),
                "fallback": self.fallback, "candidates": [c.to_dict() for c in self.candidates]}


def check_n_candidates(n: Any) -> int:
    """``n`` as an int in 1..:data:`MAX_CANDIDATES`; :class:`~coderag.errors.GenerationError` otherwise."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
        raise GenerationError(f"n_candidates must be an integer between 1 and {MAX_CANDIDATES}, got {n!r}.")
    return n


def sample_replies(generator, messages: list[dict[str, str]], n: int, *, max_tokens: int,
                   temperature: float) -> list[SampledReply]:
    """``n`` sampled replies to one prompt, in as few generator calls as it allows.

    A generator with ``sample(messages, n=, max_tokens=, temperature=)`` (both backends) is called once;
    one with ``complete_batch`` gets the prompt ``n`` times in one batch; any other is called ``n`` times.

    Args:
        generator: the SQL generator.
        messages: the prompt.
        n: candidates wanted.
        max_tokens: budget per reply.
        temperature: sampling temperature.

    Returns:
        The replies (mean log-probability None where the generator gives none).

    Example:
        >>> class Fixed:
        ...     def complete(self, messages, *, max_tokens=256, temperature=0.0):
        ...         return "```sql\\nSELECT 1\\n```"
        >>> [r.text[-5:] for r in sample_replies(Fixed(), [{"role": "user", "content": "q"}], 2, max_tokens=8,
        ...                                      temperature=0.7)]
        ['1\\n```', '1\\n```']
    """
    return sample_many(generator, [messages], n, max_tokens=max_tokens, temperature=temperature)[0]


def sample_many(generator, conversations: Sequence[list[dict[str, str]]], n: int, *, max_tokens: int,
                temperature: float) -> list[list[SampledReply]]:
    """``n`` sampled replies per conversation: ``sample_batch`` (local model, all in batches), else
    ``sample`` per conversation (one ``n=`` request each), else ``complete_batch`` over the repeated
    conversations, else ``complete`` ``n`` times each.

    Args:
        generator: the SQL generator.
        conversations: the prompts.
        n: candidates per prompt.
        max_tokens: budget per reply.
        temperature: sampling temperature.

    Returns:
        Per conversation, its replies.
    """
    check_n_candidates(n)
    conversations = list(conversations)
    if callable(getattr(generator, "sample_batch", None)):
        return [list(replies) for replies in generator.sample_batch(conversations, n=n, max_tokens=max_tokens,
                                                                    temperature=temperature)]
    if callable(getattr(generator, "sample", None)):
        return [list(generator.sample(messages, n=n, max_tokens=max_tokens, temperature=temperature))
                for messages in conversations]
    if callable(getattr(generator, "complete_batch", None)):
        texts = list(generator.complete_batch([m for m in conversations for _ in range(n)], max_tokens=max_tokens,
                                              temperature=temperature))
        return [[SampledReply(t) for t in texts[i * n:(i + 1) * n]] for i in range(len(conversations))]
    return [[SampledReply(generator.complete(messages, max_tokens=max_tokens, temperature=temperature))
             for _ in range(n)] for messages in conversations]


def prepare_sql(reply: str, dialect: str = "sqlite", transpile: bool = False) -> tuple[str, GuardVerdict]:
    """The reply's SQL (transpiled from SQLite into ``dialect`` when asked) and the guard's verdict.

    Example:
        >>> sql, verdict = prepare_sql("```sql\\nSELECT 1\\n```")
        >>> sql, verdict.allowed
        ('SELECT 1', True)
    """
    sql = extract_sql(reply)
    if transpile and sql:
        try:
            sql = transpile_sql(sql, dialect)
        except SqlExecutionError as exc:
            return sql, GuardVerdict(False, f"refused: {exc}", "")
    return sql, sql_guard(sql, dialect)


def prepare_candidates(replies: Sequence[SampledReply | str], dialect: str = "sqlite",
                       transpile: bool = False) -> list[Candidate]:
    """Each reply's SQL through extraction and the guard (:func:`prepare_sql`); not executed yet.

    Example:
        >>> [c.status for c in prepare_candidates(["```sql\\nSELECT 1\\n```", "no sql", "DROP TABLE t"])]
        ['unexecuted', 'parse_failure', 'guard_refused']
    """
    candidates = []
    for reply in replies:
        text, logprob = (reply.text, reply.mean_logprob) if isinstance(reply, SampledReply) else (str(reply), None)
        sql, verdict = prepare_sql(text, dialect, transpile)
        status = "unexecuted" if verdict.allowed else "guard_refused" if verdict.statement_type else "parse_failure"
        candidates.append(Candidate(reply=text, sql=sql, status=status, guard_reason=verdict.reason,
                                    statement_type=verdict.statement_type, mean_logprob=logprob))
    return candidates


def run_candidates(candidates: list[Candidate], run_sql: Callable[[str], list[list[Any]]]) -> list[Candidate]:
    """Execute every allowed candidate with ``run_sql`` (identical SQL once); failures become
    ``execution_failure`` with the database's message. Returns ``candidates``, updated in place."""
    seen: dict[str, tuple[list[list[Any]] | None, str]] = {}
    for candidate in candidates:
        if candidate.status != "unexecuted":
            continue
        if candidate.sql not in seen:
            try:
                seen[candidate.sql] = ([list(row) for row in run_sql(candidate.sql)], "")
            except Exception as exc:  # noqa: BLE001 - any database failure drops the candidate
                seen[candidate.sql] = (None, str(exc) or type(exc).__name__)
        rows, error = seen[candidate.sql]
        if rows is None:
            candidate.status, candidate.error = "execution_failure", error
        else:
            candidate.status, candidate.rows = "ok", rows
    return candidates


def _same(a: Candidate, b: Candidate, dialect: str) -> bool:
    from coderag.evaluation.execution_match import gold_orders, results_match
    from coderag.sql.text import normalize_sql

    if a.status == "ok" and b.status == "ok":
        ordered = gold_orders(a.sql, dialect) or gold_orders(b.sql, dialect)
        return results_match(a.rows or [], b.rows or [], order_matters=ordered)
    if a.status == "unexecuted" and b.status == "unexecuted":
        try:
            return normalize_sql(a.sql, dialect) == normalize_sql(b.sql, dialect)
        except Exception:  # noqa: BLE001 - unparseable text: compare as written
            return a.sql.strip() == b.sql.strip()
    return False


def _logprob(candidate: Candidate) -> float:
    value = candidate.mean_logprob
    return value if value is not None and math.isfinite(value) else -math.inf


def vote(candidates: list[Candidate], *, dialect: str = "sqlite", temperature: float = 0.0) -> Vote:
    """Group the surviving candidates by result and choose one from the largest group.

    Ties between groups of the same size go to the group whose best candidate has the highest mean
    log-probability, then to the group found first; within the winning group the candidate with the
    highest mean log-probability (else the first) is chosen. Every candidate's ``votes`` is set to its
    group's size (0 when dropped).

    Args:
        candidates: prepared (and, with a database, executed) candidates.
        dialect: the SQL dialect (ORDER BY detection, SQL normalisation).
        temperature: recorded in the :class:`Vote`.

    Returns:
        The :class:`Vote` (``chosen`` None when no candidate survived).

    Example:
        >>> cs = [Candidate("", "SELECT 1", "ok", rows=[[1]]), Candidate("", "SELECT 2", "ok", rows=[[2]]),
        ...       Candidate("", "SELECT 1 + 0", "ok", rows=[[1]])]
        >>> vote(cs).chosen, vote(cs).votes
        (0, 2)
    """
    groups: list[list[int]] = []
    for i, candidate in enumerate(candidates):
        candidate.votes = 0
        if not candidate.survives:
            continue
        for group in groups:
            if _same(candidates[group[0]], candidate, dialect):
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        for i in group:
            candidates[i].votes = len(group)
    if not groups:
        return Vote(candidates, None, temperature)

    def best_of(group: list[int]) -> int:
        # max() keeps the first of equals, so without log-probabilities the first candidate wins
        return max(group, key=lambda i: _logprob(candidates[i]))

    winner = max(groups, key=lambda g: (len(g), _logprob(candidates[best_of(g)])))
    return Vote(candidates, best_of(winner), temperature)

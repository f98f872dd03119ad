"""Execution-guided voting (coderag.generation.voting) through answer_from_schemas, with scripted generators."""

from __future__ import annotations

import pytest

from coderag.errors import GenerationError
from coderag.generation.answer import answer_from_schemas
from coderag.generation.llm import SampledReply
from coderag.generation.prompting import build_messages
from coderag.generation.voting import Candidate, sample_many, vote

CONTEXT = "CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, 'y');"
SCHEMAS = ["CREATE TABLE t (a INT, b TEXT);"]


def _sql(text: str) -> str:
    return f"```sql\n{text}\n```"


class ScriptedSampler:
    """``sample`` answers the scripted (text, logprob) replies; ``complete`` answers ``greedy``; calls recorded."""

    def __init__(self, replies: list[tuple[str, float | None]], greedy: str = _sql("SELECT 1"), repair: str = ""):
        self.replies, self.greedy, self.repair = replies, greedy, repair
        self.calls: list[tuple[str, dict]] = []

    def sample(self, messages, *, n, max_tokens, temperature):
        self.calls.append(("sample", {"messages": messages, "n": n, "temperature": temperature}))
        return [SampledReply(text, logprob) for text, logprob in self.replies[:n]]

    def complete(self, messages, *, max_tokens=128, temperature=0.0):
        self.calls.append(("complete", {"messages": messages, "temperature": temperature}))
        return self.repair if len(messages) > 4 else self.greedy


def test_vote_returns_the_majority_result_and_drops_failing_candidates():
    replies = [
        (_sql("SELECT a FROM t WHERE a = 1"), None),
        (_sql("SELECT a FROM t WHERE b = 'y' ORDER BY a"), None),  # rows 2, 3 ...
        ("I cannot answer that.", None),                           # no SQL: dropped
        (_sql("DROP TABLE t"), None),                              # refused by the guard: dropped
        (_sql("SELECT c FROM t"), None),                           # fails to execute: dropped
        (_sql("SELECT a FROM t WHERE a >= 2 ORDER BY a"), None),   # ... the same rows by other SQL
        (_sql("SELECT a FROM t WHERE a > 2"), None),
    ]
    generator = ScriptedSampler(replies)
    answer = answer_from_schemas("Which a have b = y?", SCHEMAS, generator, sql_context=CONTEXT, n_candidates=7)
    assert [name for name, _ in generator.calls] == ["sample"]  # one call for all candidates, no repair
    assert generator.calls[0][1]["n"] == 7 and generator.calls[0][1]["temperature"] == 0.7
    assert answer.sql == "SELECT a FROM t WHERE b = 'y' ORDER BY a" and answer.rows == [[2], [3]]
    assert answer.allowed and answer.execution_error is None and not answer.repaired
    vote_ = answer.vote
    assert vote_["n"] == 7 and vote_["chosen"] == 1 and vote_["votes"] == 2 and vote_["survivors"] == 4
    assert [c["status"] for c in vote_["candidates"]] == ["ok", "ok", "parse_failure", "guard_refused",
                                                          "execution_failure", "ok", "ok"]
    assert [c["votes"] for c in vote_["candidates"]] == [1, 2, 0, 0, 0, 2, 1]
    assert "no such column" in vote_["candidates"][4]["error"]


def test_result_sets_compare_as_the_evaluator_does():
    """Row order counts only when a query has ORDER BY; column order never does."""
    replies = [
        (_sql("SELECT a FROM t ORDER BY a DESC"), None),
        (_sql("SELECT a FROM t ORDER BY a"), None),
        (_sql("SELECT a, b FROM t"), None),
        (_sql("SELECT b, a FROM t"), None),
        (_sql("SELECT a FROM t"), None),
    ]
    answer = answer_from_schemas("q?", SCHEMAS, ScriptedSampler(replies), sql_context=CONTEXT, n_candidates=5)
    # DESC differs from ascending order; ascending equals the unordered 1, 2, 3; the columns' order is free
    assert [c["votes"] for c in answer.vote["candidates"]] == [1, 2, 2, 2, 2]
    assert answer.sql == "SELECT a FROM t ORDER BY a"  # a tie of two groups of 2: the group found first


@pytest.mark.parametrize(("logprobs", "chosen"), [((None, None, None), 0), ((-0.9, -0.2, -0.5), 1),
                                                  ((-0.1, None, -0.5), 0)])
def test_ties_go_to_the_highest_mean_logprob_then_to_the_first(logprobs, chosen):
    sqls = ["SELECT a FROM t WHERE a = 1", "SELECT a FROM t WHERE a = 2", "SELECT a FROM t WHERE a = 3"]
    replies = [(_sql(sql), lp) for sql, lp in zip(sqls, logprobs, strict=True)]
    answer = answer_from_schemas("q?", SCHEMAS, ScriptedSampler(replies), sql_context=CONTEXT, n_candidates=3)
    assert answer.vote["chosen"] == chosen and answer.sql == sqls[chosen] and answer.vote["votes"] == 1


def test_within_the_winning_group_the_most_likely_candidate_is_answered():
    cs = [Candidate("", "SELECT 2", "ok", rows=[[2]], mean_logprob=-0.3),
          Candidate("", "SELECT 1", "ok", rows=[[1]], mean_logprob=-0.9),
          Candidate("", "SELECT 1 + 0", "ok", rows=[[1]], mean_logprob=-0.1)]
    result = vote(cs)
    assert result.chosen == 2 and result.votes == 2


def test_n_1_is_todays_single_greedy_call():
    generator = ScriptedSampler([], greedy=_sql("SELECT b FROM t WHERE a = 1"))
    answer = answer_from_schemas("What is b of a 1?", SCHEMAS, generator, sql_context=CONTEXT)
    assert generator.calls == [("complete", {"messages": build_messages("What is b of a 1?", SCHEMAS),
                                             "temperature": 0.0})]
    assert answer.vote is None and answer.examples == [] and answer.rows == [["x"]]
    assert answer.sql == "SELECT b FROM t WHERE a = 1" and answer.allowed


def test_when_no_candidate_survives_the_greedy_reply_is_answered():
    replies = [(_sql("SELECT nope FROM t"), None), (_sql("DELETE FROM t"), None)]
    generator = ScriptedSampler(replies, greedy=_sql("SELECT a FROM t WHERE b = 'x'"))
    answer = answer_from_schemas("q?", SCHEMAS, generator, sql_context=CONTEXT, n_candidates=2)
    assert answer.vote["chosen"] is None and answer.vote["survivors"] == 0 and answer.vote["fallback"] == "greedy"
    assert [call for call, _ in generator.calls] == ["sample", "complete"]
    assert generator.calls[-1][1]["temperature"] == 0.0
    assert answer.sql == "SELECT a FROM t WHERE b = 'x'" and answer.rows == [[1]] and not answer.repaired
    assert {"generate", "execute", "generate_greedy", "execute_greedy"} <= set(answer.timings_ms)


def test_a_failing_greedy_fallback_is_repaired_once():
    replies = [(_sql("SELECT nope FROM t"), None), (_sql("DELETE FROM t"), None)]
    generator = ScriptedSampler(replies, greedy=_sql("SELECT missing FROM t"), repair=_sql("SELECT a FROM t WHERE a = 3"))
    answer = answer_from_schemas("q?", SCHEMAS, generator, sql_context=CONTEXT, n_candidates=2)
    assert answer.vote["fallback"] == "greedy" and answer.repaired
    assert answer.sql == "SELECT a FROM t WHERE a = 3" and answer.rows == [[3]]
    assert "no such column: missing" in generator.calls[-1][1]["messages"][-1]["content"]


def test_a_surviving_candidate_wins_without_a_greedy_call():
    replies = [(_sql("SELECT nope FROM t"), None), (_sql("SELECT a FROM t WHERE a = 2"), None)]
    generator = ScriptedSampler(replies)
    answer = answer_from_schemas("q?", SCHEMAS, generator, sql_context=CONTEXT, n_candidates=2)
    assert [call for call, _ in generator.calls] == ["sample"]
    assert answer.vote["chosen"] == 1 and answer.vote["fallback"] == "" and answer.rows == [[2]]


def test_evaluation_answers_the_greedy_reply_where_no_candidate_survives():
    from coderag.evaluation.benchmark import evaluate_benchmark, load_gretel_benchmark

    records = [{"id": i, "domain": "d", "sql_prompt": f"Which a has b {b}?", "sql_context": CONTEXT,
                "sql": f"SELECT a FROM t WHERE b = '{b}'"} for i, b in enumerate(["x", "y"])]

    class Batched:
        """Every sampled candidate fails to run; the greedy reply of each prompt is its gold SQL."""

        def __init__(self):
            self.greedy_prompts = 0

        def sample_batch(self, conversations, *, n, max_tokens, temperature):
            return [[SampledReply(_sql("SELECT nope FROM t"), -1.0)] * n for _ in conversations]

        def complete_batch(self, conversations, *, max_tokens, temperature=0.0):
            assert temperature == 0.0
            self.greedy_prompts += len(conversations)
            wanted = ["x" if "b x?" in c[-1]["content"] else "y" for c in conversations]
            return [_sql(f"SELECT a FROM t WHERE b = '{b}'") for b in wanted]

    generator = Batched()
    result = evaluate_benchmark(load_gretel_benchmark(records), generator=generator, schemas="oracle",
                                n_candidates=3)
    assert generator.greedy_prompts == 2
    assert [row.ex for row in result.rows] == [True, True]
    assert all(row.vote["fallback"] == "greedy" and row.vote["survivors"] == 0 for row in result.rows)


def test_without_a_database_candidates_vote_by_normalised_sql():
    replies = [(_sql("SELECT a FROM t"), None), (_sql("select  a from T"), None), (_sql("SELECT b FROM t"), None)]
    answer = answer_from_schemas("q?", SCHEMAS, ScriptedSampler(replies), n_candidates=3)
    assert [c["status"] for c in answer.vote["candidates"]] == ["unexecuted"] * 3
    assert answer.vote["votes"] == 2 and answer.sql == "SELECT a FROM t" and answer.rows is None


def test_candidates_are_sampled_in_as_few_calls_as_the_generator_allows():
    class Batcher:
        def __init__(self):
            self.batches = []

        def complete_batch(self, conversations, *, max_tokens, temperature):
            self.batches.append((len(conversations), temperature))
            return [_sql(f"SELECT {i}") for i in range(len(conversations))]

    generator = Batcher()
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    replies = sample_many(generator, prompts, 3, max_tokens=16, temperature=0.5)
    assert generator.batches == [(6, 0.5)]  # both prompts, three times each, in one batch
    assert [[r.text for r in row] for row in replies] == [[_sql(f"SELECT {i}") for i in range(3)],
                                                          [_sql(f"SELECT {i}") for i in range(3, 6)]]
    with pytest.raises(GenerationError, match="between 1 and 16"):
        sample_many(generator, prompts, 17, max_tokens=16, temperature=0.5)


@pytest.mark.parametrize(("argv", "problem"), [
    (["ask", "--index", "idx", "--n-candidates", "0", "q?"], "invalid setting n_candidates"),
    (["ask", "--index", "idx", "--n-candidates", "17", "q?"], "invalid setting n_candidates"),
    (["ask", "--index", "idx", "--examples", "17", "q?"], "invalid setting examples"),
    (["evaluate", "--sampling-temperature", "0"], "invalid setting sampling_temperature"),
    (["run", "--examples", "-1"], "invalid setting examples"),
    (["index", "build", "--out", "idx", "--db", "sqlite:///x.db", "--examples", "2"], "cannot be combined with --db"),
])
def test_cli_flags_are_validated_in_one_line(argv, problem, capsys):
    from coderag.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err


def test_ask_with_examples_needs_an_index_that_holds_them(serving_index_dir, capsys):
    from coderag.cli import main

    assert main(["ask", "--index", str(serving_index_dir), "--examples", "2", "q?"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no question -> SQL examples" in err

"""Batched local generation: same replies as one-at-a-time greedy decoding, in the order given."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from coderag.errors import GenerationError
from coderag.generation.llm import (
    MAX_GROUP_REST,
    Completion,
    _batch_order,
    _ClosingFence,
    _cut_after_closing_fence,
    _shared_layout,
    _shared_prefix_length,
    complete_many,
)
from coderag.generation.prompting import build_messages
from coderag.sql.text import extract_sql

# Decoding five prompts one at a time as the reference takes 2-5 minutes of the 2-core CI box, which the
# default suite can no longer afford; run with -m slow.
pytestmark = pytest.mark.slow

PATIENTS = "CREATE TABLE patients (patient_id INTEGER, name TEXT, age INTEGER, ward TEXT);"
ORDERS = "CREATE TABLE orders (order_id INTEGER, customer TEXT, total REAL, city TEXT);"
# Different schemas and question lengths, so a batch pads and sorts; the first and third share their
# schema too, so they are grouped and encode it once.
CONVERSATIONS = [
    build_messages("How many patients are there?", [PATIENTS]),
    build_messages("What is the total of all orders placed by customers who live in the city of Oslo?", [ORDERS]),
    build_messages("List the names of patients older than 60.", [PATIENTS]),
    build_messages("Show the average order total per city.", [ORDERS, PATIENTS]),
    build_messages("How many orders are there?", []),
]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def one_at_a_time(local_llm) -> list[Completion]:
    """Each conversation generated alone with :meth:`generate_chat` (the reference)."""
    return [local_llm.generate_chat(messages, max_tokens=MAX_TOKENS) for messages in CONVERSATIONS]


@pytest.fixture(scope="module")
def batched(local_llm) -> list[Completion]:
    """All conversations through :meth:`generate_batch`, two rows per batch (three batches)."""
    return local_llm.generate_batch(CONVERSATIONS, max_tokens=MAX_TOKENS, batch_size=2)


def test_batch_matches_one_at_a_time_greedy_decoding_in_input_order(one_at_a_time, batched):
    assert len(batched) == len(CONVERSATIONS)
    for alone, together in zip(one_at_a_time, batched, strict=True):
        assert together.text == _cut_after_closing_fence(alone.text)
        assert extract_sql(together.text) == extract_sql(alone.text)
        assert together.prompt_tokens == alone.prompt_tokens
        assert together.completion_tokens == alone.completion_tokens
        assert together.finish_reason == alone.finish_reason


def test_complete_batch_is_independent_of_batch_size_order_and_prefix_sharing(local_llm, batched):
    expected = [c.text for c in batched]
    reversed_input = list(reversed(CONVERSATIONS))
    assert local_llm.complete_batch(reversed_input, max_tokens=MAX_TOKENS) == list(reversed(expected))
    local_llm.share_prompt_prefix = False
    try:
        assert local_llm.complete_batch(CONVERSATIONS, max_tokens=MAX_TOKENS, batch_size=5) == expected
    finally:
        local_llm.share_prompt_prefix = True


def test_a_model_that_cannot_prefill_a_cache_falls_back_to_whole_prompts(local_llm, batched, monkeypatch):
    def unsupported(layout):
        raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")

    monkeypatch.setattr(local_llm, "_prefill", unsupported)
    try:
        assert local_llm.complete_batch(CONVERSATIONS[:3], max_tokens=MAX_TOKENS) == [c.text for c in batched[:3]]
        assert local_llm.share_prompt_prefix is False
    finally:
        local_llm.share_prompt_prefix = True


def test_duplicate_conversations_get_the_same_reply(local_llm, batched):
    twice = local_llm.complete_batch([CONVERSATIONS[0], CONVERSATIONS[0]], max_tokens=MAX_TOKENS)
    assert twice == [batched[0].text, batched[0].text]


def test_replies_stop_at_the_closing_fence(batched):
    for completion in batched:
        if completion.text.count("```") >= 2:
            assert completion.text.endswith("```") and completion.finish_reason == "stop"


def test_empty_and_malformed_inputs(local_llm):
    assert local_llm.complete_batch([], max_tokens=8) == []
    assert local_llm.generate_batch([]) == []
    with pytest.raises(GenerationError, match="conversation 1"):
        local_llm.complete_batch([CONVERSATIONS[0], [{"role": "robot", "content": "hi"}]], max_tokens=8)
    with pytest.raises(GenerationError, match="conversation 0"):
        local_llm.complete_batch([[]], max_tokens=8)
    with pytest.raises(GenerationError):
        local_llm.complete_batch("not a list", max_tokens=8)
    with pytest.raises(GenerationError, match="max_tokens"):
        local_llm.complete_batch([CONVERSATIONS[0]], max_tokens=0)
    with pytest.raises(GenerationError, match="batch_size"):
        local_llm.complete_batch([CONVERSATIONS[0]], max_tokens=8, batch_size=0)


def test_batches_and_single_calls_can_share_the_generator_between_threads(local_llm):
    messages = CONVERSATIONS[:2]
    alone = [local_llm.complete(m, max_tokens=8) for m in messages]
    with ThreadPoolExecutor(max_workers=2) as pool:
        batch = pool.submit(local_llm.complete_batch, messages, max_tokens=8)
        single = pool.submit(local_llm.complete, messages[1], max_tokens=8)
        assert batch.result() == [_cut_after_closing_fence(a) for a in alone]
        assert single.result() == alone[1]


# --- helpers ---------------------------------------------------------------------------------------

def test_cut_after_closing_fence():
    assert _cut_after_closing_fence("```sql\nSELECT 1;\n```\nmore") == "```sql\nSELECT 1;\n```"
    assert _cut_after_closing_fence("```sql\nSELECT 1") == "```sql\nSELECT 1"
    assert _cut_after_closing_fence("no fence") == "no fence"


def test_shared_prefix_leaves_every_row_a_token():
    assert _shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert _shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert _shared_prefix_length([[7], [7]]) == 0
    assert _shared_prefix_length([[1, 2], [3, 4]]) == 0


def test_shared_layout_groups_rows_that_share_more_than_the_common_prefix():
    common, schema_a, schema_b = list(range(100, 120)), list(range(200, 240)), list(range(300, 330))
    prompts = [common + schema_a + [1, 2], common + schema_a + [3], common + schema_b + [4, 5], common + [6]]
    layout = _shared_layout(prompts)
    assert layout.common == common
    assert layout.row_group == [0, 0, 1, 2]
    assert layout.group_spans == [schema_a, schema_b + [4], []]  # a lone row caches all but its last token
    assert layout.row_shared == [60, 60, 51, 20]
    ids, mask = layout.cached_columns(pad_id=0)
    assert ids.shape == mask.shape == (4, 60)
    assert ids[2].tolist() == common + [0] * 9 + schema_b + [4] and mask[2].tolist() == [1] * 20 + [0] * 9 + [1] * 31
    # a row that would keep too many tokens of its own stays alone
    long_rest = common + schema_a + list(range(MAX_GROUP_REST + 1))
    assert _shared_layout([prompts[0], long_rest]).row_group == [0, 1]


def test_batch_order_puts_shared_prefixes_together_longest_first():
    common, schema_a, schema_b = list(range(100, 120)), list(range(200, 240)), list(range(300, 380))
    prompts = [common + schema_a + [1], common + schema_b + [2], common + [3], common + schema_a + [4, 4],
               common + schema_b + [5, 5, 5]]
    assert _batch_order(prompts) == [1, 4, 0, 3, 2]
    assert _batch_order([[1]]) == [0]


def test_closing_fence_is_judged_per_row(local_llm):
    import torch

    tokenizer = local_llm.tokenizer
    closed = tokenizer.encode("```sql\nSELECT 1;\n```", add_special_tokens=False)
    still_open = tokenizer.encode("```sql\nSELECT name FROM t", add_special_tokens=False)
    width = max(len(closed), len(still_open))
    rows = [[0] * (width - len(closed)) + closed, [0] * (width - len(still_open)) + still_open]
    criterion = _ClosingFence(tokenizer, prompt_length=0)
    assert criterion(torch.tensor(rows), None).tolist() == [True, False]
    assert criterion.stopped_at == [width, None]


# --- complete_many ---------------------------------------------------------------------------------

class _Echo:
    """A generator without batching; records the threads its calls ran on."""

    def __init__(self):
        self.threads: set[int] = set()

    def complete(self, messages, *, max_tokens=256, temperature=0.0):
        self.threads.add(threading.get_ident())
        return f"{messages[-1]['content']}:{max_tokens}"


class _Batcher(_Echo):
    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def complete_batch(self, conversations, *, max_tokens=256, temperature=0.0):
        self.batches.append(len(conversations))
        return [c[-1]["content"].upper() for c in conversations]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_complete_many_falls_back_to_complete_in_order():
    echo = _Echo()
    conversations = [_user(str(i)) for i in range(10)]
    assert complete_many(echo, conversations, max_tokens=5) == [f"{i}:5" for i in range(10)]
    assert echo.threads == {threading.get_ident()}  # an unknown generator is not assumed thread-safe
    threaded = _Echo()
    assert complete_many(threaded, conversations, max_tokens=5, max_workers=4) == [f"{i}:5" for i in range(10)]
    assert complete_many(echo, [], max_tokens=5) == []


def test_complete_many_uses_complete_batch_when_present():
    batcher = _Batcher()
    assert complete_many(batcher, [_user("a"), _user("b")], max_tokens=5) == ["A", "B"]
    assert batcher.batches == [2] and not batcher.threads


def test_complete_many_batches_the_real_local_model(local_llm, batched):
    assert complete_many(local_llm, CONVERSATIONS[:2], max_tokens=MAX_TOKENS) == [c.text for c in batched[:2]]

"""Retrieved question -> SQL examples (coderag.retrieval.examples): training split only, stored with the index."""

from __future__ import annotations

import json

import pytest

from coderag.errors import ConfigError, SchemaIndexError
from coderag.generation.answer import answer_question
from coderag.generation.prompting import build_messages
from coderag.retrieval.examples import EXAMPLES_FILE, ExampleIndex, retrieve_examples, training_examples
from coderag.retrieval.index import SchemaIndex


@pytest.fixture()
def split(training_records):
    train, held_out = training_examples(training_records, eval_fraction=0.34, seed=0)
    assert train and held_out
    return train, held_out


def test_prompt_carries_k_examples_and_no_held_out_question(encoder_model, split):
    train, held_out = split
    examples = ExampleIndex.build(encoder_model, train, held_out_domains={r["domain"] for r in held_out})
    held_questions = {r["sql_prompt"] for r in held_out}
    train_questions = {r["sql_prompt"]: r["sql"] for r in train}
    questions = [r["sql_prompt"] for r in held_out]
    for record, shots in zip(held_out, retrieve_examples(examples, encoder_model, questions, 3), strict=True):
        assert len(shots) == 3
        assert all(train_questions[e.question] == e.sql for e in shots)  # real training pairs, with their SQL
        assert [e.score for e in shots] == sorted((e.score for e in shots), reverse=True)
        user = build_messages(record["sql_prompt"], [record["sql_context"]], examples=shots)[-1]["content"]
        assert user.count("Question: ") == 4 and user.count("SQL: ") == 3  # 3 examples + the question asked
        for shot in shots:
            assert f"Question: {shot.question}\nSQL: {shot.sql}" in user
        leaked = [q for q in held_questions - {record["sql_prompt"]} if q in user]
        assert not leaked, f"held-out questions in the prompt: {leaked}"
    # The most similar example is the same question shape on another domain's table.
    first = retrieve_examples(examples, encoder_model, [held_out[0]["sql_prompt"]], 1)[0][0]
    assert first.domain not in {r["domain"] for r in held_out}


def test_a_held_out_record_is_refused_as_an_example(encoder_model, split):
    train, held_out = split
    with pytest.raises(ConfigError, match="held-out domain"):
        ExampleIndex.build(encoder_model, train + held_out[:1], held_out_domains={r["domain"] for r in held_out})


def test_examples_round_trip_with_the_index_and_its_manifest(encoder_model, split, tmp_path):
    train, held_out = split
    contexts = sorted({r["sql_context"] for r in train + held_out})
    index = SchemaIndex.build(encoder_model, contexts)
    index.examples = ExampleIndex.build(encoder_model, train, held_out_domains={r["domain"] for r in held_out})
    out = index.save(tmp_path / "index")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["examples"] == {"count": len(train), "dim": 384, "split": "train",
                                    "domains": len({r["domain"] for r in train}),
                                    "held_out_domains": sorted({r["domain"] for r in held_out})}
    assert set(manifest["files"]) == {"sql_rag_faiss_index.bin", "corpus_map.json", "examples_faiss_index.bin",
                                      EXAMPLES_FILE}
    loaded = SchemaIndex.load(out)
    assert loaded.examples.questions == index.examples.questions and loaded.examples.sqls == index.examples.sqls
    question = held_out[0]["sql_prompt"]
    assert retrieve_examples(loaded, encoder_model, [question], 2) == retrieve_examples(index, encoder_model,
                                                                                         [question], 2)
    # Saving again without examples drops them (and their files) atomically.
    loaded.examples = None
    again = SchemaIndex.load(loaded.save(out))
    assert again.examples is None and not (out / EXAMPLES_FILE).exists()
    with pytest.raises(ConfigError, match="holds no question -> SQL examples"):
        retrieve_examples(again, encoder_model, [question], 1)


def test_tampered_examples_fail_the_manifest_check(encoder_model, split, tmp_path):
    train, _ = split
    index = SchemaIndex.build(encoder_model, sorted({r["sql_context"] for r in train}))
    index.examples = ExampleIndex.build(encoder_model, train)
    out = index.save(tmp_path / "index")
    data = json.loads((out / EXAMPLES_FILE).read_text())
    data["sqls"][0] = "SELECT 'tampered'"
    (out / EXAMPLES_FILE).write_text(json.dumps(data))
    with pytest.raises(SchemaIndexError, match="examples.json does not match its manifest checksum"):
        SchemaIndex.load(out)


def test_answer_question_puts_retrieved_examples_in_the_prompt(encoder_model, split):
    train, held_out = split
    index = SchemaIndex.build(encoder_model, sorted({r["sql_context"] for r in train + held_out}))
    index.examples = ExampleIndex.build(encoder_model, train)

    class Recorder:
        def complete(self, messages, *, max_tokens=128, temperature=0.0):
            self.messages = messages
            return "```sql\nSELECT 1\n```"

    generator = Recorder()
    record = held_out[0]
    answer = answer_question(record["sql_prompt"], index=index, encoder_model=encoder_model, generator=generator,
                             k=1, examples=2)
    assert len(answer.examples) == 2 and all(e["question"] in generator.messages[-1]["content"]
                                             for e in answer.examples)
    without = answer_question(record["sql_prompt"], index=index, encoder_model=encoder_model, generator=generator,
                              k=1)
    assert without.examples == [] and "Similar questions" not in generator.messages[-1]["content"]

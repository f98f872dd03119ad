"""Generator SFT: the data it trains on (executing, train side only, inference prompts), answer-only labels,
settings validation, and (slow) a real LoRA run on SmolLM2 that lowers the loss and reloads, adapter and merged."""

from __future__ import annotations

import json

import pytest
import torch

from coderag.cli import main as cli_main
from coderag.corpus import schema_only
from coderag.errors import ConfigError, CorpusError, GenerationError
from coderag.generation.llm import LocalTransformersGenerator
from coderag.generation.prompting import build_messages
from coderag.sql.execution import run_query, sqlite_from_context
from coderag.training.generator_sft import (
    ADAPTER_CONFIG,
    IGNORE_INDEX,
    MANIFEST_FILE,
    REPORT_FILE,
    encode_example,
    finetune_generator,
    mean_answer_loss,
    train_generator,
)
from coderag.training.sft_data import (
    build_sft_examples,
    executing_records,
    prepare_sft_examples,
    retrieved_prompt_schemas,
)


def _broken(records: list[dict]) -> list[dict]:
    """Two records the SFT data must drop: SQL naming a missing column, and a write."""
    bad_column = dict(records[0], id=900, sql="SELECT no_such_column FROM orders;")
    write = dict(records[0], id=901, sql="DELETE FROM orders;")
    return [bad_column, write]


def test_examples_keep_executing_train_side_sql_in_the_inference_prompt(training_records):
    held_out = {"media", "energy"}
    examples, dropped = prepare_sft_examples(training_records + _broken(training_records),
                                             held_out_domains=held_out, prompt_schemas="gold")
    assert dropped == {"held_out_domain": 8, "execution_failed": 1, "guard_refused": 1}
    assert len(examples) == 16 and not {e.domain for e in examples} & held_out
    by_id = {str(r["id"]): r for r in training_records}
    for example in examples:
        record = by_id[example.record_id]
        # The very prompt the generator gets at inference, and an answer whose SQL runs on the record's database.
        assert example.messages == build_messages(record["sql_prompt"], [schema_only(record["sql_context"])])
        sql = example.answer.removeprefix("```sql\n").removesuffix("\n```")
        assert run_query(sqlite_from_context(record["sql_context"]), sql) == \
            run_query(sqlite_from_context(record["sql_context"]), record["sql"])


def test_half_the_prompts_carry_examples_of_other_domains_only(training_records, encoder_model):
    """--examples K in training: a seeded half of the prompts carry K examples, never of the record's own
    domain (as a held-out question's examples never are), the other half none; the SQL answers stay."""
    held_out = {"media", "energy"}
    examples, _ = prepare_sft_examples(training_records, held_out_domains=held_out, prompt_schemas="gold",
                                       encoder_model=encoder_model, examples=2)
    with_examples = [e for e in examples if "Similar questions" in e.messages[-1]["content"]]
    assert len(with_examples) == round(len(examples) / 2) == 8
    by_id = {str(r["id"]): r for r in training_records}
    pool = {r["sql_prompt"]: r for r in training_records if r["domain"] not in held_out}
    for example in with_examples:
        record = by_id[example.record_id]
        *shown, asked = [line.removeprefix("Question: ") for line in example.messages[-1]["content"].splitlines()
                         if line.startswith("Question: ")]  # the examples, then the question itself
        assert asked == record["sql_prompt"] and len(shown) == 2 and asked not in shown
        assert all(q in pool and pool[q]["domain"] != example.domain for q in shown)
    plain = [e for e in examples if e not in with_examples]
    assert all(e.messages == build_messages(by_id[e.record_id]["sql_prompt"],
                                            [schema_only(by_id[e.record_id]["sql_context"])]) for e in plain)
    again, _ = prepare_sft_examples(training_records, held_out_domains=held_out, prompt_schemas="gold",
                                    encoder_model=encoder_model, examples=2)
    assert [e.messages for e in again] == [e.messages for e in examples]  # seeded


def test_executing_records_reports_each_drop_reason():
    kept, dropped = executing_records([
        {"sql": "SELECT a FROM t", "sql_context": "CREATE TABLE t (a INT);"},
        {"sql": "SELECT b FROM t", "sql_context": "CREATE TABLE t (a INT);"},
        {"sql": "UPDATE t SET a = 1", "sql_context": "CREATE TABLE t (a INT);"},
        {"sql": "SELECT 1", "sql_context": "CREATE TABLE broken ("},
    ])
    assert len(kept) == 1 and dict(dropped) == {"execution_failed": 1, "guard_refused": 1, "context_failed": 1}
    with pytest.raises(CorpusError, match="no training record"):
        prepare_sft_examples([{"sql": "SELECT b FROM t", "sql_context": "CREATE TABLE t (a INT);", "domain": "x",
                               "sql_prompt": "q"}], prompt_schemas="gold")


def test_retrieved_prompts_always_hold_the_gold_schema(training_records, encoder_model):
    schemas = retrieved_prompt_schemas(training_records, encoder_model, k=2)
    assert all(len(row) == 2 for row in schemas)
    for record, row in zip(training_records, schemas, strict=True):
        assert schema_only(record["sql_context"]) in row


def test_labels_cover_the_answer_only(training_records, local_llm):
    tokenizer = local_llm.tokenizer
    example = build_sft_examples(training_records[:1], [[training_records[0]["sql_context"]]])[0]
    row = encode_example(tokenizer, example, max_seq_length=2048)
    prompt = local_llm._prompt_ids(example.messages)  # exactly what generation feeds
    assert row["input_ids"][:len(prompt)] == prompt
    assert row["labels"][:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer = row["labels"][len(prompt):]
    assert IGNORE_INDEX not in answer and answer == row["input_ids"][len(prompt):]
    assert tokenizer.decode(answer).startswith(example.answer) and tokenizer.eos_token_id in answer
    assert encode_example(tokenizer, example, max_seq_length=len(prompt)) is None  # too long: skipped


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "invalid setting batch_size"),
    (["--learning-rate", "-1"], "invalid setting learning_rate"),
    (["--device", "cuda", "--prompt-schemas", "gold"], "no CUDA GPU"),
])
def test_cli_refuses_bad_settings_in_one_line(tmp_path, capsys, flags, message):
    if message == "no CUDA GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = cli_main(["finetune-generator", "--output", str(tmp_path / "g"), "--n-records", "40", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_core_refuses_bad_training_settings(training_records, tmp_path):
    with pytest.raises(ConfigError, match="max_seq_length"):
        finetune_generator(training_records, tmp_path / "g", prompt_schemas="gold", max_seq_length=4)
    with pytest.raises(ConfigError, match="prompt_schemas"):
        prepare_sft_examples(training_records, prompt_schemas="oracle")
    with pytest.raises(CorpusError, match="no training examples"):
        train_generator([], tmp_path / "g")


def test_an_adapter_without_a_base_is_refused(tmp_path):
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(GenerationError, match="does not name its base model"):
        LocalTransformersGenerator(model_path=str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("merge", [False, True])
def test_sft_lowers_the_loss_and_the_saved_generator_reloads_and_answers(training_records, local_llm, tmp_path,
                                                                         merge):
    """A real LoRA run on SmolLM2 (CPU, a few short examples): ~1-3 min on 2 cores."""
    held_out = {"media", "energy", "sports"}
    examples, _ = prepare_sft_examples(training_records, held_out_domains=held_out, prompt_schemas="gold")
    examples = examples[:6]
    before = mean_answer_loss(local_llm, examples)
    out = tmp_path / "generator"
    report = train_generator(examples, out, max_steps=6, batch_size=3, learning_rate=2e-3, lora_r=8,
                             lora_alpha=16, merge=merge, device="cpu", show_progress=False)
    assert report["steps"] == 6 and report["examples"] == 6 and report["samples_per_s"] > 0
    assert (out / MANIFEST_FILE).is_file() and (out / REPORT_FILE).is_file()
    assert (out / ADAPTER_CONFIG).is_file() != merge and (out / "config.json").is_file() == merge
    tuned = LocalTransformersGenerator(model_path=str(out), max_new_tokens=48)
    after = mean_answer_loss(tuned, examples)
    assert after < 0.8 * before, (before, after)
    reply = tuned.complete(examples[0].messages, max_tokens=48)
    assert "SELECT" in reply.upper()


def test_evaluation_takes_examples_chosen_ahead(training_records):
    """The benchmark script retrieves examples on one machine and scores on another: the prompts carry them."""
    from coderag.evaluation.benchmark import evaluate_benchmark, load_gretel_benchmark

    questions = training_records[:2]
    seen: list[str] = []

    class Gold:
        def complete(self, messages, *, max_tokens=128, temperature=0.0):
            seen.append(messages[-1]["content"])
            record = next(r for r in questions if r["sql_prompt"] in messages[-1]["content"])
            return f"```sql\n{record['sql']}\n```"

    shots = [[("How many widgets are there?", "SELECT COUNT(*) FROM widgets")], []]
    result = evaluate_benchmark(load_gretel_benchmark(questions), generator=Gold(), prompt_examples=shots,
                                prompt_schemas=[[schema_only(r["sql_context"])] for r in questions])
    assert result.summary["ex"] == 1.0 and result.summary["examples"] == 1
    assert "SELECT COUNT(*) FROM widgets" in seen[0] and "widgets" not in seen[1]
    assert result.rows[0].examples == ["How many widgets are there?"] and result.rows[1].examples == []
    with pytest.raises(ConfigError, match="1 example lists for 2 questions"):
        evaluate_benchmark(load_gretel_benchmark(questions), generator=Gold(), prompt_examples=shots[:1],
                           prompt_schemas=[[schema_only(r["sql_context"])] for r in questions])

"""Spider is evaluation data only: none of its questions or schemas may reach the training pairs."""

from __future__ import annotations

import json

import pytest
from tooling import require_shared

from coderag.corpus import load_corpus
from coderag.corpus.spider import render_schema
from coderag.errors import CodeRAGError
from coderag.training.heldout import split_by_domain
from coderag.training.leakage import check_no_outside_data, find_outside_overlap, pair_texts
from coderag.training.synthesis import synthesize_pairs


@pytest.fixture(scope="module")
def spider():
    root = require_shared("datasets/spider", "dev.json")
    questions = [q["question"] for q in json.loads((root / "dev.json").read_text())]
    schemas = [render_schema(db) for db in json.loads((root / "tables.json").read_text())]
    return questions, schemas


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("builtin", limit=2000, seed=0)  # the laptop and full profiles' corpus


@pytest.fixture(scope="module")
def pairs(corpus, tmp_path_factory):
    train, _ = split_by_domain(corpus, 0.2, 0)
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    synthesize_pairs(train[:40], out, seed=0, show_progress=False)  # every category; synthesis costs per record
    from datasets import Dataset

    return Dataset.load_from_disk(str(out))


def test_no_spider_question_or_schema_in_the_synthetic_corpus_or_its_pairs(spider, corpus, pairs):
    questions, schemas = spider
    corpus_texts = [t for r in corpus for t in (r["sql_prompt"], r["sql_context"], r["sql"])]
    overlap = find_outside_overlap(corpus_texts + pair_texts(pairs), questions, schemas)
    assert not overlap, overlap.describe()


def test_the_check_finds_a_copied_question_or_table_however_it_is_cased_or_framed(spider, pairs):
    """The check can fail: one Spider question and one Spider table planted among real pairs are found."""
    questions, schemas = spider
    table = next(s for s in (line for schema in schemas for line in schema.splitlines()) if s.count(",") >= 5)
    planted = pair_texts(pairs) + [f"Write a SQL query to answer: {questions[7].upper()}  ",
                                   table.replace(" (", "  (").lower()]
    overlap = find_outside_overlap(planted, questions, schemas)
    assert overlap.questions == [questions[7]] and len(overlap.tables) == 1
    with pytest.raises(CodeRAGError, match="outside evaluation data"):
        check_no_outside_data(planted, questions, schemas)


def test_no_spider_question_or_schema_in_the_varied_corpus_or_its_pairs(spider, tmp_path):
    """The builtin-varied generator (more domains, Spider-like naming) is still synthetic data only."""
    questions, schemas = spider
    varied = load_corpus("builtin-varied", limit=3000, seed=0)
    out = tmp_path / "pairs"
    synthesize_pairs(varied[::75], out, seed=0, show_progress=False)
    from datasets import Dataset

    corpus_texts = [t for r in varied for t in (r["sql_prompt"], r["sql_context"], r["sql"])]
    overlap = find_outside_overlap(corpus_texts + pair_texts(Dataset.load_from_disk(str(out))), questions, schemas)
    assert not overlap, overlap.describe()

"""The tokenise-ahead encoder gives the vectors plain ``encode`` gives: real MiniLM, real worker processes."""

from __future__ import annotations

import numpy as np
import pytest

from coderag.errors import ConfigError
from coderag.retrieval import ahead_encoder
from coderag.retrieval.ahead_encoder import encode_ahead, iter_encoded_windows
from coderag.retrieval.encoder import encode

# Texts the word-cached shortcut must hand to the Rust tokenizer (accents, CJK, a deleted control
# character), or truncate (longer than MiniLM's 256 tokens), next to ordinary schemas and questions.
_EDGE_TEXTS = [
    "Ünïcödé café naïve résumé 東京 schema",
    "tab\tand\nnewline\x0bvertical\x01control",
    "x " * 600,
    "a" * 300,
    "How many heads of the departments are older than 56 ?",
    "SELECT COUNT(*) FROM head WHERE age > 56; -- what's `this`?",
]


@pytest.fixture(scope="module")
def texts(schema_snippets):
    snippets, _ = schema_snippets
    return snippets[::12] + _EDGE_TEXTS  # 20 schemas of varied length + the edge cases


def test_tokens_equal_sentence_transformers_preprocess(encoder_model, texts):
    ahead_encoder._init_worker(ahead_encoder._tokenizer_spec(encoder_model))
    assert ahead_encoder._WORKER_TOKENIZER.fast is True
    ids, lengths = ahead_encoder._tokenise(texts)
    reference = encoder_model.preprocess(texts)
    expected_lengths = reference["attention_mask"].sum(1).numpy()
    assert lengths.tolist() == expected_lengths.tolist()
    assert max(lengths) == 256  # the long texts are truncated like sentence-transformers truncates them
    assert ids.shape == (len(texts), 256)
    for row, length in enumerate(lengths):
        assert ids[row, :length].tolist() == reference["input_ids"][row, :length].tolist()
        assert not ids[row, length:].any()  # right-padded with MiniLM's pad id 0


def test_inline_vectors_equal_plain_encode(encoder_model, texts):
    expected = encode(encoder_model, texts, batch_size=64)
    got = encode_ahead(encoder_model, texts, workers=0, batch_size=8, window=10)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_worker_processes_give_the_same_vectors(encoder_model, texts):
    inline = encode_ahead(encoder_model, texts, workers=0, batch_size=8)
    pooled = encode_ahead(encoder_model, texts, workers=2, batch_size=8)
    np.testing.assert_array_equal(pooled, inline)


def test_windows_come_in_corpus_order_and_cover_every_text(encoder_model, texts):
    windows = list(iter_encoded_windows(encoder_model, texts, workers=0, batch_size=4, window=10))
    assert [start for start, _ in windows] == [0, 10, 20]
    assert [len(vectors) for _, vectors in windows] == [10, 10, 6]


def test_bfloat16_stays_within_half_precision_tolerance(encoder_model, texts):
    expected = encode(encoder_model, texts, batch_size=64)
    got = encode_ahead(encoder_model, texts, workers=0, batch_size=16, dtype="bfloat16")
    # bf16 keeps 8 mantissa bits: cosine to the fp32 vectors stays close to 1.
    assert float((got * expected).sum(1).min()) > 0.99


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch size must be an integer >= 1, got 0"),
    ({"workers": -1}, "workers must be an integer >= 0, got -1"),
    ({"window": True}, "window must be an integer >= 1, got True"),
    ({"dtype": "int8"}, "dtype must be one of float16, bfloat16, float32, got 'int8'"),
])
def test_bad_arguments_are_one_sentence(encoder_model, kwargs, message):
    with pytest.raises(ConfigError) as excinfo:
        encode_ahead(encoder_model, ["CREATE TABLE a (x INT);"], **kwargs)
    assert str(excinfo.value) == message


def test_single_string_and_non_strings_are_refused(encoder_model):
    with pytest.raises(ConfigError) as excinfo:
        encode_ahead(encoder_model, "CREATE TABLE a (x INT);")
    assert str(excinfo.value) == "encode expects a list of texts, not a single string: wrap it in a list"
    with pytest.raises(ConfigError) as excinfo:
        encode_ahead(encoder_model, ["ok", 3])
    assert str(excinfo.value) == "text 1 to encode is a int, not a string: pass strings only"


def test_no_texts_give_an_empty_array(encoder_model):
    assert encode_ahead(encoder_model, [], workers=0).shape == (0, 384)


@pytest.mark.gpu
def test_cuda_fp16_vectors_match_encode(encoder_model, texts):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    expected = encode(encoder_model, texts, batch_size=64)
    got = encode_ahead(encoder_model, texts, device="cuda", workers=2, batch_size=8)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)

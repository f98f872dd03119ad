"""Bulk embedding at accelerator pace: tokenise ahead in worker processes, length-sorted batches, fp16.

``SentenceTransformer.encode`` tokenises each batch on the calling thread, pads it to its longest text and
waits for the GPU before tokenising the next, so on an H100 MiniLM runs at a few percent of what its
forward pass can do. :func:`iter_encoded_windows` instead

- cuts the texts into *windows* (``window`` texts, in corpus order) and sorts each window by length, so a
  batch holds texts of about the same length and little padding;
- tokenises batches in ``workers`` DataLoader worker processes with the model's own fast tokenizer (the
  Rust ``tokenizers`` object the Hugging Face wrapper drives; for BERT WordPiece tokenizers, ASCII text
  takes an exact word-cached shortcut), ``prefetch`` batches per worker ahead of the accelerator;
- copies each batch through pinned memory, runs the model in ``dtype`` (fp16 on CUDA by default) and
  scatters the unit-length embeddings back to corpus order;
- yields each window as float32 rows, so a caller can add it to FAISS and drop it: no second float32 copy
  of the whole corpus is ever held.

The tokens are the ones ``SentenceTransformer.preprocess`` makes (same truncation, right padding), so the
vectors equal ``encode``'s to the tolerance of ``dtype`` (``tests/test_ahead_encoder.py`` checks it).

Workers are forked, so they inherit the texts instead of receiving them pickled; they never touch CUDA,
which keeps forking a parent that holds a CUDA context safe.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from coderag.errors import ConfigError
from coderag.retrieval.encoder import encoder_dim, validate_texts

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# Padding to a multiple of 8 keeps fp16 matrix shapes on tensor-core tiles.
_PAD_MULTIPLE = 8
_WORKER_TOKENIZER: Any = None


def _tokenizer_spec(model: SentenceTransformer) -> dict[str, Any]:
    """What a worker needs to rebuild the model's tokenizer exactly as ``preprocess`` configures it."""
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            "the tokenise-ahead encoder needs a model with a fast (Rust) tokenizer: use plain `encode` "
            "(omit --device cuda) for this model"
        )
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ConfigError("the tokenise-ahead encoder needs right padding: use plain `encode` for this model")
    max_length = int(model.max_seq_length or tokenizer.model_max_length)
    return {
        "json": backend.to_str(),
        "max_length": max_length,
        "pad_id": int(tokenizer.pad_token_id or 0),
    }


def _init_worker(spec: dict[str, Any]) -> None:
    # One process per core already; the tokenizer's own thread pool would only oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    from tokenizers import Tokenizer

    global _WORKER_TOKENIZER
    tokenizer = Tokenizer.from_str(spec["json"])
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=spec["max_length"], strategy="longest_first")
    _WORKER_TOKENIZER = _BatchTokenizer(tokenizer, spec)


_BERT_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# ASCII control characters BERT's normaliser deletes (tab, newline and carriage return are whitespace).
_BERT_DELETED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PROBES = ("CREATE TABLE t_1 (a INT, b_c TEXT);", "How many heads of departments are older than 56?",
           "SELECT MAX(x) FROM y WHERE z = 'A-b' AND w >= 3.5;", "  spaces\tand\nnewlines  ", "")


class _BatchTokenizer:
    """Token ids of a batch, as the model's fast tokenizer (no padding, truncation on) would give them.

    For lowercasing BERT WordPiece tokenizers (MiniLM's), ASCII text takes a shortcut that gives the same
    ids about eight times faster: the Rust normaliser tracks character offsets nobody reads here, and
    schema snippets repeat a small vocabulary of identifiers, so each word's pieces are cached. Text that
    is not plain ASCII goes through the tokenizer itself. The shortcut is checked against the tokenizer
    on probe strings when the worker starts and switched off when they differ.
    """

    def __init__(self, tokenizer: Any, spec: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.max_length = spec["max_length"]
        self.pad_id = spec["pad_id"]
        self.cache: dict[str, list[int]] = {}
        normalizer, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
        specials = tokenizer.encode("").ids
        self.fast = (
            type(normalizer).__name__ == "BertNormalizer" and bool(getattr(normalizer, "lowercase", False))
            and type(pre).__name__ == "BertPreTokenizer" and type(tokenizer.model).__name__ == "WordPiece"
            and len(specials) == 2 and self.max_length > 2
        )
        if self.fast:
            self.prefix, self.suffix = specials[:1], specials[1:]
            self.fast = self.encode(list(_PROBES)) == [e.ids for e in tokenizer.encode_batch(list(_PROBES))]

    def _fast_ids(self, text: str) -> list[int]:
        ids = list(self.prefix)
        cache, model = self.cache, self.tokenizer.model
        for word in _BERT_WORD.findall(text.lower()):
            pieces = cache.get(word)
            if pieces is None:
                pieces = cache[word] = [token.id for token in model.tokenize(word)]
            ids.extend(pieces)
        del ids[self.max_length - len(self.suffix):]
        ids.extend(self.suffix)
        return ids

    def encode(self, texts: list[str]) -> list[list[int]]:
        if not self.fast:
            return [e.ids for e in self.tokenizer.encode_batch(texts)]
        out: list[Any] = [None] * len(texts)
        slow = []
        for i, text in enumerate(texts):
            if text.isascii() and not _BERT_DELETED.search(text):
                out[i] = self._fast_ids(text)
            else:
                slow.append(i)
        if slow:
            for i, encoding in zip(slow, self.tokenizer.encode_batch([texts[i] for i in slow])):
                out[i] = encoding.ids
        return out


def _tokenise(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (batch, seq) int32 and true lengths (batch,) int32 for one batch, right-padded."""
    rows = _WORKER_TOKENIZER.encode(texts)
    lengths = np.array([len(r) for r in rows], dtype=np.int32)  # (batch,)
    width = -(-int(lengths.max()) // _PAD_MULTIPLE) * _PAD_MULTIPLE
    ids = np.full((len(rows), width), _WORKER_TOKENIZER.pad_id, dtype=np.int32)  # (batch, seq)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    return ids, lengths


class _TextBatches:
    """Map-style dataset over the texts; a DataLoader's batch sampler hands each worker one batch's row ids."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, row: int) -> tuple[int, str]:
        return row, self.texts[row]


class _Collate:
    """Tokenise one batch inside a DataLoader worker: (row ids, token ids, lengths) as tensors."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def __call__(self, items: list[tuple[int, str]]) -> tuple[Any, Any, Any]:
        import torch

        if _WORKER_TOKENIZER is None:
            _init_worker(self.spec)
        ids, lengths = _tokenise([text for _, text in items])
        rows = np.fromiter((row for row, _ in items), dtype=np.int64, count=len(items))
        return torch.from_numpy(rows), torch.from_numpy(ids), torch.from_numpy(lengths)


def _loader(texts: list[str], spec: dict[str, Any], plan: list[tuple[int, np.ndarray]], workers: int,
            prefetch: int, pin: bool) -> Any:
    """A DataLoader yielding ``(rows, ids, lengths)`` tensors for the batches of ``plan``, in order."""
    import torch

    # A DataLoader gives the pieces this needs, well tested: workers that inherit the texts (fork, no
    # pickling of the corpus), tensors handed back through shared memory, a pinning thread, bounded
    # read-ahead. Workers never touch CUDA, so forking a parent that holds a CUDA context is safe.
    return torch.utils.data.DataLoader(
        _TextBatches(texts), batch_sampler=[rows.tolist() for _, rows in plan], collate_fn=_Collate(spec),
        num_workers=workers, pin_memory=pin, prefetch_factor=prefetch if workers else None,
        multiprocessing_context="fork" if workers else None)


def _batches(n: int, lengths: Sequence[int], window: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(window start, row ids of one batch) in the order they are encoded: windows in order, each by length."""
    for start in range(0, n, window):
        stop = min(start + window, n)
        # Longest first: the largest activations are allocated once, at the start of the window.
        order = start + np.argsort(-np.asarray(lengths[start:stop]), kind="stable")
        for b in range(0, len(order), batch_size):
            yield start, order[b:b + batch_size]


def iter_encoded_windows(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    device: str | None = None,
    batch_size: int = 512,
    workers: int | None = None,
    window: int = 65536,
    prefetch: int | None = None,
    dtype: str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Embed ``texts`` window by window; yields ``(start, vectors)`` with vectors for ``texts[start:start+n]``.

    Vectors are float32, L2-normalised, shape (n, dim), in corpus order; windows come in order and cover
    every text once.

    Args:
        model: a loaded sentence-transformers model with a fast tokenizer (it is not modified: a copy runs
            on ``device`` in ``dtype``).
        texts: the strings to embed.
        device: torch device (default: the model's).
        batch_size: texts per forward pass (large batches pay on a GPU: 512 to 2048).
        workers: tokenizer processes (default: CPU cores - 1, at most 16); 0 tokenises on this thread.
        window: texts sorted by length together and yielded together (bounds host memory).
        prefetch: tokenised batches each worker keeps ready (default 4).
        dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"`` (default: float16 on CUDA, else float32).

    Yields:
        ``(start, vectors)`` per window.

    Raises:
        ConfigError: a bad argument, a non-string text, or a model without a fast tokenizer.

    Example:
        >>> for start, vectors in iter_encoded_windows(load_encoder(), snippets, device="cuda"):  # doctest: +SKIP
        ...     faiss_index.add(vectors)
    """
    import torch

    texts = validate_texts(texts)
    for name, value, low in (("batch size", batch_size, 1), ("window", window, 1),
                             ("workers", 0 if workers is None else workers, 0),
                             ("prefetch", 1 if prefetch is None else prefetch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    target = torch.device(device) if device else model.device
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    dtype = dtype or ("float16" if target.type == "cuda" else "float32")
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    if not texts:
        return
    spec = _tokenizer_spec(model)
    if workers is None:
        workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    prefetch = prefetch or 4
    window = max(window, batch_size)

    import copy

    runner = copy.deepcopy(model).to(device=target, dtype=dtypes[dtype]).eval()
    # Whatever non-tensor keys this sentence-transformers version's own preprocessing adds (e.g. "modality").
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    sample = preprocess(["x"])
    extra = {key: value for key, value in sample.items() if not torch.is_tensor(value)}
    type_ids = "token_type_ids" in sample
    pin = target.type == "cuda"
    # Characters predict token counts well enough to sort by; exact counts would need a tokenising pass.
    plan = list(_batches(len(texts), [len(t) for t in texts], window, batch_size))
    loader = _loader(texts, spec, plan, workers, prefetch, pin)
    log.info("tokenise-ahead encode texts=%d device=%s dtype=%s batch=%d workers=%d window=%d",
             len(texts), target, dtype, batch_size, workers, window)
    current, out = None, None
    with torch.inference_mode():
        for (start, _), (rows, ids, lengths) in zip(plan, loader):
            if start != current:
                if out is not None:
                    yield current, out.cpu().numpy()
                current, out = start, None
            ids = ids.to(target, non_blocking=True).long()  # (batch, seq)
            lengths = lengths.to(target, non_blocking=True)  # (batch,)
            rows = rows.to(target, non_blocking=True) - start  # (batch,)
            mask = (torch.arange(ids.shape[1], device=target)[None, :] < lengths[:, None]).long()
            features = {"input_ids": ids, "attention_mask": mask, **extra}
            if type_ids:
                features["token_type_ids"] = torch.zeros_like(ids)
            embeddings = runner(features)["sentence_embedding"].float()  # (batch, dim)
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
            if out is None:
                out = torch.empty((min(window, len(texts) - start), embeddings.shape[1]), device=target)
            out[rows] = embeddings
    if out is not None:
        yield current, out.cpu().numpy()


def encode_ahead(model: SentenceTransformer, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
    """All of :func:`iter_encoded_windows` in one float32 array of shape (len(texts), dim).

    Args:
        model: a loaded sentence-transformers model.
        texts: the strings to embed.
        **kwargs: ``device``, ``batch_size``, ``workers``, ``window``, ``prefetch``, ``dtype``.

    Returns:
        Unit-length float32 rows in the order of ``texts``.

    Example:
        >>> encode_ahead(load_encoder(), ["CREATE TABLE singer (id INT);"], workers=0).shape  # doctest: +SKIP
        (1, 384)
    """
    parts = [vectors for _, vectors in iter_encoded_windows(model, texts, **kwargs)]
    if not parts:
        return np.zeros((0, encoder_dim(model)), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

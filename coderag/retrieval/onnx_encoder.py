"""Question encoding on ONNX Runtime: the sentence-transformers model exported to ONNX, fp32 or 8-bit weights.

Three encoder backends embed questions (one setting, ``encoder_backend``):

==============  ====================================================================================
``torch``       ``SentenceTransformer.encode`` (the reference; what every index's vectors come from)
``onnx``        the same network (transformer + pooling + L2 normalisation) exported with
                ``torch.onnx.export`` and run by ONNX Runtime with its graph optimisations (fused
                attention / LayerNorm / GELU); vectors equal torch's to ~1e-6
``onnx-int8``   that export with every linear layer's weights stored as 8-bit integers (ONNX Runtime's
                ``MatMulNBits``: symmetric, one scale per block of 32 weights), computed in fp32
==============  ====================================================================================

Why weight-only 8-bit and not ``quantize_dynamic``: dynamic quantisation also rounds every activation to 8 bits
with one scale per tensor, and on the real questions of this project it kept Recall@10 against the fp32 index
at 0.89-0.95 (per-channel weights, reduce_range, only the FFN layers: none reached 0.99). Blockwise 8-bit
weights with fp32 activations keep cosine >= 0.9998 to the fp32 vector and Recall@10 >= 0.99.

The snippet vectors of an index always come from the torch encoder; a backend only changes how questions are
embedded. ``coderag index build --encoder-backend onnx-int8`` stores the exported file (``encoder.onnx``) in the
index directory and records the backend and the file's checksum in the manifest
(:mod:`coderag.retrieval.index`); :func:`load_query_encoder` resolves a serving setting against it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from coderag.errors import ConfigError, EncoderError, SchemaIndexError
from coderag.retrieval.encoder import encoder_dim, validate_texts

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from coderag.retrieval.index import SchemaIndex

log = logging.getLogger(__name__)

EncoderBackend = Literal["torch", "onnx", "onnx-int8"]
ENCODER_BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
ONNX_BACKENDS: tuple[str, ...] = ("onnx", "onnx-int8")
ONNX_FILE = "encoder.onnx"
ONNX_OPSET = 17
INT8_BLOCK_SIZE = 32
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def check_backend(backend: Any) -> str:
    """``backend`` if it names an encoder backend, else :class:`ConfigError` listing the choices.

    Example:
        >>> check_backend("onnx-int8")
        'onnx-int8'
    """
    if backend not in ENCODER_BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}: use one of {', '.join(ENCODER_BACKENDS)}")
    return backend


def quantization_of(backend: str) -> dict[str, Any] | None:
    """How ``backend``'s ONNX weights are quantised (what the manifest records), or None for fp32.

    Example:
        >>> quantization_of("onnx-int8")["bits"]
        8
    """
    if check_backend(backend) != "onnx-int8":
        return None
    return {"method": "MatMulNBits", "bits": 8, "block_size": INT8_BLOCK_SIZE, "symmetric": True,
            "activations": "fp32"}


class _SentenceEmbedding:
    """The sentence-transformers pipeline as one traceable module: tokens -> unit sentence vectors."""

    def __new__(cls, model: SentenceTransformer, input_names: Sequence[str]):
        import torch

        class SentenceEmbedding(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                features = dict(zip(input_names, tensors, strict=True))
                # The model's own modules (transformer, pooling, normalize if present) run as in encode().
                vectors = self.model(features)["sentence_embedding"]  # (batch, dim)
                return torch.nn.functional.normalize(vectors, p=2, dim=1)

        return SentenceEmbedding().eval()


def _model_inputs(model: SentenceTransformer) -> tuple[str, ...]:
    names = getattr(model.tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
    inputs = tuple(n for n in _INPUT_NAMES if n in names)
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise EncoderError(f"encoder tokenizer gives {names}, not input_ids and attention_mask: "
                           "use the torch encoder backend for this model")
    return inputs


def export_onnx(model: SentenceTransformer, path: str | os.PathLike, backend: str = "onnx") -> dict[str, Any]:
    """Export ``model`` (transformer + pooling + L2 normalisation) to an ONNX file for ``backend``.

    The file takes the tokenizer's ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
    tokenizer gives them) as int64 of shape (batch, seq), both axes dynamic, and returns unit vectors
    ``sentence_embedding`` of shape (batch, dim). ``onnx-int8`` then stores every MatMul weight as 8-bit blocks.
    The file is written atomically (a temporary file renamed into place).

    Args:
        model: the sentence-transformers model (its weights are exported on the CPU).
        path: the ``.onnx`` file to write.
        backend: ``"onnx"`` (fp32) or ``"onnx-int8"``.

    Returns:
        What the manifest records: ``{"file", "opset", "inputs", "quantization"}``.

    Raises:
        ConfigError: ``backend`` is not an ONNX backend.
        EncoderError: the export fails (an architecture the exporter cannot trace).

    Example:
        >>> export_onnx(load_encoder(), "index/encoder.onnx", "onnx-int8")["quantization"]["bits"]  # doctest: +SKIP
        8
    """
    import torch

    if check_backend(backend) not in ONNX_BACKENDS:
        raise ConfigError(f"encoder backend {backend!r} has no ONNX export: use one of {', '.join(ONNX_BACKENDS)}")
    target = Path(path)
    inputs = _model_inputs(model)
    sample = model.tokenizer(["How many singers are there?", "CREATE TABLE singer (id INT, name TEXT);"],
                             padding=True, return_tensors="pt")
    args = tuple(sample[name].to("cpu") for name in inputs)
    device = model.device
    module = _SentenceEmbedding(model.to("cpu"), inputs)
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=target.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # Tracer warnings about shape-dependent Python branches: the exported graph keeps both axes
                # dynamic, and the tests compare it with torch at other batch sizes and lengths.
                warnings.simplefilter("ignore")
                # The TorchScript exporter (dynamo=False): no onnxscript dependency, and it traces this small
                # encoder into one self-contained file.
                torch.onnx.export(
                    module, args, str(fp32), input_names=list(inputs), output_names=["sentence_embedding"],
                    dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in inputs}, "sentence_embedding": {0: "batch"}},
                    opset_version=ONNX_OPSET, dynamo=False,
                )
        except Exception as exc:  # the exporter raises many types (RuntimeError, TypeError, ONNX errors)
            raise EncoderError(f"could not export the encoder to ONNX ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                               "use the torch encoder backend") from exc
        finally:
            model.to(device)
        result = fp32
        if backend == "onnx-int8":
            result = Path(tmp) / "int8.onnx"
            _quantize_int8(fp32, result)
        os.replace(result, target)
    return {"file": target.name, "opset": ONNX_OPSET, "inputs": list(inputs), "quantization": quantization_of(backend)}


def _quantize_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)  # it logs one line per node it skips
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=8, block_size=INT8_BLOCK_SIZE,
                                         is_symmetric=True, accuracy_level=0)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    finally:
        quant_logger.setLevel(level)


class OnnxEncoder:
    """Embeds texts with an exported ONNX encoder on ONNX Runtime's CPU provider.

    Tokenisation uses the sentence-transformers model's tokenizer and max sequence length, so vectors match
    ``SentenceTransformer.encode`` (fp32 export: to ~1e-6). :func:`~coderag.retrieval.encoder.encode` and the
    other encoder helpers accept an :class:`OnnxEncoder` wherever they accept a model.

    Args:
        path: the ``.onnx`` file from :func:`export_onnx`.
        sentence_model: the sentence-transformers model it was exported from (tokenizer, name, fingerprint).
        backend: ``"onnx"`` or ``"onnx-int8"`` (reported, not checked against the file).
        threads: ONNX Runtime intra-op threads (default: the CPU cores this process may use).

    Example:
        >>> encoder = OnnxEncoder("index/encoder.onnx", load_encoder(), "onnx-int8", threads=2)  # doctest: +SKIP
        >>> encode(encoder, ["How many singers?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, path: str | os.PathLike, sentence_model: SentenceTransformer, backend: str = "onnx",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.sentence_model = sentence_model
        self.backend = check_backend(backend)
        self.threads = threads or len(os.sched_getaffinity(0))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the cores other requests (and other processes) need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / NoSuchFile types
            raise SchemaIndexError(f"cannot load the ONNX encoder {self.path} ({str(exc).splitlines()[0]}): "
                                   "rebuild the index with `coderag index build --encoder-backend "
                                   f"{self.backend}`") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = sentence_model.tokenizer
        self.max_seq_length = int(getattr(sentence_model, "max_seq_length", None) or 512)
        dim = self.session.get_outputs()[0].shape[-1]
        if isinstance(dim, int) and dim != encoder_dim(sentence_model):
            raise SchemaIndexError(f"ONNX encoder {self.path} gives dim {dim} but the encoder's is "
                                   f"{encoder_dim(sentence_model)}: rebuild the index")

    def encode_normalized(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit float32 vectors of shape (len(texts), dim), ``batch_size`` texts per ONNX Runtime call."""
        texts = validate_texts(texts)
        if not texts:
            return np.zeros((0, encoder_dim(self.sentence_model)), dtype=np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                    max_length=self.max_seq_length, return_tensors="np")
            feeds = {name: np.asarray(tokens[name], dtype=np.int64) for name in self.input_names}
            out.append(self.session.run(None, feeds)[0])  # (batch, dim)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def load_query_encoder(index: SchemaIndex, sentence_model: SentenceTransformer, backend: str | None = None,
                       threads: int | None = None):
    """The question encoder for ``index``: ``sentence_model`` itself (torch) or an :class:`OnnxEncoder`.

    ``backend=None`` follows the index manifest. ``torch`` always works (every index's vectors come from the
    torch encoder). An ONNX backend needs the index to have been built with it: its exported file is
    checksummed in the manifest, and asking for one the index lacks is refused.

    Args:
        index: the loaded index (its ``encoder_backend`` and ONNX file).
        sentence_model: the sentence-transformers model the index was built with.
        backend: ``torch``, ``onnx``, ``onnx-int8``, or ``None`` for the manifest's.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``sentence_model`` or an :class:`OnnxEncoder`; both work with :func:`~coderag.retrieval.encoder.encode`.

    Raises:
        ConfigError: ``backend`` is not a known backend.
        SchemaIndexError: the index was not built for ``backend``, or its ONNX file cannot be loaded.

    Example:
        >>> encoder = load_query_encoder(SchemaIndex.load("index"), load_encoder(), "onnx-int8")  # doctest: +SKIP
    """
    chosen = index.encoder_backend if backend is None else check_backend(backend)
    if chosen == "torch":
        return sentence_model
    if chosen != index.encoder_backend or index.onnx_path is None:
        raise SchemaIndexError(
            f"encoder backend {chosen!r} was asked for but the index was built for {index.encoder_backend!r}: "
            f"rebuild it with `coderag index build --encoder-backend {chosen}`, or leave encoder_backend unset "
            "to use the index's"
        )
    encoder = OnnxEncoder(index.onnx_path, sentence_model, chosen, threads=threads)
    log.info("query encoder backend=%s file=%s threads=%d", chosen, index.onnx_path, encoder.threads)
    return encoder

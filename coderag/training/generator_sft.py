"""Supervised fine-tuning (SFT) of the SQL generator on CodeRAG's own synthetic text->SQL records.

The training conversations come from :mod:`coderag.training.sft_data` (train-side records whose SQL
executes, as the inference prompts the generator gets); here they are tokenised with the base model's chat
template and the loss covers the answer tokens only (prompt labels are -100).

Training uses LoRA adapters through ``peft`` (a plain torch loop: AdamW, linear warm-up/decay); the
result is saved atomically either merged into the base weights (a plain transformers model directory)
or as the adapter alone (small, servable by vLLM's ``--lora-modules``). Both reload in
:class:`~coderag.generation.llm.LocalTransformersGenerator`. A manifest (:data:`MANIFEST_FILE`) is
written last; a training report (:data:`REPORT_FILE`) records pairs, steps, loss, time and device.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from coderag.atomic_files import atomic_directory
from coderag.errors import ConfigError, CorpusError
from coderag.generation.llm import GENERATOR_MANIFEST
from coderag.training.sft_data import SftExample, prepare_sft_examples

log = logging.getLogger(__name__)

MANIFEST_FILE = GENERATOR_MANIFEST  # written last: its presence means the directory is complete
REPORT_FILE = "training_report.json"
ADAPTER_CONFIG = "adapter_config.json"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE_INDEX = -100  # label value the causal-LM loss skips


def encode_example(tokenizer, example: SftExample, max_seq_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels of one example through the tokenizer's chat template; None when too long.

    The prompt is exactly what the generator feeds at inference (``add_generation_prompt=True``); the
    answer is the rest of the chat-templated conversation (the reply and the end-of-turn token). Prompt
    positions get label -100, so only answer tokens count in the loss.

    Args:
        tokenizer: the base model's tokenizer (with a chat template).
        example: the conversation.
        max_seq_length: the most tokens of prompt + answer; longer examples are skipped.

    Returns:
        ``{"input_ids", "labels"}`` (same length), or None when over ``max_seq_length``.
    """
    prompt_text = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        [*example.messages, {"role": "assistant", "content": example.answer}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ConfigError("the model's chat template renders the prompt differently inside a full conversation: "
                          "answer-only labels cannot be placed; use another instruction-tuned model.")
    prompt_ids = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, return_dict=True)[
        "input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(answer_ids)
    if len(ids) > max_seq_length:
        return None
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids)}


def mean_answer_loss(generator, examples: Sequence[SftExample], *, max_seq_length: int = 4096,
                     batch_size: int = 4) -> float:
    """The mean cross-entropy per answer token of ``generator``'s model on ``examples`` (prompt not scored).

    Args:
        generator: a :class:`~coderag.generation.llm.LocalTransformersGenerator` (its model and tokenizer).
        examples: the conversations.
        max_seq_length: longer examples are left out.
        batch_size: examples per forward pass.

    Returns:
        The loss, averaged over every answer token of every example.

    Example:
        >>> mean_answer_loss(LocalTransformersGenerator(), examples)  # doctest: +SKIP
        1.73
    """
    import torch

    rows = [r for r in (encode_example(generator.tokenizer, e, max_seq_length) for e in examples) if r is not None]
    if not rows:
        raise CorpusError("no example fits max_seq_length: nothing to score.")
    model, total, count = generator.model, 0.0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(rows), batch_size):
            batch = _collate(rows[first:first + batch_size], generator._pad_token_id())
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.float()  # (batch, width, vocab)
            labels = batch["labels"][:, 1:].to(device)  # token t is predicted at position t - 1
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels,
                                                       ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(losses)
            count += int((labels != IGNORE_INDEX).sum())
    return total / count


def _collate(rows: list[dict[str, list[int]]], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors (padding labelled -100)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (batch, width)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(row["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _batches(n: int, batch_size: int, steps: int, seed: int) -> Iterable[list[int]]:
    """``steps`` batches of example indices: seeded shuffled epochs, the last partial batch of each dropped
    unless it is the only one."""
    rng = random.Random(seed)
    produced = 0
    while produced < steps:
        order = list(range(n))
        rng.shuffle(order)
        per_epoch = max(1, n // batch_size)
        for b in range(per_epoch):
            if produced >= steps:
                return
            yield order[b * batch_size:(b + 1) * batch_size]
            produced += 1


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU: use --device cpu.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device {device!r} is not supported for generator fine-tuning: use cpu or cuda.")
    return device


def _validate(*, batch_size, learning_rate, lora_r, lora_alpha, max_seq_length, epochs, max_steps) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be positive, got {learning_rate!r}.")
    if lora_r < 1 or lora_alpha <= 0:
        raise ConfigError(f"LoRA rank must be >= 1 and alpha > 0, got r={lora_r}, alpha={lora_alpha}.")
    if max_seq_length < 16:
        raise ConfigError(f"max_seq_length must be at least 16 tokens, got {max_seq_length}.")
    if max_steps is None and not epochs > 0:
        raise ConfigError(f"epochs must be positive, got {epochs!r}.")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be a positive number, got {max_steps}.")


def finetune_generator(train_records: Sequence[dict], output_dir: str | os.PathLike, *,
                       held_out_domains: Iterable[str] = (), encoder_model=None, prompt_schemas: str = "retrieved",
                       k: int = 3, max_examples: int | None = None, seed: int = 0, examples: int = 0,
                       **training: Any) -> dict[str, Any]:
    """:func:`~coderag.training.sft_data.prepare_sft_examples` then :func:`train_generator`: the whole ``coderag finetune-generator``.

    Args:
        train_records, held_out_domains, encoder_model, prompt_schemas, k, max_examples, seed, examples: as
            for :func:`~coderag.training.sft_data.prepare_sft_examples`.
        output_dir: the directory to write (replaced atomically).
        **training: keyword arguments of :func:`train_generator` (``base_model``, ``max_steps``, ``merge`` ...).

    Returns:
        The training report, with the held-out domains and the dropped records.

    Example:
        >>> report = finetune_generator(train, "out/generator", held_out_domains={"retail"},
        ...                             max_steps=20, prompt_schemas="gold")  # doctest: +SKIP
        >>> report["loss_last"] < report["loss_first"]  # doctest: +SKIP
        True
    """
    defaults = {name: p.default for name, p in inspect.signature(train_generator).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    _validate(**{name: training.get(name, defaults[name]) for name in (
        "batch_size", "learning_rate", "lora_r", "lora_alpha", "max_seq_length", "epochs", "max_steps")})
    _device(training.get("device"))  # a missing GPU fails before the data work
    started = time.perf_counter()
    conversations, drops = prepare_sft_examples(train_records, held_out_domains=held_out_domains,
                                                encoder_model=encoder_model, prompt_schemas=prompt_schemas, k=k,
                                                max_examples=max_examples, seed=seed, examples=examples)
    extra = {"records_seen": len(train_records), "held_out_domains": sorted({str(d) for d in held_out_domains}),
             "prompt_schemas": prompt_schemas, "k": k, "examples": examples, "dropped_records": dict(drops),
             "prepare_seconds": round(time.perf_counter() - started, 2)}
    return train_generator(conversations, output_dir, seed=seed, extra_report=extra, **training)


def train_generator(examples: Sequence[SftExample], output_dir: str | os.PathLike, *, base_model: str | None = None,
                    epochs: float = 1.0, max_steps: int | None = None, batch_size: int = 8,
                    learning_rate: float = 2e-4, lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05,
                    max_seq_length: int = 1024, merge: bool = False, device: str | None = None, seed: int = 0,
                    show_progress: bool | None = None, extra_report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune the generator with LoRA on ``examples`` (answer-token loss) and save it atomically.

    Args:
        examples: the conversations (:func:`~coderag.training.sft_data.prepare_sft_examples`).
        output_dir: the directory to write (replaced atomically).
        base_model: the generator to start from: None (the offline SmolLM2 GGUF), a ``.gguf`` file, a
            model directory or a hub name (as :class:`~coderag.generation.llm.LocalTransformersGenerator`).
        epochs: passes over the examples (ignored when ``max_steps`` is set).
        max_steps: optimizer steps (None: from ``epochs``).
        batch_size: examples per step.
        learning_rate: AdamW peak learning rate (linear warm-up over 5% of the steps, then linear decay).
        lora_r, lora_alpha, lora_dropout: the LoRA adapter's rank, scale and dropout.
        max_seq_length: prompt + answer token cap; longer examples are skipped (counted).
        merge: save the base weights with the adapter merged in (else the adapter alone).
        device: ``cpu`` or ``cuda`` (None: cuda when present); on cuda the forward pass runs in bfloat16.
        seed: seed of shuffling and of the adapter's initialisation.
        show_progress: progress bars (None: tqdm decides by terminal).
        extra_report: more entries for the report.

    Returns:
        The training report (also saved as :data:`REPORT_FILE`): examples, steps, loss first/last and
        curve, minutes, samples/s, tokens/s, device, output kind.

    Raises:
        ConfigError: a setting is out of range or no device matches.
        CorpusError: no example fits ``max_seq_length``.
        GenerationError: the base model cannot be loaded.
    """
    import torch

    _validate(batch_size=batch_size, learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha,
              max_seq_length=max_seq_length, epochs=epochs, max_steps=max_steps)
    if not examples:
        raise CorpusError("no training examples: build them with prepare_sft_examples.")
    device = _device(device)
    started = time.perf_counter()

    from coderag.generation.llm import LocalTransformersGenerator

    base = LocalTransformersGenerator(model_path=base_model, device=device)
    tokenizer, model = base.tokenizer, base.model
    encoded = [row for row in (encode_example(tokenizer, e, max_seq_length) for e in examples) if row is not None]
    too_long = len(examples) - len(encoded)
    if not encoded:
        raise CorpusError(f"every example is longer than max_seq_length={max_seq_length} tokens: raise it or lower k.")
    load_s = time.perf_counter() - started

    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    targets = [t for t in LORA_TARGETS if any(name.endswith(f".{t}") for name, _ in model.named_modules())]
    if not targets:
        raise ConfigError(f"the base model {base.model_name!r} has none of the LoRA target layers {LORA_TARGETS}.")
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    batch_size = min(batch_size, len(encoded))
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * max(1, len(encoded) // batch_size)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(0.05 * steps)), steps)
    pad_id = base._pad_token_id()
    losses: list[float] = []
    samples = tokens = 0
    train_started = time.perf_counter()
    progress = tqdm(total=steps, desc="finetune generator", unit="step",
                    disable=None if show_progress is None else not show_progress)
    for batch_ids in _batches(len(encoded), batch_size, steps, seed):
        batch = {key: value.to(device) for key, value in _collate([encoded[i] for i in batch_ids], pad_id).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        samples += len(batch_ids)
        tokens += int(batch["attention_mask"].sum())
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    progress.close()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - train_started
    model.eval()

    window = max(1, min(5, len(losses) // 4))
    report: dict[str, Any] = {
        "base_model": base_model, "base_name": base.model_name, "output_kind": "merged" if merge else "lora-adapter",
        "examples": len(encoded), "too_long": too_long, "train_domains": len({e.domain for e in examples}),
        "steps": len(losses), "batch_size": batch_size, "epochs_run": round(samples / len(encoded), 3),
        "learning_rate": learning_rate,
        "lora": {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "target_modules": targets},
        "max_seq_length": max_seq_length,
        "loss_first": round(sum(losses[:window]) / window, 4), "loss_last": round(sum(losses[-window:]) / window, 4),
        "loss_curve": _downsample([round(x, 4) for x in losses], 100),
        "load_seconds": round(load_s, 2), "train_seconds": round(train_s, 2), "minutes": round(train_s / 60, 3),
        "samples_per_s": round(samples / train_s, 3) if train_s else None,
        "tokens_per_s": round(tokens / train_s, 1) if train_s else None,
        "device": _device_name(device), "seed": seed, **(extra_report or {}),
    }
    _save(model, tokenizer, output_dir, merge=merge, base_model=base_model, report=report)
    report["model_dir"] = str(output_dir)
    log.info("generator SFT: %d examples, %d steps, loss %.3f -> %.3f, %.1f samples/s on %s", len(encoded),
             len(losses), report["loss_first"], report["loss_last"], report["samples_per_s"] or 0, report["device"])
    return report


def _downsample(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return values
    stride = len(values) / n
    return [values[int(i * stride)] for i in range(n)] + [values[-1]]


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _save(model, tokenizer, output_dir: str | os.PathLike, *, merge: bool, base_model: str | None,
          report: dict[str, Any]) -> None:
    """Write the merged model or the adapter, the tokenizer, the report and (last) the manifest."""
    with atomic_directory(output_dir) as staged:
        if merge:
            merged = model.merge_and_unload()
            quantizer = getattr(merged, "hf_quantizer", None)
            if quantizer is not None:
                if str(getattr(quantizer.quantization_config, "quant_method", "")).lower().endswith("gguf"):
                    # GGUF weights were dequantized at load: the tensors are plain, only the marker remains.
                    quantizer.remove_quantization_config(merged)
                else:
                    raise ConfigError("a quantized base model cannot be saved merged: save the adapter (no --merge).")
            merged.save_pretrained(str(staged), safe_serialization=True)
        else:
            model.save_pretrained(str(staged), safe_serialization=True)
        tokenizer.save_pretrained(str(staged))
        (staged / REPORT_FILE).write_text(json.dumps(report, indent=2))
        manifest = {"format": "merged" if merge else "lora-adapter",
                    # None: the offline SmolLM2 GGUF, found on whichever machine loads the adapter.
                    "base_model": base_model if base_model is None else _portable(base_model),
                    "base_name": report["base_name"], "examples": report["examples"], "steps": report["steps"],
                    "lora": report["lora"]}
        (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def _portable(base_model: str) -> str:
    path = Path(base_model)
    return str(path.resolve()) if path.exists() else base_model


def read_generator_manifest(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a directory written by :func:`finetune_generator`; None when it has none.

    Raises:
        ConfigError: the manifest exists but cannot be read.
    """
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}): rerun `coderag finetune-generator`.") from exc

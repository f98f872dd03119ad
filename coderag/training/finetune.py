"""Stage 2: fine-tune the bi-encoder on synthesized pairs (+ mined hard negatives).

``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (in-batch negatives plus any
``negative_*`` columns), or ``CachedMultipleNegativesRankingLoss`` (GradCache) when ``cached`` so large
batches fit in memory; ``BatchSamplers.NO_DUPLICATES`` keeps a text from appearing twice in a batch
(a duplicate would be a false in-batch negative). The held-out IR evaluator runs before and after; the
model is saved atomically with a model card holding data size, hyperparameters and both metric sets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from coderag.atomic_files import atomic_directory
from coderag.errors import ConfigError
from coderag.evaluation.ranking import RetrievalEvaluator
from coderag.training.artifacts import TrainingDataError

log = logging.getLogger(__name__)


def training_columns(dataset) -> list[str]:
    """The columns the loss consumes, in order: anchor, positive, negative_1..n.

    Args:
        dataset: a ``datasets`` Dataset of pairs (optionally with ``negative_<i>`` columns).

    Returns:
        Column names, negatives in numeric order.

    Example:
        >>> training_columns(pairs)  # doctest: +SKIP
        ['anchor', 'positive', 'negative_1', 'negative_2']
    """
    negatives = sorted((c for c in dataset.column_names if c.startswith("negative_")),
                       key=lambda c: int(c.split("_")[1]))
    return ["anchor", "positive", *negatives]


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description(device: str) -> str:
    """The device as a person reads it: ``"cuda (NVIDIA H100 80GB HBM3)"``, ``"cpu (2 cores)"``."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    if device == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device


def make_loss(model, *, scale: float = 20.0, cached: bool = False, mini_batch_size: int = 32):
    """MNRL, or its cached (GradCache) variant whose memory does not grow with the batch size.

    Args:
        model: the sentence-transformers model being trained.
        scale: the similarity scale (inverse temperature).
        cached: use ``CachedMultipleNegativesRankingLoss``.
        mini_batch_size: GradCache mini-batch size (only with ``cached``).

    Returns:
        A sentence-transformers loss module.

    Example:
        >>> loss = make_loss(load_encoder(), cached=True)  # doctest: +SKIP
    """
    from sentence_transformers import losses

    if cached:
        return losses.CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=mini_batch_size)
    return losses.MultipleNegativesRankingLoss(model, scale=scale)


def _features(model, texts: list[str]) -> dict[str, Any]:
    """Model inputs for ``texts`` on the model's device (``preprocess`` in ST >= 6.1, else ``tokenize``)."""
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize
    return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in prepare(texts).items()}


def probe_loss(model, dataset, *, scale: float = 20.0, batch_size: int = 32, max_batches: int = 4) -> float:
    """Mean MNRL loss over the first ``max_batches`` batches, without updating the model.

    Args:
        model: the sentence-transformers model.
        dataset: pairs with the :func:`training_columns`.
        scale: the similarity scale.
        batch_size: pairs per batch.
        max_batches: how many batches to average.

    Returns:
        The mean loss (0.0 when no batch of at least 2 pairs fits).

    Example:
        >>> probe_loss(load_encoder(), pairs)  # doctest: +SKIP
        0.4213
    """
    import torch
    from sentence_transformers import losses

    loss_fn = losses.MultipleNegativesRankingLoss(model, scale=scale)
    cols = training_columns(dataset)
    was_training = model.training
    model.eval()
    total, batches = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, min(len(dataset), batch_size * max_batches), batch_size):
                batch = dataset[start : start + batch_size]
                if len(batch["anchor"]) < 2:
                    break
                features = [_features(model, list(batch[c])) for c in cols]
                total += float(loss_fn(features, None))
                batches += 1
    finally:
        model.train(was_training)
    return total / max(batches, 1)


def train_encoder(
    model,
    train_dataset,
    *,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    scale: float = 20.0,
    cached: bool = False,
    mini_batch_size: int = 32,
    max_steps: int | None = None,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on ``train_dataset``; return steps, samples/s and the logged losses.

    Args:
        model: the sentence-transformers model (trained in place).
        train_dataset: pairs with ``anchor``, ``positive`` and optional ``negative_<i>`` columns.
        epochs: training epochs (ignored when ``max_steps`` is set).
        batch_size: pairs per batch (also the number of in-batch negatives).
        learning_rate: peak learning rate.
        scale: MNRL similarity scale.
        cached: use GradCache (``CachedMultipleNegativesRankingLoss``) with ``mini_batch_size``.
        mini_batch_size: GradCache mini-batch size.
        max_steps: stop after this many steps.
        warmup_ratio: share of planned steps used for warm-up.
        seed: training seed.
        show_progress: show the trainer's progress bar.

    Returns:
        A dict: planned and run steps, samples, seconds, samples/s, train loss, logged losses, precision.

    Raises:
        TrainingDataError: not one batch could be filled with distinct texts (no step ran), so the model
            would leave training untouched.

    Example:
        >>> train_encoder(model, pairs, max_steps=10)["steps"]  # doctest: +SKIP
        10
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    dataset = train_dataset.select_columns(training_columns(train_dataset))
    on_cuda = str(model.device).startswith("cuda")
    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    scratch = tempfile.mkdtemp(prefix="coderag-finetune-")
    steps_per_epoch = max(1, len(dataset) // batch_size)
    planned = max_steps or max(1, int(round(steps_per_epoch * epochs)))
    args = SentenceTransformerTrainingArguments(
        output_dir=scratch,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=int(warmup_ratio * planned),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        fp16=on_cuda and not bf16,
        bf16=bf16,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=max(1, planned // 10),
        report_to="none",
        seed=seed,
        disable_tqdm=not show_progress,
        dataloader_drop_last=len(dataset) > batch_size,
        use_cpu=not on_cuda,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset,
        loss=make_loss(model, scale=scale, cached=cached, mini_batch_size=mini_batch_size),
    )
    if not show_progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every logged loss dict to stdout
    try:
        if on_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        output = trainer.train()
        if on_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    steps = int(output.global_step)
    samples = steps * batch_size
    if steps == 0:
        distinct = len({text for column in dataset.column_names for text in dataset[column]})
        raise TrainingDataError(
            f"no training step ran: the no-duplicates sampler cannot fill one batch of {batch_size} pairs with "
            f"distinct texts ({len(dataset)} pairs hold {distinct} distinct texts across {len(dataset.column_names)} "
            "columns; every schema may appear once a batch): lower the batch size or the number of negatives.")
    if steps < 0.5 * planned:
        log.warning(
            "only %d of %d planned training steps ran: the NO_DUPLICATES sampler cannot fill batches of %d "
            "with distinct texts (too few unique positives/negatives); lower the batch size or the number "
            "of negatives", steps, planned, batch_size,
        )
    return {
        "planned_steps": planned,
        "steps": steps,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / seconds, 2) if seconds > 0 else 0.0,
        "train_loss": round(float(output.training_loss), 4),
        "logged_losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
        "precision": "bf16" if bf16 else ("fp16" if on_cuda else "fp32"),
    }


def _metric_rows(before: dict[str, float], after: dict[str, float]) -> str:
    return "\n".join(f"| {k} | {before[k]:.4f} | {after[k]:.4f} | {after[k] - before[k]:+.4f} |" for k in before)


def _model_card(report: dict[str, Any]) -> str:
    hp = report["hyperparameters"]
    rows = _metric_rows(report["before"], report["after"])
    outside = "".join(
        f"\n## Outside data: {name} ({scores['queries']} questions, {scores['corpus']} schemas)\n"
        "| metric | base | fine-tuned | change |\n| --- | --- | --- | --- |\n"
        f"{_metric_rows(scores['before'], scores['after'])}\n"
        for name, scores in report.get("outside", {}).items()
    )
    params = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    training = report["training"]
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, text-to-sql, schema-retrieval, coderag]
base_model: {report['base_model']}
---

# CodeRAG schema retriever

Fine-tuned from `{report['base_model']}` by `coderag finetune` to retrieve the CREATE TABLE schema
snippet that answers a natural-language question (cosine similarity, L2-normalized embeddings).

## Training run
| profile | pairs | steps | minutes | device |
| --- | --- | --- | --- | --- |
| {report['profile']} | {report['train_size']} | {training['steps']} | {report['minutes']} | {report['device_name']} |

## Training data
- pairs: {report['train_size']} (columns: {', '.join(report['columns'])}), synthetic only
- held-out evaluation: {report['eval_queries']} questions from {len(report['held_out_domains'])} domains never
  seen in training, against a corpus of {report['corpus_size']} unique schema snippets

## Hyperparameters
| name | value |
| --- | --- |
{params}

## Held-out retrieval (question -> own schema snippet)
| metric | base | fine-tuned | change |
| --- | --- | --- | --- |
{rows}
{outside}
Training: {report['training']['steps']} steps, {report['training']['samples_per_s']} samples/s on
{report['device']} ({report['training']['precision']}); probe loss {report['loss_before']:.4f} ->
{report['loss_after']:.4f}.
"""


def finetune_encoder(
    train_pairs,
    eval_records: list[dict],
    output_dir: str | os.PathLike,
    *,
    corpus_records: list[dict] | None = None,
    base_model: str | None = None,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    scale: float = 20.0,
    cached: bool = False,
    mini_batch_size: int = 32,
    max_steps: int | None = None,
    max_seq_length: int = 256,
    train_max_seq_length: int | None = 128,
    warmup_ratio: float = 0.1,
    max_eval_queries: int | None = None,
    outside_evals: dict[str, tuple[list[dict], list[dict]]] | None = None,
    seed: int = 0,
    device: str | None = None,
    profile: str = "custom",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` (default: the bundled all-MiniLM-L6-v2) and save it at ``output_dir``.

    ``max_seq_length`` is the saved model's (and the evaluation's) input length; training truncates to
    ``train_max_seq_length`` (None: the same), which on CPU roughly halves the cost per step while the
    question and the first tables of a schema still meet in every pair.
    Evaluates question -> own-schema retrieval on ``eval_records`` (corpus: unique snippets of
    ``corpus_records`` + ``eval_records``) before and after training. The model directory (with a
    README.md model card and training_report.json) is published atomically. Returns the report:
    before/after recall@1/5/10, mrr@10, ndcg@10, sizes, hyperparameters, losses, speed.

    ``outside_evals`` maps a name to ``(questions, corpus records)`` of data the synthetic corpus never
    saw (e.g. Spider dev questions against all Spider schemas); each is scored before and after
    training too, under ``report["outside"][name]``, so a gain on the held-out split can be told apart
    from a gain that carries to real schemas.

    Args:
        train_pairs: a ``datasets`` Dataset with ``anchor`` and ``positive`` (and optional negatives).
        eval_records: held-out gretel records scored before and after.
        output_dir: where the fine-tuned model is saved.
        corpus_records: records whose schemas join the evaluation corpus (typically the train side).
        base_model: the encoder to start from (see :func:`~coderag.retrieval.encoder.load_encoder`).
        epochs, batch_size, learning_rate, scale, cached, mini_batch_size, max_steps, warmup_ratio, seed:
            training settings (see :func:`train_encoder`).
        max_seq_length, train_max_seq_length: input lengths (see above).
        max_eval_queries: cap on evaluation questions.
        outside_evals: extra evaluations (see above).
        device: torch device; default CUDA when available.
        profile: the training profile these settings came from (recorded in the report and model card).
        show_progress: show progress bars.

    Returns:
        The training report (also saved as ``training_report.json`` in ``output_dir``).

    Raises:
        TrainingDataError: pairs lack anchor/positive columns or number fewer than 2.
        ConfigError: a hyperparameter is out of range.
        EncoderError: ``base_model`` cannot be loaded.

    Example:
        >>> report = finetune_encoder(pairs, held_out, "out/model", corpus_records=train)  # doctest: +SKIP
        >>> report["after"]["recall@1"] > report["before"]["recall@1"]  # doctest: +SKIP
        True
    """
    from coderag.retrieval.encoder import load_encoder

    if "anchor" not in train_pairs.column_names or "positive" not in train_pairs.column_names:
        raise TrainingDataError("training pairs need anchor and positive columns: build them with `coderag synth`.")
    if len(train_pairs) < 2:
        raise TrainingDataError(f"training needs at least 2 pairs, got {len(train_pairs)}.")
    if batch_size < 2 or epochs <= 0 or learning_rate <= 0 or scale <= 0 or max_seq_length < 8:
        raise ConfigError("batch_size must be >= 2 and epochs, learning_rate, scale positive, max_seq_length >= 8.")
    if train_max_seq_length is not None and train_max_seq_length < 8:
        raise ConfigError(f"train_max_seq_length must be >= 8, got {train_max_seq_length}.")
    started = time.perf_counter()
    device = _pick_device(device)
    model = load_encoder(base_model, device=device)
    model.float()  # fp32 master weights (a checkpoint may be stored in fp16); CUDA steps autocast
    model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    eval_length = model.max_seq_length
    evaluator = RetrievalEvaluator(eval_records, corpus_records, max_queries=max_eval_queries, seed=seed,
                                   show_progress=show_progress)
    sizes = evaluator.info
    before = evaluator(model)
    log.info("before fine-tuning: %s", before)
    outside: dict[str, dict[str, Any]] = {}
    outside_evaluators = {}
    for name, (questions, corpus) in (outside_evals or {}).items():
        outside_evaluators[name] = RetrievalEvaluator(questions, corpus, name=name, max_queries=max_eval_queries,
                                                      seed=seed, show_progress=show_progress)
        outside[name] = {**outside_evaluators[name].info, "before": outside_evaluators[name](model)}
    columns = training_columns(train_pairs)
    probe_set = train_pairs.select_columns(columns).shuffle(seed=seed)
    model.max_seq_length = min(train_max_seq_length or eval_length, eval_length)
    loss_before = probe_loss(model, probe_set, scale=scale, batch_size=batch_size)
    training = train_encoder(
        model, train_pairs, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, scale=scale, cached=cached,
        mini_batch_size=mini_batch_size, max_steps=max_steps, warmup_ratio=warmup_ratio, seed=seed,
        show_progress=show_progress,
    )
    loss_after = probe_loss(model, probe_set, scale=scale, batch_size=batch_size)
    model.max_seq_length = eval_length
    after = evaluator(model)
    log.info("after fine-tuning: %s", after)
    for name, outside_evaluator in outside_evaluators.items():
        outside[name]["after"] = outside_evaluator(model)

    report: dict[str, Any] = {
        "profile": profile,
        "base_model": base_model or "builtin:all-MiniLM-L6-v2",
        "before": before,
        "after": after,
        "train_size": len(train_pairs),
        "columns": columns,
        "eval_queries": sizes["queries"],
        "corpus_size": sizes["corpus"],
        "held_out_domains": sorted({str(r["domain"]) for r in eval_records}),
        "outside": outside,
        "hyperparameters": {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "scale": scale,
            "loss": "CachedMultipleNegativesRankingLoss" if cached else "MultipleNegativesRankingLoss",
            "mini_batch_size": mini_batch_size if cached else None, "max_steps": max_steps,
            "max_seq_length": eval_length,
            "train_max_seq_length": min(train_max_seq_length or eval_length, eval_length),
            "warmup_ratio": warmup_ratio, "seed": seed,
            "batch_sampler": "no_duplicates",
        },
        "loss_before": round(loss_before, 4),
        "loss_after": round(loss_after, 4),
        "training": training,
        "device": device,
        "device_name": device_description(device),
        # the whole run (load, evaluations before and after, training), as a person would time it
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "model_dir": str(output_dir),
    }
    with atomic_directory(output_dir) as staged:
        model.save(str(staged))
        (staged / "README.md").write_text(_model_card(report))
        (staged / "training_report.json").write_text(json.dumps(report, indent=2))
    return report

"""The pipeline's last steps: deploy a candidate that passed the gate, and record every run's outcome.

:func:`deploy_release` publishes the gated encoder + index into a "deployed" directory (a laptop's or a
volume's stand-in for a model registry: ``<deploy_dir>/releases/<id>/{model,index}`` plus
``<deploy_dir>/current.json``, the release now serving, whose metrics the next run's gate compares
against) and, when a GitOps checkout is given, promotes the artifact URIs with
:func:`coderag.release.promotion.promote`. :func:`write_outcome` writes the JSON a run ends with.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coderag.atomic_files import atomic_directory, write_json_atomic, write_text_atomic
from coderag.errors import ConfigError

log = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
PER_QUESTION_FILE = "evaluation.json"
RELEASES_DIR = "releases"


def _copy_tree_atomic(source: Path, target: Path) -> None:
    """Copy directory ``source`` to ``target`` through a sibling temp dir, so ``target`` is whole or absent."""
    with atomic_directory(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def deploy_release(*, model_dir: str | os.PathLike, index_dir: str | os.PathLike, metrics: dict[str, Any],
                   deploy_dir: str | os.PathLike | None = None, model_uri: str = "", index_uri: str = "",
                   promote_repo: str = "", promote_env: str = "dev",
                   decision_path: str | os.PathLike | None = None,
                   details_path: str | os.PathLike | None = None,
                   outcome_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Publish a gated release and return its record (also written as ``<deploy_dir>/current.json``).

    With ``deploy_dir`` the model and index are copied to ``releases/<id>/`` and ``current.json`` is
    replaced atomically (last, so a reader never sees a release whose files are missing). With
    ``promote_repo`` (a git checkout holding ``manifests/overlays``, or a git remote URL, which is cloned,
    committed to and pushed: a pipeline pod has no checkout) ``model_uri``/``index_uri`` are promoted
    into overlay ``promote_env``; KFP's ``minio://`` artifact URIs go in as the ``s3://`` URIs KServe
    pulls. At least one of the two must be given.
    ``decision_path`` (the gate's decision JSON) is kept in the record; with ``outcome_path`` the run's
    outcome (status ``deployed``) is written there.

    Args:
        model_dir: the fine-tuned model directory.
        index_dir: the index directory.
        metrics: the candidate's evaluation metrics.
        deploy_dir: the local release directory.
        model_uri, index_uri: artifact URIs to record and promote (default: the local paths).
        promote_repo: a GitOps checkout or remote URL.
        promote_env: the overlay to promote into.
        decision_path: the gate's decision JSON.
        details_path: per-question results, kept beside the release for the next gate.
        outcome_path: where to write the run's outcome.

    Returns:
        The release record (id, time, metrics, gate, URIs, paths, promotion result).

    Raises:
        ConfigError: neither ``deploy_dir`` nor ``promote_repo``, a missing model/index directory, or an
            unreadable decision file.
        PromotionError: the GitOps promotion fails.

    Example:
        >>> deploy_release(model_dir="out/model", index_dir="out/index", metrics={"ex": 0.7},
        ...                deploy_dir="deployed")["release_id"]  # doctest: +SKIP
        '20250101T120000000000Z'
    """
    model_dir, index_dir = Path(model_dir), Path(index_dir)
    if not deploy_dir and not promote_repo:
        raise ConfigError("deploy needs a deploy_dir (local release) or a promote_repo (GitOps checkout), got neither")
    for name, path in (("model", model_dir), ("index", index_dir)):
        if not path.is_dir():
            raise ConfigError(f"{name} directory {path} does not exist: the fine-tune / index stage did not finish")
    gate = read_decision(decision_path) if decision_path else None
    released_at = datetime.now(UTC)
    release_id = released_at.strftime("%Y%m%dT%H%M%S%fZ")
    record: dict[str, Any] = {
        "release_id": release_id, "released_at": released_at.isoformat(timespec="seconds"),
        "metrics": metrics, "gate": gate, "model_uri": model_uri or str(model_dir),
        "index_uri": index_uri or str(index_dir),
    }
    if deploy_dir:
        release_root = Path(deploy_dir).absolute() / RELEASES_DIR / release_id
        _copy_tree_atomic(model_dir, release_root / "model")
        _copy_tree_atomic(index_dir, release_root / "index")
        record.update(model_dir=str(release_root / "model"), index_dir=str(release_root / "index"))
        if details_path and Path(details_path).is_file():
            # The per-question results the next candidate is compared with, question by question.
            write_text_atomic(release_root / PER_QUESTION_FILE, Path(details_path).read_text(encoding="utf-8"))
            record["per_question"] = str(release_root / PER_QUESTION_FILE)
    if promote_repo:
        from coderag.release.promotion import is_git_remote, promote, promote_to_remote, serving_uri

        promote_fn = promote_to_remote if is_git_remote(promote_repo) else promote
        result = promote_fn(promote_repo, promote_env, serving_uri(model_uri), serving_uri(index_uri),
                            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        record["promotion"] = {"env": result.env, "committed": result.committed, "commit": result.commit,
                               "branch": result.branch, "pushed_to": result.pushed_to}
    if deploy_dir:
        write_json_atomic(Path(deploy_dir).absolute() / CURRENT_FILE, record)
    log.info("deployed release %s", release_id)
    if outcome_path:
        write_outcome(outcome_path, status="deployed", reasons=[], release=record)
    return record


def read_decision(path: str | os.PathLike) -> dict[str, Any]:
    """The gate decision JSON written by :func:`coderag.release.gate.decide`.

    Args:
        path: the decision file.

    Returns:
        The decision as a dict.

    Raises:
        ConfigError: the file is missing or not valid JSON.

    Example:
        >>> read_decision("out/decision.json")["reasons"]  # doctest: +SKIP
        []
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"gate decision {path} is not readable JSON ({exc}): rerun the gate step") from exc


def record_skipped(*, decision_path: str | os.PathLike, outcome_path: str | os.PathLike) -> dict[str, Any]:
    """Record that the gate stopped the release: outcome ``skipped`` with the gate's reasons.

    Args:
        decision_path: the gate's decision JSON.
        outcome_path: where to write the outcome.

    Returns:
        The outcome written.

    Raises:
        ConfigError: the decision file is unreadable.

    Example:
        >>> outcome = record_skipped(decision_path="decision.json", outcome_path="outcome.json")  # doctest: +SKIP
        >>> outcome["status"]  # doctest: +SKIP
        'skipped'
    """
    decision = read_decision(decision_path)
    reasons = list(decision.get("reasons", []))
    message = "deploy skipped: the candidate failed the quality gate: " + ("; ".join(reasons) or "no reason given")
    return write_outcome(outcome_path, status="skipped", reasons=reasons, message=message, gate=decision)


def write_outcome(path: str | os.PathLike, *, status: str, reasons: list[str] | None = None,
                  **details: Any) -> dict[str, Any]:
    """Write a run's (or a step's) outcome JSON: ``status``, ``reasons`` and any JSON-able ``details``.

    Args:
        path: the outcome file (written atomically).
        status: e.g. ``"deployed"`` or ``"skipped"``.
        reasons: why, one sentence each.
        **details: more JSON-serialisable fields.

    Returns:
        The outcome written, with ``recorded_at`` added.

    Example:
        >>> write_outcome("out/outcome.json", status="skipped", reasons=["ex dropped"])["status"]  # doctest: +SKIP
        'skipped'
    """
    outcome = {"status": status, "reasons": list(reasons or []), **details,
               "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(Path(path), outcome)
    return outcome

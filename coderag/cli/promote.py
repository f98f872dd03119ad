"""``coderag promote``: GitOps promotion of a model/index release into one kustomize overlay."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.config import PromotionSettings, add_settings_flags
from coderag.release.promotion import ENVIRONMENTS, PromotionError, promote


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="write model/index URIs into a manifests overlay and commit (GitOps)",
        description=(
            "Rewrite manifests/overlays/ENV/release.env with the given model and index URIs (and, with "
            "--image-digest, the overlay's images: entry), check the overlay builds, and commit it with the "
            "evaluation metrics in the message. "
            "Promoting the values already deployed is a no-op; prod accepts only the values staging holds."
        ),
    )
    parser.add_argument("--env", required=True, choices=ENVIRONMENTS, help="overlay to promote into")
    parser.add_argument(
        "--model-uri", required=True, help="storage URI of the fine-tuned encoder (s3://, gs://, pvc://, ...)"
    )
    parser.add_argument("--index-uri", required=True, help="storage URI of the FAISS index directory")
    parser.add_argument(
        "--image-digest", help="sha256:... digest of the coderag image (default: keep the overlay's; prod: staging's)"
    )
    add_settings_flags(parser, PromotionSettings, ("repo_dir", "branch"))
    parser.add_argument(
        "--metrics", help="evaluation metrics for the commit message: a JSON object or a path to a JSON file"
    )
    parser.set_defaults(func=_run)


def _load_metrics(value: str | None) -> dict | None:
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if not value.lstrip().startswith("{") and path.is_file() else value
        metrics = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise PromotionError(
            f"--metrics is neither a JSON object nor a readable JSON file ({exc}): pass e.g. '{{\"recall@5\": 0.9}}'"
        ) from exc
    if not isinstance(metrics, dict):
        raise PromotionError("--metrics must be a JSON object of metric names to values")
    return metrics


def _run(args: argparse.Namespace) -> int:
    settings = PromotionSettings.from_args(args, "promote")
    result = promote(
        settings.repo_dir,
        args.env,
        args.model_uri,
        args.index_uri,
        metrics=_load_metrics(args.metrics),
        image_digest=args.image_digest,
        settings=settings,
    )
    if result.committed:
        print(f"promoted to {result.env} on {result.branch}: commit {result.commit[:12]}")
        for key, (old, new) in result.changed.items():
            print(f"  {key}: {old} -> {new}")
    else:
        print(f"{result.env} already deploys these values: nothing committed")
    return 0

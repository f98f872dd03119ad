"""``coderag release image``: release a built image like a model, through the GitOps overlays.

The image's digest goes into the overlay's kustomize ``images:`` entry and into the pipeline compiled for
that image (``pipelines/coderag_pipeline.<env>.yaml`` in the GitOps checkout), in one commit; prod takes
only the image staging deploys.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from coderag.config import PromotionSettings, add_settings_flags
from coderag.release.promotion import ENVIRONMENTS, PromotionError, promote_image


def register(subparsers: argparse._SubParsersAction) -> None:
    release = subparsers.add_parser(
        "release",
        help="release a built image into a manifests overlay and the compiled pipeline (GitOps)",
        description="Release artifacts through the GitOps overlays; `coderag release image --help` for the image.",
    )
    kinds = release.add_subparsers(dest="kind", metavar="KIND", required=True)
    image = kinds.add_parser(
        "image",
        help="pin the coderag image by digest in an overlay and the pipeline compiled for it, and commit",
        description=(
            "Write the image's digest into manifests/overlays/ENV/kustomization.yaml (images:) and compile the "
            "pipeline for it into pipelines/coderag_pipeline.ENV.yaml, then commit both. Releasing the image an "
            "overlay already deploys is a no-op; prod accepts only the image staging deploys (its default)."
        ),
    )
    image.add_argument("--env", required=True, choices=ENVIRONMENTS, help="overlay to release into")
    source = image.add_mutually_exclusive_group()
    source.add_argument(
        "--image", help="REPOSITORY@sha256:DIGEST as pushed (or a bare sha256:DIGEST for the overlay's repository)"
    )
    source.add_argument(
        "--build-record", type=Path,
        help="build/image.json of `CODERAG_IMAGE_PUSH=docker://... scripts/build-image.sh`: release the pushed image",
    )
    image.add_argument(
        "--pipeline-out",
        help="where (inside the checkout) to write the pipeline compiled for the image "
             "(default pipelines/coderag_pipeline.ENV.yaml)",
    )
    add_settings_flags(image, PromotionSettings, ("repo_dir", "branch"))
    image.set_defaults(func=_run_image)


def _compiled_pipeline(image: str) -> str:
    # The pipeline shell (kfp) compiles it; the core only commits the text.
    from pipelines.run import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="coderag-release-") as scratch:
        return compile_pipeline(Path(scratch) / "pipeline.yaml", image=image).read_text(encoding="utf-8")


def _run_image(args: argparse.Namespace) -> int:
    from coderag.release.image import pushed_image

    settings = PromotionSettings.from_args(args, "release-image")
    if args.build_record is not None:
        image = pushed_image(args.build_record)
    elif args.image is not None:
        image = args.image
    elif args.env == "prod":
        image = None
    else:
        raise PromotionError(f"no image to release to {args.env}: pass --image REPOSITORY@sha256:DIGEST or "
                             "--build-record build/image.json")
    out = args.pipeline_out or f"pipelines/coderag_pipeline.{args.env}.yaml"
    result = promote_image(settings.repo_dir, args.env, image, files=lambda target: {out: _compiled_pipeline(target)},
                           settings=settings)
    if result.committed:
        print(f"released {result.release.image} to {result.env} on {result.branch}: commit {result.commit[:12]}")
        for key, (old, new) in result.changed.items():
            print(f"  {key}: {old} -> {new}")
        print(f"  pipeline: {out}")
    else:
        print(f"{result.env} already deploys {result.release.image}: nothing committed")
    return 0

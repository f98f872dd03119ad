"""Releasing the image like a model: `coderag release image` into a temporary GitOps repository.

The digest goes into the overlay's kustomize ``images:`` entry and into the pipeline compiled for the image,
in one commit; a second release of the same image is a no-op; prod takes only staging's image.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tooling import git, needs_tool

from coderag.cli import main
from coderag.release.image import pushed_image
from coderag.release.promotion import PromotionError, pin_image, promote_image, read_image, read_release

REPO_ROOT = Path(__file__).resolve().parents[1]
ZERO = "sha256:" + "0" * 64
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
PUSHED = "registry.example.com/me/coderag@" + DIGEST

pytestmark = needs_tool("git", "scripts/install-system.sh")
needs_kubectl = needs_tool("kubectl", ">= 1.27, with built-in kustomize")


def release(repo: Path, env: str, *extra: str) -> int:
    return main(["release", "image", "--env", env, "--repo-dir", str(repo), *extra])


def pipeline_images(path: Path) -> set[str]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def test_release_pins_the_overlay_and_the_compiled_pipeline_in_one_commit(gitops_repo, capsys):
    before = read_release(gitops_repo, "dev")
    assert release(gitops_repo, "dev", "--image", PUSHED) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"released {PUSHED} to dev on main: commit ")
    assert f"  IMAGE: ghcr.io/coderag/coderag@{ZERO} -> {PUSHED}" in out
    assert git(gitops_repo, "show", "--name-only", "--format=", "HEAD").splitlines() == [
        "manifests/overlays/dev/kustomization.yaml",
        "pipelines/coderag_pipeline.dev.yaml",
    ]
    assert git(gitops_repo, "log", "-1", "--format=%s") == f"release-image(dev): {PUSHED}"
    assert git(gitops_repo, "status", "--porcelain") == ""
    kustomization = yaml.safe_load((gitops_repo / "manifests/overlays/dev/kustomization.yaml").read_text())
    assert kustomization["images"] == [
        {"name": "ghcr.io/coderag/coderag", "newName": "registry.example.com/me/coderag", "digest": DIGEST}
    ]
    after = read_release(gitops_repo, "dev")
    assert (after.model_uri, after.index_uri, after.image) == (before.model_uri, before.index_uri, PUSHED)
    assert pipeline_images(gitops_repo / "pipelines/coderag_pipeline.dev.yaml") == {PUSHED}
    # The other overlays are untouched.
    assert read_image(gitops_repo, "staging") == read_image(gitops_repo, "prod") == f"ghcr.io/coderag/coderag@{ZERO}"


def test_second_release_of_the_same_image_is_a_no_op(gitops_repo, capsys):
    assert release(gitops_repo, "staging", "--image", PUSHED) == 0
    head = git(gitops_repo, "rev-parse", "HEAD")
    capsys.readouterr()
    assert release(gitops_repo, "staging", "--image", PUSHED) == 0
    assert capsys.readouterr().out == f"staging already deploys {PUSHED}: nothing committed\n"
    assert git(gitops_repo, "rev-parse", "HEAD") == head


def test_prod_takes_only_the_image_staging_deploys(gitops_repo, capsys):
    assert release(gitops_repo, "prod") == 2
    assert capsys.readouterr().err == (
        "coderag: error: staging deploys no released image yet (the all-zero placeholder): "
        "release the image to staging first\n"
    )
    assert release(gitops_repo, "staging", "--image", PUSHED) == 0
    staged = git(gitops_repo, "rev-parse", "HEAD")
    capsys.readouterr()
    other = "registry.example.com/me/coderag@" + OTHER
    assert release(gitops_repo, "prod", "--image", other) == 2
    assert capsys.readouterr().err == (
        f"coderag: error: prod accepts only the image staging deploys now ({PUSHED}), not {other}: "
        "release the image to staging first\n"
    )
    assert git(gitops_repo, "rev-parse", "HEAD") == staged and git(gitops_repo, "status", "--porcelain") == ""
    assert release(gitops_repo, "prod") == 0  # no --image: staging's
    assert read_image(gitops_repo, "prod") == PUSHED
    assert pipeline_images(gitops_repo / "pipelines/coderag_pipeline.prod.yaml") == {PUSHED}


def test_no_all_zero_digest_remains_after_releasing_through_every_environment(gitops_repo):
    for env in ("dev", "staging", "prod"):
        assert release(gitops_repo, env, *(["--image", PUSHED] if env != "prod" else [])) == 0
    overlays = "".join(p.read_text() for p in (gitops_repo / "manifests/overlays").rglob("*") if p.is_file())
    assert ZERO.split(":")[1] not in overlays
    assert {read_image(gitops_repo, env) for env in ("dev", "staging", "prod")} == {PUSHED}


@needs_kubectl
def test_released_image_reaches_the_built_inference_services(gitops_repo):
    assert release(gitops_repo, "dev", "--image", PUSHED) == 0
    built = subprocess.run(["kubectl", "kustomize", str(gitops_repo / "manifests/overlays/dev")],
                           capture_output=True, text=True, check=True).stdout
    services = {d["metadata"]["name"]: d for d in yaml.safe_load_all(built) if d and d["kind"] == "InferenceService"}
    for name in ("coderag-retriever", "coderag-rag"):
        assert services[name]["spec"]["predictor"]["containers"][0]["image"] == PUSHED, name
    assert "ghcr.io/coderag/coderag" not in built  # no container is left on the unpinned name


def test_a_bare_digest_keeps_the_overlay_repository(gitops_repo):
    result = promote_image(gitops_repo, "dev", DIGEST)
    assert result.committed and result.release.image == "ghcr.io/coderag/coderag@" + DIGEST
    assert set(result.changed) == {"IMAGE"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "sha256:xyz"], "image digest 'sha256:xyz' is not sha256:<64 lowercase hex digits>: "
                                    "copy it from the registry"),
        (["--image", "Registry/Repo@" + DIGEST], f"image 'Registry/Repo@{DIGEST}' is not "
                                                 "<repository>@sha256:<64 lowercase hex digits>: copy the digest "
                                                 "`buildah push --digestfile` wrote"),
        (["--image", "r.io/c@" + ZERO], "the all-zero digest is a placeholder, not an image: release a pushed "
                                        "image's digest"),
        ([], "no image to release to dev: pass --image REPOSITORY@sha256:DIGEST or --build-record "
             "build/image.json"),
        (["--image", PUSHED, "--pipeline-out", "../outside.yaml"], "../outside.yaml is outside the GitOps checkout: "
                                                                   "pass a path inside it"),
    ],
)
def test_invalid_releases_are_refused_with_one_line_and_nothing_written(gitops_repo, capsys, argv, message):
    head = git(gitops_repo, "rev-parse", "HEAD")
    assert release(gitops_repo, "dev", *argv) == 2
    assert capsys.readouterr().err == f"coderag: error: {message}\n"
    assert git(gitops_repo, "rev-parse", "HEAD") == head and git(gitops_repo, "status", "--porcelain") == ""
    assert not (gitops_repo.parent / "outside.yaml").exists()


def test_release_from_the_build_record_of_a_pushed_image(gitops_repo, tmp_path):
    record = tmp_path / "image.json"
    record.write_text(json.dumps({"image": "localhost/coderag:0.1.0", "digest": OTHER,
                                  "pushed": {"destination": "docker://registry.example.com/me/coderag:0.1.0",
                                             "digest": DIGEST}}))
    assert pushed_image(record) == PUSHED
    assert release(gitops_repo, "dev", "--build-record", str(record)) == 0
    assert read_image(gitops_repo, "dev") == PUSHED


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (None, "cannot read the build record"),
        ({"image": "localhost/coderag:0.1.0", "digest": DIGEST}, "records no pushed image: push it with "
                                                                 "CODERAG_IMAGE_PUSH=docker://REGISTRY/REPO:TAG"),
        ({"pushed": {"destination": "oci:/tmp/layout:0.1.0", "digest": DIGEST}},
         "records a push to 'oci:/tmp/layout:0.1.0', which no cluster can pull"),
    ],
)
def test_build_records_without_a_registry_push_are_refused(tmp_path, record, message):
    path = tmp_path / "image.json"
    if record is not None:
        path.write_text(json.dumps(record))
    with pytest.raises(PromotionError, match=re.escape(message)):
        pushed_image(path)


def test_pin_image_needs_the_entry_it_rewrites():
    with pytest.raises(PromotionError, match=re.escape("has no images: entry '- name: ghcr.io/coderag/coderag'")):
        pin_image("images:\n  - name: other/image\n    digest: " + DIGEST + "\n", PUSHED)


@pytest.mark.parametrize("image", ["ghcr.io/coderag/coderag:0.1.0", "ghcr.io/coderag/coderag@sha256:xyz",
                                   "Ghcr.io/Coderag@sha256:" + "a" * 64])
def test_every_image_check_refuses_a_reference_not_pinned_by_digest(image):
    """Each entry point that writes or accepts an image checks it itself, not only through its callers."""
    from coderag.release.promotion import PromotionError, Release, check_release, pin_image

    text = "images:\n  - name: ghcr.io/coderag/coderag\n    newName: a/b\n    digest: sha256:" + "0" * 64 + "\n"
    with pytest.raises(PromotionError, match=r"is not <repository>@sha256:<64 lowercase hex digits>"):
        pin_image(text, image)
    with pytest.raises(PromotionError, match="is not pinned by digest"):
        check_release(Release("s3://b/model", "s3://b/index", image))

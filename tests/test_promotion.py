"""GitOps promotion into a temporary git repository holding a copy of manifests/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tooling import git, needs_tool

from coderag.release.promotion import PromotionError, PromotionSettings, promote, read_release

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32
METRICS = {"recall@5": 0.93, "execution_accuracy": 0.71}

needs_git = needs_tool("git", "scripts/install-system.sh")
pytestmark = needs_git


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def test_staging_promotion_commits_only_the_overlay_values(gitops_repo):
    before = head(gitops_repo)
    result = promote(
        gitops_repo, "staging", "s3://art/run-7/encoder", "s3://art/run-7/index", metrics=METRICS, image_digest=DIGEST
    )
    assert result.committed and result.commit == head(gitops_repo) != before
    assert git(gitops_repo, "show", "--name-only", "--format=", "HEAD").splitlines() == [
        "manifests/overlays/staging/kustomization.yaml",
        "manifests/overlays/staging/release.env",
    ]
    message = git(gitops_repo, "log", "-1", "--format=%B")
    assert message.startswith("promote(staging): s3://art/run-7/encoder\n")
    assert "recall@5: 0.93" in message and "execution_accuracy: 0.71" in message
    assert "MODEL_URI: s3://art/run-7/encoder (was s3://coderag-artifacts/runs/bootstrap/encoder)" in message
    assert git(gitops_repo, "log", "-1", "--format=%an") == PromotionSettings().author_name
    assert git(gitops_repo, "status", "--porcelain") == ""
    release = read_release(gitops_repo, "staging")
    assert (release.model_uri, release.index_uri) == ("s3://art/run-7/encoder", "s3://art/run-7/index")
    assert release.image == "ghcr.io/coderag/coderag@" + DIGEST
    assert set(result.changed) == {"MODEL_URI", "INDEX_URI", "IMAGE"}


@needs_tool("kubectl", ">= 1.27, with built-in kustomize")
def test_promoted_values_reach_the_built_inference_services(gitops_repo):
    promote(gitops_repo, "dev", "gs://b/enc-2", "gs://b/idx-2", image_digest=DIGEST)
    built = subprocess.run(
        ["kubectl", "kustomize", str(gitops_repo / "manifests/overlays/dev")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = {d["metadata"]["name"]: d for d in yaml.safe_load_all(built) if d and d["kind"] == "InferenceService"}
    retriever = services["coderag-retriever"]["spec"]["predictor"]
    assert {u["uri"] for u in retriever["storageUris"]} == {"gs://b/enc-2", "gs://b/idx-2"}
    assert retriever["containers"][0]["image"].endswith(DIGEST)
    assert services["coderag-rag"]["spec"]["predictor"]["containers"][0]["image"].endswith(DIGEST)


def test_second_promotion_of_the_same_values_is_a_no_op(gitops_repo):
    first = promote(gitops_repo, "staging", "s3://art/run-7/encoder", "s3://art/run-7/index", metrics=METRICS)
    after_first = head(gitops_repo)
    second = promote(
        gitops_repo, "staging", "s3://art/run-7/encoder", "s3://art/run-7/index", metrics={"recall@5": 0.5}
    )
    assert first.committed and not second.committed and second.commit is None
    assert head(gitops_repo) == after_first
    assert git(gitops_repo, "status", "--porcelain") == ""


def test_prod_takes_only_the_values_staging_holds(gitops_repo):
    promote(gitops_repo, "staging", "s3://art/run-7/encoder", "s3://art/run-7/index", image_digest=DIGEST)
    staged = head(gitops_repo)
    prod_file = gitops_repo / "manifests/overlays/prod/release.env"
    original = prod_file.read_text()
    with pytest.raises(PromotionError, match="prod accepts only the values staging deploys now, but MODEL_URI differ"):
        promote(gitops_repo, "prod", "s3://art/run-8/encoder", "s3://art/run-7/index")
    with pytest.raises(PromotionError, match="IMAGE differ"):
        promote(
            gitops_repo, "prod", "s3://art/run-7/encoder", "s3://art/run-7/index", image_digest="sha256:" + "cd" * 32
        )
    assert head(gitops_repo) == staged and prod_file.read_text() == original

    result = promote(gitops_repo, "prod", "s3://art/run-7/encoder", "s3://art/run-7/index", metrics=METRICS)
    assert result.committed
    assert read_release(gitops_repo, "prod") == read_release(gitops_repo, "staging")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"env": "qa"}, "unknown environment 'qa'"),
        ({"model_uri": "/local/encoder"}, "model URI '/local/encoder' is not a storage URI"),
        ({"model_uri": "ftp://host/encoder"}, "model URI 'ftp://host/encoder' is not a storage URI: use one of s3://"),
        ({"index_uri": "s3://"}, "index URI 's3://' is not a storage URI"),
        ({"index_uri": "s3://b/with space"}, "is not a storage URI"),
        ({"image_digest": "sha256:xyz"}, "is not sha256:<64 lowercase hex digits>"),
    ],
)
def test_invalid_values_are_refused_and_nothing_is_written(gitops_repo, kwargs, match):
    args = {"env": "staging", "model_uri": "s3://a/enc", "index_uri": "s3://a/idx", **kwargs}
    before = head(gitops_repo)
    with pytest.raises(PromotionError, match=match):
        promote(gitops_repo, args.pop("env"), **args)
    assert head(gitops_repo) == before and git(gitops_repo, "status", "--porcelain") == ""


def test_failed_overlay_build_restores_the_file(gitops_repo, tmp_path):
    failing = tmp_path / "bin" / "kubectl"
    failing.parent.mkdir()
    failing.write_text("#!/bin/sh\necho 'accumulating resources: boom' >&2\nexit 1\n")
    failing.chmod(0o755)
    before = (gitops_repo / "manifests/overlays/staging/release.env").read_text()
    with pytest.raises(
        PromotionError, match="overlay staging does not build with the new values: accumulating resources: boom"
    ):
        promote(gitops_repo, "staging", "s3://a/enc", "s3://a/idx", settings=PromotionSettings(kubectl=str(failing)))
    assert (gitops_repo / "manifests/overlays/staging/release.env").read_text() == before
    assert git(gitops_repo, "status", "--porcelain") == ""


def test_promotion_to_a_branch(gitops_repo):
    result = promote(
        gitops_repo,
        "dev",
        "s3://a/enc",
        "s3://a/idx",
        settings=PromotionSettings(branch="promote/dev", author_name="pipeline"),
    )
    assert result.branch == "promote/dev"
    assert git(gitops_repo, "rev-parse", "--abbrev-ref", "HEAD") == "promote/dev"
    assert git(gitops_repo, "log", "-1", "--format=%an %cn") == "pipeline pipeline"
    assert git(gitops_repo, "rev-list", "--count", "main..promote/dev") == "1"


def test_not_a_git_repository(tmp_path):
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    with pytest.raises(PromotionError, match="git rev-parse failed"):
        promote(tmp_path, "dev", "s3://a/enc", "s3://a/idx")


def test_cli_promote(gitops_repo, tmp_path, capsys):
    from coderag.cli import main

    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps(METRICS))
    argv = [
        "promote",
        "--env",
        "staging",
        "--model-uri",
        "s3://c/enc",
        "--index-uri",
        "s3://c/idx",
        "--repo-dir",
        str(gitops_repo),
        "--metrics",
        str(metrics_file),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("promoted to staging on main: commit ") and "MODEL_URI: " in out
    assert "recall@5: 0.93" in git(gitops_repo, "log", "-1", "--format=%B")
    assert main(argv) == 0
    assert "already deploys these values: nothing committed" in capsys.readouterr().out
    assert (
        main(
            [
                "promote",
                "--env",
                "prod",
                "--model-uri",
                "s3://x/enc",
                "--index-uri",
                "s3://c/idx",
                "--repo-dir",
                str(gitops_repo),
            ]
        )
        == 2
    )
    assert "prod accepts only the values staging deploys now" in capsys.readouterr().err
    assert main(argv[:-1] + ["{not json"]) == 2
    assert "--metrics is neither a JSON object nor a readable JSON file" in capsys.readouterr().err


@pytest.fixture
def gitops_remote(gitops_repo, tmp_path) -> Path:
    """A bare repository standing in for the GitOps remote a pipeline pod pushes to."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(gitops_repo), str(bare)], check=True)
    return bare


def test_promotion_to_a_remote_clones_commits_and_pushes_once(gitops_remote):
    from coderag.release.promotion import promote_to_remote

    url = f"file://{gitops_remote}"
    before = git(gitops_remote, "rev-parse", "main")
    result = promote_to_remote(url, "staging", "s3://art/run-9/encoder", "s3://art/run-9/index", metrics=METRICS)
    assert result.committed and result.pushed_to == url and result.branch == "main"
    assert git(gitops_remote, "rev-parse", "main") == result.commit != before
    released = git(gitops_remote, "show", "main:manifests/overlays/staging/release.env")
    assert "MODEL_URI=s3://art/run-9/encoder" in released and "INDEX_URI=s3://art/run-9/index" in released
    again = promote_to_remote(url, "staging", "s3://art/run-9/encoder", "s3://art/run-9/index")
    assert not again.committed and again.pushed_to is None
    assert git(gitops_remote, "rev-parse", "main") == result.commit


def test_promotion_to_a_remote_branch_leaves_main_alone(gitops_remote):
    from coderag.release.promotion import promote_to_remote

    main = git(gitops_remote, "rev-parse", "main")
    settings = PromotionSettings(branch="promotions")
    first = promote_to_remote(f"file://{gitops_remote}", "dev", "s3://a/m1", "s3://a/i1", settings=settings)
    second = promote_to_remote(f"file://{gitops_remote}", "dev", "s3://a/m2", "s3://a/i2", settings=settings)
    assert first.branch == second.branch == "promotions"
    assert git(gitops_remote, "rev-parse", "main") == main
    assert git(gitops_remote, "rev-list", "--count", f"{main}..promotions") == "2"  # the second built on the first


def test_unreachable_remote_is_one_clear_error(tmp_path):
    from coderag.release.promotion import promote_to_remote

    with pytest.raises(PromotionError, match="cannot clone the GitOps repository file://.*check the URL") as err:
        promote_to_remote(f"file://{tmp_path}/absent.git", "dev", "s3://a/m", "s3://a/i")
    assert "\n" not in str(err.value)


def test_remote_detection_uri_mapping_and_token_header():
    from coderag.release.promotion import _auth_config, is_git_remote, serving_uri

    assert is_git_remote("https://github.com/org/gitops.git") and is_git_remote("git@github.com:org/gitops.git")
    assert is_git_remote("file:///srv/gitops.git") and not is_git_remote("/srv/checkout")
    assert not is_git_remote("gitops")
    assert serving_uri("minio://mlpipeline/v2/artifacts/run/model") == "s3://mlpipeline/v2/artifacts/run/model"
    assert serving_uri("gs://bucket/model") == "gs://bucket/model"
    header = _auth_config("https://github.com/org/gitops.git", "t0ken")
    assert header == ("-c", "http.extraHeader=Authorization: Basic eC1hY2Nlc3MtdG9rZW46dDBrZW4=")
    assert _auth_config("git@github.com:org/gitops.git", "t0ken") == () == _auth_config("https://h/r.git", "")

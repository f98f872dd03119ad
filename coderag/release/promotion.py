"""GitOps promotion: write a model/index/image release into one kustomize overlay and commit it.

Each overlay (``manifests/overlays/<env>``) takes its model and index from ``release.env`` (``MODEL_URI``,
``INDEX_URI``), which kustomize turns into the ``coderag-release`` ConfigMap and copies into the
InferenceServices, and its image from the ``images:`` entry of its ``kustomization.yaml`` (the coderag image
pinned by ``digest:``). Promotion rewrites only those two files, checks the overlay still builds with the
new values, and commits them; Argo CD deploys the commit. Prod only takes the values staging currently
holds, so nothing reaches prod that did not run in staging first. Images are released the same way
(:func:`promote_image`), with the pipeline compiled for that image in the same commit.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from coderag.atomic_files import write_text_atomic
from coderag.config import PromotionSettings
from coderag.errors import CodeRAGError

log = logging.getLogger(__name__)

ENVIRONMENTS = ("dev", "staging", "prod")
OVERLAYS_DIR = Path("manifests") / "overlays"
RELEASE_FILE = "release.env"
RELEASE_KEYS = ("MODEL_URI", "INDEX_URI")
KUSTOMIZATION_FILE = "kustomization.yaml"
# The image name the base manifests use; each overlay's ``images:`` entry for it sets the released one.
IMAGE_NAME = "ghcr.io/coderag/coderag"
URI_SCHEMES = ("s3://", "gs://", "azure://", "https://", "hf://", "pvc://", "oci://")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9]@sha256:[0-9a-f]{64}$")
_ZERO_DIGEST = "sha256:" + "0" * 64


class PromotionError(CodeRAGError):
    """A promotion cannot be made: bad values, prod values not in staging, or an overlay that fails to build."""


@dataclass(frozen=True)
class Release:
    """The values one overlay deploys."""

    model_uri: str
    index_uri: str
    image: str

    def as_env(self) -> dict[str, str]:
        return {"MODEL_URI": self.model_uri, "INDEX_URI": self.index_uri, "IMAGE": self.image}


@dataclass
class PromotionResult:
    """What :func:`promote` did: ``committed`` is False when the overlay already held these values."""

    env: str
    release: Release
    previous: Release
    committed: bool
    commit: str | None = None
    branch: str | None = None
    message: str = ""
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    pushed_to: str | None = None


# KFP's default artifact store is MinIO, which KServe's storage initializer reads through its S3 client.
_ARTIFACT_SCHEMES = {"minio://": "s3://"}
_REMOTE = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


def serving_uri(artifact_uri: str) -> str:
    """The storage URI KServe can pull for a pipeline artifact URI (``minio://b/p`` -> ``s3://b/p``).

    Args:
        artifact_uri: a KFP artifact URI.

    Returns:
        The URI with ``minio://`` mapped to ``s3://``; other URIs unchanged.

    Example:
        >>> serving_uri("minio://mlpipeline/artifacts/model")
        's3://mlpipeline/artifacts/model'
    """
    for prefix, replacement in _ARTIFACT_SCHEMES.items():
        if artifact_uri.startswith(prefix):
            return replacement + artifact_uri[len(prefix):]
    return artifact_uri


def is_git_remote(target: str) -> bool:
    """Whether ``target`` names a git remote (URL or ``user@host:path``) rather than a local checkout.

    Args:
        target: a path or a git remote.

    Returns:
        True for a remote.

    Example:
        >>> is_git_remote("git@github.com:org/gitops.git"), is_git_remote("./gitops")
        (True, False)
    """
    return bool(_REMOTE.match(target))


def release_path(repo_dir: Path, env: str) -> Path:
    """The ``release.env`` file of overlay ``env`` in the checkout ``repo_dir``.

    Args:
        repo_dir: the GitOps checkout.
        env: the environment name.

    Returns:
        ``<repo_dir>/manifests/overlays/<env>/release.env``.

    Example:
        >>> release_path(Path("gitops"), "dev").as_posix()
        'gitops/manifests/overlays/dev/release.env'
    """
    return Path(repo_dir) / OVERLAYS_DIR / env / RELEASE_FILE


def read_release(repo_dir: Path, env: str) -> Release:
    """The values overlay ``env`` currently deploys (``release.env`` and the image of ``kustomization.yaml``).

    Args:
        repo_dir: the GitOps checkout.
        env: one of :data:`ENVIRONMENTS`.

    Returns:
        The overlay's :class:`Release`.

    Raises:
        PromotionError: an unknown env, a missing or malformed ``release.env``, or no pinned image.

    Example:
        >>> read_release(Path("gitops"), "staging").model_uri  # doctest: +SKIP
        's3://models/coderag/encoder'
    """
    _check_env(env)
    path = release_path(repo_dir, env)
    if not path.is_file():
        raise PromotionError(f"{path} does not exist: run promote from a checkout that has manifests/overlays/{env}")
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise PromotionError(f"{path}:{number} is not KEY=VALUE: fix the line or restore the file from git")
        values[key.strip()] = value.strip()
    missing = [k for k in RELEASE_KEYS if k not in values]
    if missing:
        raise PromotionError(f"{path} lacks {', '.join(missing)}: restore the file from git")
    return Release(values["MODEL_URI"], values["INDEX_URI"], read_image(repo_dir, env))


def read_image(repo_dir: Path, env: str) -> str:
    """The image overlay ``env`` deploys: ``<newName>@<digest>`` of its ``images:`` entry for :data:`IMAGE_NAME`.

    Args:
        repo_dir: the GitOps checkout.
        env: one of :data:`ENVIRONMENTS`.

    Returns:
        The digest-pinned image reference.

    Raises:
        PromotionError: no ``kustomization.yaml``, or no ``images:`` entry with a digest for :data:`IMAGE_NAME`.

    Example:
        >>> read_image(Path("gitops"), "dev")  # doctest: +SKIP
        'ghcr.io/coderag/coderag@sha256:...'
    """
    path = Path(repo_dir) / OVERLAYS_DIR / env / KUSTOMIZATION_FILE
    try:
        kustomization = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PromotionError(f"cannot read {path} ({exc}): restore the file from git") from exc
    for entry in kustomization.get("images") or []:
        if entry.get("name") == IMAGE_NAME and entry.get("digest"):
            return f"{entry.get('newName') or IMAGE_NAME}@{entry['digest']}"
    raise PromotionError(f"{path} has no images: entry with a digest for {IMAGE_NAME}: restore the file from git")


def pin_image(kustomization_text: str, image: str) -> str:
    """``kustomization_text`` with its ``images:`` entry for :data:`IMAGE_NAME` set to ``image`` (comments kept).

    Args:
        kustomization_text: a ``kustomization.yaml`` holding an ``images:`` entry named :data:`IMAGE_NAME`
            whose ``newName`` and ``digest`` are its last two keys.
        image: ``<repository>@sha256:<64 hex>``.

    Returns:
        The text with that entry's ``newName`` and ``digest`` replaced.

    Raises:
        PromotionError: ``image`` is not digest-pinned, or the file has no such entry.

    Example:
        >>> text = "images:\\n  - name: ghcr.io/coderag/coderag\\n    newName: a/b\\n    digest: sha256:" + "0" * 64 + "\\n"
        >>> pin_image(text, "r.io/c@sha256:" + "1" * 64).splitlines()[2:]
        ['    newName: r.io/c', '    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111']
    """
    if not _IMAGE_REF.match(image):
        raise PromotionError(f"image {image!r} is not <repository>@sha256:<64 lowercase hex digits>")
    name, digest = image.split("@", 1)
    entry = re.compile(
        r"^(?P<indent>\s*)- name: " + re.escape(IMAGE_NAME) + r"\n"
        r"(?P=indent)  newName: \S+\n"
        r"(?P=indent)  digest: \S+$",
        re.MULTILINE,
    )
    found = entry.search(kustomization_text)
    if found is None:
        raise PromotionError(
            f"the overlay's {KUSTOMIZATION_FILE} has no images: entry '- name: {IMAGE_NAME}' followed by newName and "
            "digest: restore the file from git"
        )
    indent = found.group("indent")
    replacement = f"{indent}- name: {IMAGE_NAME}\n{indent}  newName: {name}\n{indent}  digest: {digest}"
    return kustomization_text[: found.start()] + replacement + kustomization_text[found.end():]


def render_release(release: Release) -> str:
    """``release.env`` text for ``release`` (kustomize's env-file format; the image lives in ``images:``).

    Args:
        release: the values to write.

    Returns:
        The file text: a comment line, then ``MODEL_URI`` and ``INDEX_URI``.

    Example:
        >>> render_release(Release("s3://b/model", "s3://b/index", "img@sha256:" + "0" * 64)).splitlines()[1]
        'MODEL_URI=s3://b/model'
    """
    lines = ["# Written by `coderag promote`; kustomize copies these into the InferenceServices."]
    lines += [f"{k}={v}" for k, v in release.as_env().items() if k in RELEASE_KEYS]
    return "\n".join(lines) + "\n"


def check_release(release: Release) -> None:
    """Raise :class:`PromotionError` unless every value is a usable URI / digest-pinned image.

    Args:
        release: the values to check.

    Returns:
        None.

    Raises:
        PromotionError: a URI without a known storage scheme, or an image not pinned by ``@sha256:``.

    Example:
        >>> check_release(Release("s3://b/model", "s3://b/index", "ghcr.io/org/coderag@sha256:" + "0" * 64))
    """
    for name, uri in (("model URI", release.model_uri), ("index URI", release.index_uri)):
        if not uri.startswith(URI_SCHEMES) or any(c.isspace() for c in uri) or len(uri) <= len(uri.split("://")[0]) + 3:
            raise PromotionError(
                f"{name} {uri!r} is not a storage URI: use one of {', '.join(URI_SCHEMES)} followed by a path"
            )
    if not _IMAGE_REF.match(release.image):
        raise PromotionError(
            f"image {release.image!r} is not pinned by digest: pass --image-digest sha256:<64 hex digits>"
        )


def image_reference(current_image: str, image: str) -> str:
    """The digest-pinned reference ``image`` names: a full ``repo@sha256:...``, or a bare digest for ``current_image``.

    Args:
        current_image: the reference the overlay deploys now (its repository is kept for a bare digest).
        image: ``sha256:<64 hex>`` or ``<repository>@sha256:<64 hex>``.

    Returns:
        ``<repository>@sha256:<64 hex>``.

    Raises:
        PromotionError: ``image`` is neither, or its digest is the all-zero placeholder.

    Example:
        >>> image_reference("ghcr.io/coderag/coderag@sha256:" + "0" * 64, "sha256:" + "ab" * 32)[-8:]
        'abababab'
    """
    if "@" not in image:
        if not _DIGEST.match(image):
            raise PromotionError(
                f"image digest {image!r} is not sha256:<64 lowercase hex digits>: copy it from the registry"
            )
        image = current_image.split("@", 1)[0] + "@" + image
    if not _IMAGE_REF.match(image):
        raise PromotionError(
            f"image {image!r} is not <repository>@sha256:<64 lowercase hex digits>: copy the digest `buildah push "
            "--digestfile` wrote"
        )
    if image.endswith(_ZERO_DIGEST):
        raise PromotionError("the all-zero digest is a placeholder, not an image: release a pushed image's digest")
    return image


def _check_env(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise PromotionError(f"unknown environment {env!r}: choose one of {', '.join(ENVIRONMENTS)}")


def _git(repo_dir: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PromotionError("git is not installed: install git to promote") from exc
    if done.returncode != 0:
        raise PromotionError(
            f"git {_subcommand(args)} failed in {repo_dir}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout.strip()


def _subcommand(args: tuple[str, ...]) -> str:
    return next((a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-c")), "")


def build_overlay(repo_dir: Path, env: str, kubectl: str = "kubectl") -> str | None:
    """``kubectl kustomize`` output of overlay ``env``; ``None`` when kubectl is not installed.

    Args:
        repo_dir: the GitOps checkout.
        env: the overlay to build.
        kubectl: the kubectl executable.

    Returns:
        The rendered manifests, or ``None`` without kubectl.

    Raises:
        PromotionError: the overlay does not build.

    Example:
        >>> "InferenceService" in build_overlay(Path("gitops"), "dev")  # doctest: +SKIP
        True
    """
    exe = shutil.which(kubectl)
    if exe is None:
        log.warning("kubectl not found: skipping the kustomize build check of overlay %s", env)
        return None
    overlay = Path(repo_dir) / OVERLAYS_DIR / env
    done = subprocess.run([exe, "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PromotionError(f"overlay {env} does not build with the new values: {done.stderr.strip()}")
    return done.stdout


def _commit_message(env: str, release: Release, previous: Release, metrics: dict | None) -> str:
    subject = f"promote({env}): {release.model_uri}"
    body = [f"Promote to {env}.", ""]
    for key, new in release.as_env().items():
        old = previous.as_env()[key]
        body.append(f"{key}: {new}" + ("" if old == new else f" (was {old})"))
    if metrics:
        body += ["", "Evaluation metrics:"]
        body += [f"  {k}: {json.dumps(v)}" for k, v in sorted(metrics.items())]
    return subject + "\n\n" + "\n".join(body) + "\n"


def _switch_branch(repo_dir: Path, branch: str) -> None:
    current = _git(repo_dir, "rev-parse", "--abbrev-ref", "HEAD")
    if current == branch:
        return
    exists = (
        subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    _git(repo_dir, "switch", *(() if exists else ("-c",)), branch)


def _open_overlay(repo_dir: Path | str, env: str, settings: PromotionSettings) -> tuple[Path, Release]:
    """Check ``env`` and the checkout, switch to the settings' branch, and read the overlay's release now."""
    repo = Path(repo_dir)
    _check_env(env)
    _git(repo, "rev-parse", "--git-dir")
    if settings.branch:
        _switch_branch(repo, settings.branch)
    return repo, read_release(repo, env)


def promote(
    repo_dir: Path | str,
    env: str,
    model_uri: str,
    index_uri: str,
    metrics: dict | None = None,
    image_digest: str | None = None,
    *,
    settings: PromotionSettings | None = None,
) -> PromotionResult:
    """Write ``model_uri``/``index_uri`` (and the image digest) into overlay ``env`` and commit it.

    Promises: only the overlay's ``release.env`` (and, for a new image, its ``kustomization.yaml``) change;
    the overlay is rebuilt with ``kubectl kustomize`` (when installed) and the files restored if the build
    fails; a promotion of the values already there makes no commit; prod accepts only the values staging
    holds now (its image defaults to staging's). The commit message lists the values and ``metrics``.

    Args:
        repo_dir: a git checkout holding ``manifests/overlays``.
        env: ``dev``, ``staging`` or ``prod``.
        model_uri, index_uri: storage URIs of the encoder and the index.
        metrics: numbers to list in the commit message.
        image_digest: ``sha256:...`` to pin the serving image to (default: keep the overlay's).
        settings: branch, git identity and kubectl (default: :class:`~coderag.config.PromotionSettings`).

    Returns:
        A :class:`PromotionResult` (``committed`` False when nothing changed).

    Raises:
        PromotionError: bad values, prod values not in staging, a failing overlay build, or a git error.

    Example:
        >>> promote("gitops", "dev", "s3://models/enc", "s3://models/index").committed  # doctest: +SKIP
        True
    """
    settings = settings or PromotionSettings()
    repo, previous = _open_overlay(repo_dir, env, settings)

    staging = read_release(repo, "staging") if env == "prod" else None
    # Prod keeps staging's image unless a digest is given (and then it must be staging's).
    base_image = staging.image if staging is not None else previous.image
    if image_digest and not _DIGEST.match(image_digest):
        raise PromotionError(
            f"image digest {image_digest!r} is not sha256:<64 lowercase hex digits>: copy it from the registry"
        )
    image = image_reference(previous.image, image_digest) if image_digest else base_image
    release = Release(model_uri, index_uri, image)
    check_release(release)
    if staging is not None and release != staging:
        diff = [k for k, v in release.as_env().items() if staging.as_env()[k] != v]
        raise PromotionError(
            f"prod accepts only the values staging deploys now, but {', '.join(diff)} "
            f"{'differs' if len(diff) == 1 else 'differ'}: "
            "promote to staging first"
        )
    return _commit_release(repo, env, previous, release, _commit_message(env, release, previous, metrics),
                           settings=settings)


def promote_image(
    repo_dir: Path | str,
    env: str,
    image: str | None = None,
    *,
    files: Callable[[str], dict[str, str]] | None = None,
    settings: PromotionSettings | None = None,
) -> PromotionResult:
    """Release a built image into overlay ``env`` like a model: pin it by digest in ``images:`` and commit.

    The overlay keeps its model and index; only the ``images:`` entry of its ``kustomization.yaml`` changes,
    plus ``files`` (e.g. the pipeline compiled for this image), all in one commit. Releasing the image an
    overlay already deploys (with the same ``files``) makes no commit; prod takes only the image staging
    deploys now (and takes it when ``image`` is None).

    Args:
        repo_dir: a git checkout holding ``manifests/overlays``.
        env: ``dev``, ``staging`` or ``prod``.
        image: ``<repository>@sha256:<64 hex>``, or a bare ``sha256:...`` for the repository the overlay uses.
        files: called with the image reference being released; returns paths relative to ``repo_dir`` -> text
            (e.g. the pipeline compiled for that image), written atomically and committed with the overlay.
        settings: branch, git identity and kubectl (default: :class:`~coderag.config.PromotionSettings`).

    Returns:
        A :class:`PromotionResult` (``committed`` False when nothing changed).

    Raises:
        PromotionError: a malformed or all-zero digest, prod not taking staging's image, a path outside
            ``repo_dir``, a failing overlay build, or a git error.

    Example:
        >>> promote_image("gitops", "staging", "ghcr.io/me/coderag@sha256:" + "ab" * 32).committed  # doctest: +SKIP
        True
    """
    settings = settings or PromotionSettings()
    repo, previous = _open_overlay(repo_dir, env, settings)
    if env == "prod":
        staged = read_image(repo, "staging")
        if staged.endswith(_ZERO_DIGEST):
            raise PromotionError("staging deploys no released image yet (the all-zero placeholder): "
                                 "release the image to staging first")
        target = image_reference(staged, image) if image else staged
        if target != staged:
            raise PromotionError(
                f"prod accepts only the image staging deploys now ({staged}), not {target}: "
                "release the image to staging first"
            )
    elif image is None:
        raise PromotionError(f"no image to release to {env}: pass <repository>@sha256:<digest>")
    else:
        target = image_reference(previous.image, image)
    if target.endswith(_ZERO_DIGEST):
        raise PromotionError("the all-zero digest is a placeholder, not an image: release a pushed image's digest")
    release = Release(previous.model_uri, previous.index_uri, target)
    extra = files(target) if files is not None else {}
    message = f"release-image({env}): {target}\n\nRelease image {target} to {env}" + (
        "" if target == previous.image else f" (was {previous.image})"
    ) + ".\n" + "".join(f"Wrote {name}.\n" for name in sorted(extra))
    return _commit_release(repo, env, previous, release, message, files=extra, settings=settings)


def _commit_release(
    repo: Path,
    env: str,
    previous: Release,
    release: Release,
    message: str,
    *,
    files: dict[str, str] | None = None,
    settings: PromotionSettings,
) -> PromotionResult:
    """Write ``release`` (and ``files``) into the checkout, check the overlay builds, and commit it all."""
    overlay = Path(repo) / OVERLAYS_DIR / env
    writes: dict[Path, str] = {}
    if (previous.model_uri, previous.index_uri) != (release.model_uri, release.index_uri):
        writes[release_path(repo, env)] = render_release(release)
    if previous.image != release.image:
        kustomization = overlay / KUSTOMIZATION_FILE
        writes[kustomization] = pin_image(kustomization.read_text(encoding="utf-8"), release.image)
    root = repo.resolve()
    for name, text in (files or {}).items():
        path = (repo / name).resolve()
        if root not in path.parents:
            raise PromotionError(f"{name} is outside the GitOps checkout: pass a path inside it")
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            writes[path] = text

    changed = {k: (previous.as_env()[k], v) for k, v in release.as_env().items() if previous.as_env()[k] != v}
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    if not writes:
        log.info("overlay %s already deploys these values: nothing to commit", env)
        return PromotionResult(env, release, previous, committed=False, branch=branch)

    originals = {path: path.read_text(encoding="utf-8") if path.is_file() else None for path in writes}
    for path, text in writes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    try:
        built = build_overlay(repo, env, settings.kubectl)
        if built is not None and not all(v in built for v in release.as_env().values()):
            raise PromotionError(
                f"overlay {env} built but does not deploy the new values: check its kustomization.yaml"
            )
    except BaseException:
        for path, text in originals.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                write_text_atomic(path, text)
        raise

    relative = sorted(str(path.relative_to(root)) for path in (p.resolve() for p in writes))
    _git(repo, "add", "--", *relative)
    # -c sets the committer too, so a machine without a git identity (a pipeline pod) can commit.
    identity = ("-c", f"user.name={settings.author_name}", "-c", f"user.email={settings.author_email}")
    _git(repo, *identity, "commit", "--quiet", "-m", message, "--", *relative)
    commit = _git(repo, "rev-parse", "HEAD")
    log.info("released %s to %s in commit %s", release.as_env(), env, commit)
    return PromotionResult(
        env, release, previous, committed=True, commit=commit, branch=branch, message=message, changed=changed
    )


def _auth_config(remote: str, token: str) -> tuple[str, ...]:
    """``git -c`` options sending ``token`` as an HTTP header, so it never lands in a URL, a log or .git/config."""
    if not token or not remote.startswith("https://"):
        return ()
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return ("-c", f"http.extraHeader=Authorization: Basic {basic}")


def promote_to_remote(
    remote: str,
    env: str,
    model_uri: str,
    index_uri: str,
    metrics: dict | None = None,
    image_digest: str | None = None,
    *,
    settings: PromotionSettings | None = None,
) -> PromotionResult:
    """:func:`promote` into a fresh clone of the GitOps repository ``remote``, then push the commit.

    What a pipeline pod does: it has no checkout of its own. The branch is ``settings.branch`` (default:
    the remote's default branch); an https remote authenticates with ``settings.git_token``. Nothing is
    pushed when the overlay already holds these values; a rejected push (someone promoted meanwhile)
    raises :class:`PromotionError` and can simply be retried.

    Args:
        remote: the GitOps repository URL (or ``user@host:path``).
        env, model_uri, index_uri, metrics, image_digest, settings: as for :func:`promote`.

    Returns:
        The :class:`PromotionResult`, with ``pushed_to`` set when a commit was pushed.

    Raises:
        PromotionError: the clone, the promotion or the push fails.

    Example:
        >>> promote_to_remote("https://github.com/org/gitops.git", "dev", model_uri, index_uri)  # doctest: +SKIP
    """
    settings = settings or PromotionSettings()
    auth = _auth_config(remote, settings.git_token.get_secret_value())
    with tempfile.TemporaryDirectory(prefix="coderag-gitops-") as scratch:
        checkout = Path(scratch) / "repo"
        try:
            done = subprocess.run(["git", *auth, "clone", "--quiet", "--depth", "1", remote, str(checkout)],
                                  capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise PromotionError("git is not installed: install git to promote") from exc
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["git clone failed"])[0][:300]
            raise PromotionError(f"cannot clone the GitOps repository {remote} ({first}): check the URL and the "
                                 "push token")
        if settings.branch:
            fetched = subprocess.run(["git", "-C", str(checkout), *auth, "fetch", "--quiet", "--depth", "1",
                                      "origin", settings.branch], capture_output=True, check=False)
            if fetched.returncode == 0:
                _git(checkout, "switch", "--quiet", "-C", settings.branch, "FETCH_HEAD")
        result = promote(checkout, env, model_uri, index_uri, metrics, image_digest, settings=settings)
        if result.committed:
            _git(checkout, *auth, "push", "--quiet", "origin", f"HEAD:refs/heads/{result.branch}")
            result.pushed_to = remote
            log.info("pushed %s to %s (%s)", result.commit, remote, result.branch)
    return result

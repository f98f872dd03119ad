"""The built image, run: `scripts/build-image.sh` builds it with buildah, `buildah run` runs commands inside it.

Marked ``image`` and deselected by default: ``python3 -m pytest -q -m image`` runs them (``.ci/run`` does, after
the default suite). Without buildah they skip on a developer machine and fail under CI. The build is reused while
its inputs (Dockerfile, code, constraints, README) are unchanged, so a second session starts in seconds; a fresh
machine builds once (about 5 minutes on 2 shared cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from serving_harness import free_port
from tooling import needs_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILDAH = ["buildah", "--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs")]
UID = 10001
MODEL_NAME = "coderag-retriever"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")

pytestmark = [pytest.mark.image, needs_tool("buildah", "scripts/install-system.sh (apt-get install buildah mmdebstrap)")]

# Makes / read-only in the container's own mount namespace, then drops to the manifests' uid and runs the command:
# what Kubernetes does for readOnlyRootFilesystem + runAsUser (buildah run has no --read-only).
READ_ONLY_LAUNCHER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
if libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None) != 0:
    raise OSError(ctypes.get_errno(), "cannot remount / read-only")
os.setgroups([]); os.setgid({UID}); os.setuid({UID})
os.execvp(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture(scope="module")
def image() -> dict:
    """build/image.json of the image built from this checkout (reused when its inputs are unchanged)."""
    done = subprocess.run(["bash", "scripts/build-image.sh"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    record = json.loads((REPO_ROOT / "build" / "image.json").read_text())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", record["digest"])
    assert done.stdout.splitlines()[:2] == [f"image:  {record['image']}", f"digest: {record['digest']}"]
    return record


@pytest.fixture(scope="module")
def container(image):
    """One working container of the image for the module (vfs copies the whole image per container)."""
    name = f"coderag-test-{os.getpid()}"
    subprocess.run([*BUILDAH, "rm", name], capture_output=True)
    subprocess.run([*BUILDAH, "from", "--pull-never", "--name", name, image["id"]], check=True, capture_output=True)
    yield name
    subprocess.run([*BUILDAH, "rm", name], capture_output=True)


@pytest.fixture(scope="module")
def rootfs(container) -> Path:
    """The container's root filesystem, mounted on the host (read here, never written)."""
    done = subprocess.run([*BUILDAH, "mount", container], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """Host folders the container sees, as the manifests' volumes: /work (artifacts), /tmp, the cache."""
    root = tmp_path_factory.mktemp("image")
    folders = {"/work": root / "work", "/tmp": root / "tmp", "/home/coderag/.cache": root / "cache"}
    for path in folders.values():
        path.mkdir()
        os.chown(path, UID, UID)
    return folders


def buildah_run(container: str, argv: list[str], scratch: dict[str, Path], *, read_only: bool = False) -> list[str]:
    """The ``buildah run`` command line for ``argv`` in ``container`` with the scratch volumes (and network)."""
    volumes = [flag for target, host in scratch.items() for flag in ("-v", f"{host}:{target}")]
    prefix = ["--cap-add", "CAP_SYS_ADMIN", "--user", "0:0"] if read_only else []
    launcher = ["python3", "-c", READ_ONLY_LAUNCHER] if read_only else []
    return [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", *prefix, *volumes, container, "--",
            *launcher, *argv]


def run_in(container, argv, scratch, *, read_only=False, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(buildah_run(container, argv, scratch, read_only=read_only), capture_output=True, text=True,
                          timeout=timeout)


def test_processes_run_as_uid_10001(container, scratch):
    done = run_in(container, ["sh", "-c", "id -u; id -g; python3 -c 'import os; print(os.geteuid())'"], scratch)
    assert (done.returncode, done.stdout) == (0, f"{UID}\n{UID}\n{UID}\n"), done.stderr
    base = yaml.safe_load((REPO_ROOT / "manifests" / "base" / "retriever.yaml").read_text())
    assert base["spec"]["predictor"]["securityContext"]["runAsUser"] == UID


def test_root_filesystem_can_be_read_only(container, scratch):
    script = ("touch /opt/venv/probe 2>&1; echo \"root=$?\"; touch /tmp/probe && echo tmp=0; "
              "touch /home/coderag/.cache/probe && echo cache=0; id -u; coderag --help >/dev/null && echo cli=0")
    done = run_in(container, ["sh", "-c", script], scratch, read_only=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "touch: cannot touch '/opt/venv/probe': Read-only file system",
        "root=1",
        "tmp=0",
        "cache=0",
        str(UID),
        "cli=0",
    ]


def _files(rootfs: Path):
    for folder, dirs, files in os.walk(rootfs):
        # Kernel and runtime file systems are not part of the image.
        if folder == str(rootfs):
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "run")]
        for name in dirs + files:
            yield Path(folder) / name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_holds_no_tests_no_git_and_no_ca_bundle_of_the_build_host(rootfs):
    ours = {p.name: _sha256(p) for p in (REPO_ROOT / "tests").glob("*.py")}
    host_bundle = (HOST_CA_BUNDLE.stat().st_size, _sha256(HOST_CA_BUNDLE)) if HOST_CA_BUNDLE.is_file() else None
    # The base64 lines of the certificates this host added itself (a proxy's CA): none may be in the image.
    local_lines = {line for crt in HOST_LOCAL_CAS.glob("*.crt")
                   for line in crt.read_text(errors="replace").splitlines() if len(line) == 64}
    test_files, git_dirs, bundles, with_local_ca = [], [], [], []
    for path in _files(rootfs):
        if path.name == ".git":
            git_dirs.append(path)
        if path.is_symlink() or not path.is_file():
            continue
        if path.name in ours and _sha256(path) == ours[path.name]:
            test_files.append(path)
        if host_bundle and path.stat().st_size == host_bundle[0] and _sha256(path) == host_bundle[1]:
            bundles.append(path)
        if local_lines and path.suffix in (".pem", ".crt") and local_lines & set(path.read_text(errors="replace").split()):
            with_local_ca.append(path)
    assert (test_files, git_dirs, bundles, with_local_ca) == ([], [], [], [])
    assert not (rootfs / "src").exists() and not (rootfs / "wheels").exists(), "builder-stage paths in the image"
    site = next((rootfs / "opt/venv/lib").glob("python3.*/site-packages"))
    assert (site / "coderag" / "__init__.py").is_file() and not (site / "tests").exists()
    # Nor the dependencies' test suites (torch's C++ test binaries, pandas/scipy tests packages) or torch's headers.
    assert [p.relative_to(site) for p in site.rglob("tests") if p.is_dir()] == []
    assert not (site / "torch" / "test").exists() and not (site / "torch" / "include").exists()
    assert [p.name for p in site.glob("torch-*.dist-info")] == ["torch-2.13.0+cpu.dist-info"]
    assert not list(site.glob("nvidia*")), "a CUDA build of torch pulled NVIDIA libraries in"


def _executor_command(spec: dict, name: str, arguments: dict, task_root: str) -> list[str]:
    """The container command line the compiled pipeline gives component ``name``, with its executor input filled in.

    The executor input is built by KFP's own local runner code (kfp.local), as the KFP launcher would.
    """
    from google.protobuf import json_format
    from kfp.local import executor_input_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    component = json_format.ParseDict(spec["components"][f"comp-{name}"], pipeline_spec_pb2.ComponentSpec())
    executor_input = executor_input_utils.construct_executor_input(component, arguments, task_root,
                                                                   block_input_artifact=False)
    container = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]
    # As the KFP backend sends it: integer parameters as JSON integers.
    payload = json.dumps(executor_input_utils.executor_input_to_dict(executor_input, component))
    return [*container["command"], *(payload if arg == "{{$}}" else arg for arg in container["args"])]


@pytest.fixture(scope="module")
def component_outputs(container, scratch) -> dict:
    """Synthesize, then build-index, run in the image from the compiled pipeline's command lines, on tiny inputs."""
    from kfp import dsl

    spec = next(yaml.safe_load_all((REPO_ROOT / "pipelines" / "coderag_pipeline.yaml").read_text()))
    parameters = {"corpus": "builtin", "n_records": 40, "eval_fraction": 0.25, "seed": 0, "synth_backend": "offline",
                  "llm_base_url": "", "llm_model": "", "max_train_pairs": 16, "n_negatives": 0}
    synthesize = run_in(container, _executor_command(spec, "synthesize", parameters, "/work/synthesize"), scratch)
    assert synthesize.returncode == 0, synthesize.stderr[-4000:]

    encoder = run_in(container, ["python3", "-c", "from coderag.retrieval.encoder import resolve_encoder_path; "
                                                  "print(resolve_encoder_path(None))"], scratch)
    assert encoder.returncode == 0, encoder.stderr
    corpus_split = dsl.Dataset(name="corpus_split", uri="/work/synthesize/corpus_split")
    model = dsl.Model(name="model", uri=encoder.stdout.strip())
    # The index step as the pipeline runs it: embed-shard (one shard here), then build-index merges the shards.
    shard = {"corpus_split": corpus_split, "model": model, "shard": 0, "shard_size": 50000, "device": ""}
    embedded = run_in(container, _executor_command(spec, "embed-shard", shard, "/work/embed-shard"), scratch)
    assert embedded.returncode == 0, embedded.stderr[-4000:]
    arguments = {"corpus_split": corpus_split, "model": model, "index_type": "flat", "lexical_weight": 0.3, "examples": 0,
                 "shards": [dsl.Artifact(name="vectors", uri="/work/embed-shard/vectors")]}
    index = run_in(container, _executor_command(spec, "build-index", arguments, "/work/build-index"), scratch)
    assert index.returncode == 0, index.stderr[-4000:]
    work = scratch["/work"]
    return {"synthesize": json.loads((work / "synthesize" / "executor_output.json").read_text()),
            "build-index": json.loads((work / "build-index" / "executor_output.json").read_text()),
            "work": work}


def test_kfp_components_run_in_the_image_from_the_compiled_pipeline(component_outputs):
    from coderag.corpus import dedupe_schemas
    from coderag.pipeline.stages import read_corpus
    from coderag.retrieval.index import SchemaIndex

    work = component_outputs["work"]
    train, held_out = read_corpus(work / "synthesize" / "corpus_split")
    assert len(train) + len(held_out) == 40
    split = component_outputs["synthesize"]["artifacts"]["corpus_split"]["artifacts"][0]
    assert split["uri"] == "/work/synthesize/corpus_split"
    pairs = component_outputs["synthesize"]["artifacts"]["pairs"]["artifacts"][0]["metadata"]
    assert 0 < pairs["train_pairs"] <= 16

    schemas = dedupe_schemas(train + held_out)
    index = SchemaIndex.load(work / "build-index" / "index")
    assert (index.count, index.dim) == (len(schemas.snippets), 384)
    metadata = component_outputs["build-index"]["artifacts"]["index"]["artifacts"][0]["metadata"]
    assert metadata == {"count": len(schemas.snippets), "dim": 384, "duplicates_dropped": schemas.duplicates_dropped,
                        "shards": 1, "index_type": "flat", "lexical_weight": 0.3, "examples": 0}


def test_retriever_serves_from_the_image_with_a_read_only_root(container, scratch, component_outputs, encoder_model):
    """`coderag serve retriever` in the image (read-only root, uid 10001) answers health and v1 predict from here."""
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.search import retrieve_schemas

    port = free_port()
    command = ["coderag", "serve", "retriever", "--http_port", str(port), "--grpc_port", str(free_port()),
               "--enable_grpc", "false", "--model_name", MODEL_NAME, "--index_dir", "/work/build-index/index"]
    log_path = scratch["/tmp"] / f"retriever-{port}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(buildah_run(container, command, scratch, read_only=True), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 300, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, log_path.read_text(errors="replace")[-4000:]
        query = "Which patients were admitted to each hospital ward?"
        response = httpx.post(f"{url}/v1/models/{MODEL_NAME}:predict",
                              json={"instances": [{"query": query, "k": 2}]}, timeout=60)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        # The same index searched here, with the same encoder, ranks the same snippets.
        index = SchemaIndex.load(component_outputs["work"] / "build-index" / "index")
        expected = retrieve_schemas(index, encoder_model, [query], k=2)[0]
        assert [h["rank"] for h in prediction["results"]] == [1, 2]
        assert [h["text"] for h in prediction["results"]] == [h.text for h in expected]
        assert [round(h["score"], 4) for h in prediction["results"]] == [round(h.score, 4) for h in expected]
        bad = httpx.post(f"{url}/v1/models/{MODEL_NAME}:predict", json={"instances": [{"k": 2}]}, timeout=60)
        assert bad.status_code == 400
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@needs_tool("docker-registry", "scripts/install-system.sh (apt-get install docker-registry)")
def test_image_pushed_to_a_registry_is_released_by_its_digest(image, tmp_path, capsys):
    """build-image.sh pushes to a real registry on loopback; `coderag release image` pins the digest it got."""
    import shutil

    from coderag.cli import main
    from coderag.release.promotion import read_image

    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "blobs")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "log": {"level": "error"},
    }))
    registry = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        repository = f"127.0.0.1:{port}/coderag"
        env = {**os.environ, "CODERAG_IMAGE_PUSH": f"docker://{repository}:0.1.0",
               "CODERAG_IMAGE_PUSH_FLAGS": "--tls-verify=false"}
        done = subprocess.run(["bash", "scripts/build-image.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-4000:]
        record_path = REPO_ROOT / "build" / "image.json"
        pushed = json.loads(record_path.read_text())["pushed"]
        assert pushed["destination"] == f"docker://{repository}:0.1.0"
        assert f"pushed: docker://{repository}:0.1.0 as {pushed['digest']}" in done.stdout
        # The registry serves the tag under exactly the digest that was recorded.
        head = httpx.head(f"http://127.0.0.1:{port}/v2/coderag/manifests/0.1.0", timeout=10, headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
        assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == pushed["digest"]

        gitops = tmp_path / "gitops"
        shutil.copytree(REPO_ROOT / "manifests", gitops / "manifests")
        for args in (["init", "--quiet", "--initial-branch=main"], ["add", "."], ["commit", "--quiet", "-m", "init"]):
            subprocess.run(["git", "-C", str(gitops), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)
        argv = ["release", "image", "--env", "dev", "--build-record", str(record_path), "--repo-dir", str(gitops)]
        assert main(argv) == 0
        assert capsys.readouterr().out.startswith(f"released {repository}@{pushed['digest']} to dev on main: ")
        assert read_image(gitops, "dev") == f"{repository}@{pushed['digest']}"
    finally:
        registry.terminate()
        registry.wait(timeout=30)


def test_a_failed_push_fails_the_build_script_and_leaves_no_record(image):
    """No digest of an earlier push may survive a push that failed (it could be released by mistake)."""
    destination = f"docker://127.0.0.1:{free_port()}/coderag:0.1.0"  # nothing listens there
    done = subprocess.run(["bash", "scripts/build-image.sh"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "CODERAG_IMAGE_PUSH": destination}, timeout=600)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"build-image: cannot push {image['image']} to {destination} (see buildah's message above)")
    assert not (REPO_ROOT / "build" / "image.json").exists()

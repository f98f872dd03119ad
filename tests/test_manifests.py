"""The kustomize tree in manifests/: every overlay builds, every object validates against its schema.

Kubernetes built-ins are checked with kubernetes-validate; KServe, prometheus-operator and Argo CD
objects against the openAPIV3Schema of their real CRDs (../shared/crds, skipped when absent), made
strict so a misspelt field fails instead of being pruned silently by the API server.
"""

from __future__ import annotations

import copy
import json
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from tooling import needs_tool, require_shared

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
CRD_DIR = REPO_ROOT.parent / "shared" / "crds"
ENVS = ("dev", "staging", "prod")
K8S_VERSION = "1.32.0"
CRD_GROUPS = {"serving.kserve.io", "monitoring.coreos.com", "argoproj.io"}

needs_kubectl = needs_tool("kubectl", ">= 1.27, with built-in kustomize")


@cache
def build(path: str) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / path)], capture_output=True, text=True, check=True)
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def by_kind(objects, kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def _strict(schema: dict) -> dict:
    """Copy of a CRD schema where objects with listed properties reject unknown ones (as kubectl --validate=strict)."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in out:
            out[combinator] = [_strict(sub) for sub in out[combinator]]
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): strict openAPIV3Schema} from every CRD under ../shared/crds."""
    schemas = {}
    for path in sorted(CRD_DIR.rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served") and "schema" in version:
                    schemas[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def validate_object(obj: dict) -> None:
    """Raise if ``obj`` does not validate against its Kubernetes or CRD schema."""
    import jsonschema
    import kubernetes_validate

    key = (obj["apiVersion"], obj["kind"])
    if obj["apiVersion"].split("/")[0] not in CRD_GROUPS:
        kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)
        return
    schemas = crd_schemas()
    assert key in schemas, f"no CRD schema for {key}: add its CRD to ../shared/crds"
    # No metaschema check: CRDs use Go regex syntax (e.g. "(?i)") that the ECMA "regex" format rejects.
    jsonschema.Draft7Validator(schemas[key]).validate(obj)


@pytest.fixture()
def crds_present() -> Path:
    """../shared/crds: a skip without it locally, a failure under CI (which always has it)."""
    return require_shared("crds")


needs_crds = pytest.mark.usefixtures("crds_present")


@needs_kubectl
@pytest.mark.parametrize("target", [f"overlays/{env}" for env in ENVS] + ["base", "monitoring", "argocd"])
def test_kustomize_builds(target):
    objects = build(target)
    assert objects, f"{target} built nothing"
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects in {target}: {names}"


@needs_kubectl
@needs_crds
@pytest.mark.parametrize("target", [f"overlays/{env}" for env in ENVS] + ["argocd", "monitoring"])
def test_every_object_validates(target):
    objects = build(target)
    kinds = {o["kind"] for o in objects}
    for obj in objects:
        validate_object(obj)
    if target.startswith("overlays"):
        assert {"InferenceService", "ServiceAccount", "ConfigMap"} <= kinds
        # Monitoring is deployed once (manifests/monitoring), never per environment.
        assert not kinds & {"PodMonitor", "PrometheusRule"}
        assert len(by_kind(objects, "InferenceService")) == 3
    if target == "monitoring":
        assert {"PodMonitor", "PrometheusRule", "ConfigMap"} == kinds
        assert {o["metadata"]["namespace"] for o in objects} == {"monitoring"}


@needs_crds
def test_strict_crd_validation_catches_a_misspelt_field():
    import jsonschema

    isvc = copy.deepcopy(yaml.safe_load((MANIFESTS / "base" / "retriever.yaml").read_text()))
    isvc["spec"]["predictor"]["minReplica"] = 1  # typo of minReplicas
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate_object(isvc)
    isvc = copy.deepcopy(yaml.safe_load((MANIFESTS / "base" / "retriever.yaml").read_text()))
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(isvc)


def test_kubernetes_validate_rejects_a_bad_builtin():
    import kubernetes_validate

    account = yaml.safe_load((MANIFESTS / "base" / "serviceaccount.yaml").read_text())
    account["automountServiceAccountToken"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(account)


@needs_kubectl
@pytest.mark.parametrize("env", ENVS)
def test_overlay_values(env):
    objects = build(f"overlays/{env}")
    release = dict(
        line.split("=", 1)
        for line in (MANIFESTS / "overlays" / env / "release.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for obj in objects:
        assert obj["metadata"].get("namespace") == f"coderag-{env}", obj["metadata"]["name"]
    retriever = by_kind(objects, "InferenceService", "coderag-retriever")[0]["spec"]["predictor"]
    rag = by_kind(objects, "InferenceService", "coderag-rag")[0]["spec"]["predictor"]
    generator = by_kind(objects, "InferenceService", "coderag-generator")[0]["spec"]["predictor"]
    uris = {u["mountPath"]: u["uri"] for u in retriever["storageUris"]}
    assert uris == {"/mnt/models/encoder": release["MODEL_URI"], "/mnt/models/index": release["INDEX_URI"]}
    kustomization = yaml.safe_load((MANIFESTS / "overlays" / env / "kustomization.yaml").read_text())
    (pin,) = [entry for entry in kustomization["images"] if entry["name"] == "ghcr.io/coderag/coderag"]
    for predictor in (retriever, rag):
        image = predictor["containers"][0]["image"]
        assert image == f"{pin['newName']}@{pin['digest']}" and "@sha256:" in image
    canary = {p.get("canaryTrafficPercent") for p in (retriever, rag)}
    assert canary == ({None} if env == "dev" else {20} if env == "staging" else {10})
    assert all(p["minReplicas"] <= p["maxReplicas"] for p in (retriever, rag, generator))
    if env == "prod":
        assert retriever["minReplicas"] >= 2 and rag["minReplicas"] >= 2
    rag_env = {e["name"]: e.get("value") for e in rag["containers"][0]["env"]}
    # Client-supplied sql_context only in dev; staging and prod run SQL on registered databases.
    assert rag_env.get("CODERAG_RAG_ALLOW_SQL_CONTEXT", "true") == ("true" if env == "dev" else "false")
    assert rag_env["CODERAG_RAG_SANDBOX_SESSIONS"] == "2" and rag_env["CODERAG_RAG_SANDBOX_MEMORY_MB"] == "256"
    # The retriever autoscales on concurrency: (min, max, target in-flight requests per pod) per environment.
    scaling = (retriever["minReplicas"], retriever["maxReplicas"], retriever["scaleMetric"], retriever["scaleTarget"])
    assert scaling == {"dev": (0, 1, "concurrency", 16), "staging": (1, 3, "concurrency", 8),
                       "prod": (2, 8, "concurrency", 8)}[env]


@needs_kubectl
def test_base_services_run_our_cli_and_settings():
    """Commands, flags and CODERAG_* variables in the manifests are ones the code really accepts."""
    from coderag.cli import build_parser
    from serving.settings import RagSettings, RetrieverSettings

    objects = build("base")
    prefixes = {
        "coderag-retriever": ("CODERAG_RETRIEVER_", RetrieverSettings),
        "coderag-rag": ("CODERAG_RAG_", RagSettings),
    }
    for name, (prefix, settings_cls) in prefixes.items():
        container = by_kind(objects, "InferenceService", name)[0]["spec"]["predictor"]["containers"][0]
        assert container["command"][0] == "coderag"
        args = build_parser().parse_args(container["command"][1:] + container["args"])
        assert args.model_name == name and args.http_port == 8080
        ours = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith(prefix) and "value" in e}
        assert ours, name
        settings = settings_cls(**{k.removeprefix(prefix).lower(): v for k, v in ours.items()})
        assert settings is not None
        probe_paths = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
        assert f"/v1/models/{name}" in probe_paths
        security = container["securityContext"]
        assert (
            security["readOnlyRootFilesystem"] and security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
        )
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts


@needs_kubectl
def test_generator_uses_huggingface_runtime_with_vllm_on_one_gpu():
    model = by_kind(build("base"), "InferenceService", "coderag-generator")[0]["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-huggingfaceserver" and model["modelFormat"]["name"] == "huggingface"
    assert "Mistral-7B-Instruct-v0.2" in model["storageUri"]
    flags = {a.split("=")[0] for a in model["args"]}
    assert {"--backend", "--max-model-len", "--dtype", "--model_name"} <= flags
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    security = model["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert model["readinessProbe"]["httpGet"]["port"] == model["livenessProbe"]["httpGet"]["port"] == 8080
    # A read-only root filesystem: every cache directory must lie on the writable /tmp volume.
    writable = [m["mountPath"] for m in model["volumeMounts"]]
    env = {e["name"]: e.get("value") for e in model["env"]}
    for name in ("HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        assert any(env[name].startswith(path + "/") for path in writable), name
    runtime_file = CRD_DIR / "kserve-runtimes" / "kserve-huggingfaceserver.yaml"
    if runtime_file.is_file():
        runtime = yaml.safe_load(runtime_file.read_text())
        assert runtime["metadata"]["name"] == model["runtime"]
        assert "huggingface" in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}


@needs_kubectl
def test_rag_reaches_services_the_base_defines():
    objects = build("base")
    entries = by_kind(objects, "InferenceService", "coderag-rag")[0]["spec"]["predictor"]["containers"][0]["env"]
    env = {e["name"]: e["value"] for e in entries if "value" in e}
    # Database URLs carry credentials: they come from a Secret, never a plain value.
    databases = next(e for e in entries if e["name"] == "CODERAG_RAG_DATABASES")
    assert databases["valueFrom"]["secretKeyRef"] == {"name": "coderag-databases", "key": "databases.json",
                                                      "optional": True}
    names = {o["metadata"]["name"] for o in by_kind(objects, "InferenceService")}
    for key in ("CODERAG_RAG_RETRIEVER_URL", "CODERAG_RAG_LLM_BASE_URL"):
        host = env[key].split("//", 1)[1].split("/", 1)[0]
        assert host.removesuffix("-predictor") in names, key
    assert env["CODERAG_RAG_LLM_MODEL"] == "coderag-generator"


@needs_kubectl
def test_dashboard_configmap_and_argocd_apps():
    objects = build("monitoring")
    maps = [m for m in by_kind(objects, "ConfigMap") if m["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(maps) == 1
    dashboard = json.loads(next(iter(maps[0]["data"].values())))
    assert dashboard["panels"] and dashboard["uid"] == "coderag-serving"
    apps = build("argocd")
    assert {a["spec"]["source"]["path"] for a in apps} == {f"manifests/overlays/{env}" for env in ENVS} | {
        "manifests/monitoring"}
    monitoring = [a for a in apps if a["spec"]["source"]["path"] == "manifests/monitoring"]
    assert monitoring[0]["spec"]["destination"]["namespace"] == "monitoring"
    for app in apps:
        if app in monitoring:
            continue
        env = app["spec"]["source"]["path"].rsplit("/", 1)[1]
        assert app["spec"]["destination"]["namespace"] == f"coderag-{env}"
        assert ("automated" in app["spec"].get("syncPolicy", {})) == (env != "prod")


@needs_kubectl
def test_podmonitor_selects_every_predictor_on_its_serving_port():
    objects = build("overlays/staging")
    monitor = by_kind(build("monitoring"), "PodMonitor")[0]["spec"]
    assert objects[0]["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    expression = monitor["selector"]["matchExpressions"][0]
    endpoint = monitor["podMetricsEndpoints"][0]
    assert endpoint["path"] == "/metrics"
    for isvc in by_kind(objects, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        assert predictor["labels"][expression["key"]] in expression["values"], isvc["metadata"]["name"]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
        for container in predictor.get("containers", []):
            assert endpoint["portNumber"] in {p["containerPort"] for p in container["ports"]}


@needs_kubectl
@needs_crds
def test_generator_lora_component_serves_the_adapter_and_validates(tmp_path):
    """The opt-in component on the base: vLLM loads the SFT adapter beside its base model, the RAG asks for it."""
    import os

    root = os.path.relpath(MANIFESTS, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{root}/base"], "components": [f"{root}/components/generator-lora"]}))
    out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    for obj in objects:
        validate_object(obj)
    predictor = by_kind(objects, "InferenceService", "coderag-generator")[0]["spec"]["predictor"]
    mounts = {s["mountPath"]: s["uri"] for s in predictor["storageUris"]}
    assert "storageUri" not in predictor["model"] and "Mistral-7B-Instruct-v0.2" in mounts["/mnt/models/base"]
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in predictor["model"]["args"])
    assert "--enable-lora" in args and args["--model_dir"] == "/mnt/models/base"
    name, path = args["--lora-modules"].split("=", 1)
    assert path in mounts and int(args["--max-lora-rank"]) >= 16  # the SFT default rank fits
    rag = by_kind(objects, "InferenceService", "coderag-rag")[0]["spec"]["predictor"]["containers"][0]
    assert {e["name"]: e.get("value") for e in rag["env"]}["CODERAG_RAG_LLM_MODEL"] == name
    tolerations = predictor["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations

"""Compile the pipeline, run it locally with ``kfp.local``, or submit it to a KFP API.

``run_local`` runs the very graph the cluster runs (same components, ``dsl.If`` gate, exit handler) with
``kfp.local.SubprocessRunner`` in this interpreter: no Docker, no cluster. Its artifacts land under
``<workdir>/artifacts`` and its outcome in ``<workdir>/outcome.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from coderag.atomic_files import write_text_atomic
from coderag.errors import CodeRAGError, ConfigError
from coderag.release.publish import CURRENT_FILE, write_outcome

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = Path(__file__).resolve().parent / "coderag_pipeline.yaml"
# The compiled pipeline of each training profile (``coderag pipeline compile --profile NAME``).
PROFILE_PACKAGES = {"laptop": DEFAULT_PACKAGE, "full": DEFAULT_PACKAGE.with_name("coderag_pipeline_full.yaml")}
# Tasks in graph order; a failed run stopped at the first of these that wrote no output.
TASK_ORDER = ("synthesize", "finetune", "plan-shards", "build-index", "evaluate", "gate")
_PROGRESS = re.compile(r"(Executing task|finished with status|Pipeline .* finished|Inner task failed)")


class PipelineSubmitError(CodeRAGError):
    """The KFP API cannot be reached or refused the run."""


@dataclass
class LocalRunResult:
    """How a local run ended: ``status`` is deployed | skipped | failed, with ``reasons``."""

    status: str
    reasons: list[str]
    workdir: str
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    release: dict[str, Any] | None = None
    run_status: dict[str, Any] | None = None
    stopped_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compile_pipeline(out_path: str | Path | None = None, *, image: str | None = None,
                     profile: str = "laptop") -> Path:
    """Compile the cluster pipeline of a training ``profile`` to ``out_path`` (written atomically).

    ``out_path`` defaults to the profile's :data:`PROFILE_PACKAGES` file. The profile's values
    (:data:`~coderag.config.PIPELINE_PROFILES`) become the compiled parameter defaults, and a ``"full"``
    pipeline fine-tunes on a GPU node.
    """
    from kfp import compiler

    from coderag.config import PipelineSettings
    from pipelines.coderag_pipeline import build_pipeline

    out_path = Path(out_path or PROFILE_PACKAGES[profile])
    pipeline = build_pipeline(image=image, profile=profile) if image else build_pipeline(profile=profile)
    defaults = PipelineSettings.from_values(profile=profile)
    overrides = {"profile": profile, **defaults.profile_values()} if profile != "laptop" else None
    scratch = out_path.with_name(f".{out_path.name}.compiling.yaml")
    try:
        compiler.Compiler().compile(pipeline, str(scratch), pipeline_parameters=overrides)
        write_text_atomic(out_path, scratch.read_text(encoding="utf-8"))
    finally:
        scratch.unlink(missing_ok=True)
    return out_path


class _ProgressFilter(io.TextIOBase):
    """Everything to the log file; only task start/finish lines to the terminal (quiet by default)."""

    def __init__(self, log_file, terminal, verbose: bool):
        self.log_file, self.terminal, self.verbose = log_file, terminal, verbose

    def write(self, text: str) -> int:
        self.log_file.write(text)
        if self.verbose:
            self.terminal.write(text)
        else:
            for line in text.splitlines():
                if _PROGRESS.search(line):
                    self.terminal.write(re.sub(r"\x1b\[[0-9;]*m", "", line).strip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.log_file.flush()
        self.terminal.flush()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _collect(run_dir: Path | None, workdir: Path) -> LocalRunResult:
    """Read the run's artifacts back into a :class:`LocalRunResult`."""
    if run_dir is None:
        return LocalRunResult("failed", ["the local runner produced no run directory"], str(workdir))
    run_status = _read_json(run_dir / "record-run-status" / "run_status")
    # With generator_sft_steps > 0 the evaluate -> gate -> deploy tail ran in the generator-sft branch, whose
    # tasks KFP names with a "-2" suffix (the configured-generator branch holds the plain names).
    suffix = "-2" if (run_dir / "finetune-generator").exists() else ""
    decision = _read_json(run_dir / f"gate{suffix}" / "decision")
    deployed = _read_json(run_dir / f"deploy{suffix}" / "outcome")
    skipped = _read_json(run_dir / f"skip-deploy{suffix}" / "outcome")
    metrics = (decision or {}).get("metrics", {})
    failed = run_status is None or run_status.get("status") != "SUCCEEDED"
    if failed or (deployed is None and skipped is None):
        # The generator-sft branch: the SFT step runs before its suffixed evaluate and gate.
        tail = TASK_ORDER.index("evaluate")
        order = TASK_ORDER if not suffix else (*TASK_ORDER[:tail], "finetune-generator",
                                               *(f"{task}{suffix}" for task in TASK_ORDER[tail:]))
        stopped = next((t for t in order if not (run_dir / t / "executor_output.json").is_file()),
                       f"deploy{suffix}" if decision and decision.get("passed") else f"skip-deploy{suffix}")
        reasons = [f"step {stopped} failed: see {workdir / 'pipeline.log'}"]
        reasons += [r for r in (run_status or {}).get("reasons", []) if r]
        return LocalRunResult("failed", reasons, str(workdir), metrics, decision, None, run_status, stopped)
    if deployed is not None:
        return LocalRunResult("deployed", [], str(workdir), metrics, decision, deployed.get("release"), run_status)
    return LocalRunResult("skipped", skipped.get("reasons", []), str(workdir), metrics, decision, None, run_status)


def default_workdir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run_local(params: dict[str, Any], workdir: str | Path | None = None, *, verbose: bool = False,
              terminal=None) -> LocalRunResult:
    """Run the whole pipeline locally; return (and write ``<workdir>/outcome.json``) how it ended.

    ``params`` are pipeline parameters (unknown names raise :class:`ConfigError`). When ``deploy_dir`` is
    empty it defaults to ``<workdir>/../deployed`` (shared by the runs under one parent, so each run is
    gated against the release the previous passing run deployed); ``current_metrics`` defaults to that
    directory's ``current.json``. Task logs go to ``<workdir>/pipeline.log``; the terminal gets one line
    per task start/finish (everything with ``verbose``).
    """
    import inspect

    from kfp import local

    from pipelines.coderag_pipeline import Placement, build_pipeline

    workdir = Path(workdir or default_workdir()).absolute()
    if workdir.exists() and any(workdir.iterdir()):
        raise ConfigError(f"workdir {workdir} is not empty: choose a new directory (default runs/<timestamp>)")
    if params.get("promote_repo"):
        raise ConfigError("a local run's artifacts are files on this machine, which a cluster cannot pull, so it "
                          "cannot promote them: drop --promote-repo (the release goes to --deploy-dir), or "
                          "`coderag pipeline submit` to a cluster and promote from there")
    pipeline = build_pipeline(placement=Placement(gpu=False, use_llm_secret=False, use_gitops_secret=False))
    known = set(inspect.signature(pipeline.pipeline_func).parameters)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    params = dict(params)
    if not params.get("deploy_dir"):
        params["deploy_dir"] = str(workdir.parent / "deployed")
    if not params.get("current_metrics"):
        params["current_metrics"] = str(Path(params["deploy_dir"]) / CURRENT_FILE)

    pipeline_root = workdir / "artifacts"
    pipeline_root.mkdir(parents=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=False)
    terminal = terminal or sys.stderr
    with open(workdir / "pipeline.log", "w", encoding="utf-8") as log_file, warnings.catch_warnings():
        # Resource requests and the non-"python" image name are cluster settings the local runner ignores.
        warnings.simplefilter("ignore")
        stream = _ProgressFilter(log_file, terminal, verbose)
        handler = logging.StreamHandler(stream)
        kfp_logger = logging.getLogger()
        kfp_logger.addHandler(handler)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                pipeline(**params)
        finally:
            kfp_logger.removeHandler(handler)
    runs = sorted(p for p in pipeline_root.iterdir() if p.is_dir())
    result = _collect(runs[-1] if runs else None, workdir)
    write_outcome(workdir / "outcome.json", status=result.status, reasons=result.reasons,
                  **{k: v for k, v in result.to_dict().items() if k not in ("status", "reasons")},
                  parameters=params)
    return result


def _check_reachable(host: str, timeout_s: float) -> None:
    import httpx

    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PipelineSubmitError(
            f"cannot reach the KFP API at {host} ({type(exc).__name__}: {exc}): check --host "
            "(e.g. kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80, then --host http://127.0.0.1:8080)"
        ) from None


def submit(host: str, experiment: str, run_name: str | None, params: dict[str, Any], *,
           package_path: str | Path | None = None, namespace: str | None = None,
           timeout_s: float = 10.0) -> dict[str, str]:
    """Submit a run of the compiled pipeline to the KFP API at ``host``; return its id and URL.

    The package defaults to the committed ``pipelines/coderag_pipeline.yaml``. An unreachable host
    raises :class:`PipelineSubmitError` (one sentence naming the host) before anything is sent.
    """
    if not host or not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host must be the KFP API URL starting with http:// or https://, got {host!r}")
    package = Path(package_path) if package_path else DEFAULT_PACKAGE
    if not package.is_file():
        raise ConfigError(f"pipeline package {package} does not exist: run `coderag pipeline compile` first")
    _check_reachable(host, timeout_s)
    import kfp

    run_name = run_name or f"coderag-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow")
        run = client.create_run_from_pipeline_package(str(package), arguments=params, run_name=run_name,
                                                      experiment_name=experiment, namespace=namespace)
    except Exception as exc:  # noqa: BLE001 - the KFP client raises many transport/API types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineSubmitError(f"the KFP API at {host} refused the run ({first}): check the host, "
                                  "namespace and your access") from None
    return {"run_id": run.run_id, "run_name": run_name, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}

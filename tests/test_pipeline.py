"""The pipeline: compiled YAML (fresh, complete), submission errors, and local runs of the whole graph."""

from __future__ import annotations

import inspect
import json
import socket
from pathlib import Path

import pytest
import yaml
from expected import held_out_retrieval

from coderag.cli import main as cli_main
from coderag.config import PIPELINE_PARAMETERS, PipelineSettings
from coderag.errors import ConfigError
from coderag.retrieval.index import SchemaIndex
from components import IMAGE
from pipelines.coderag_pipeline import LLM_SECRET_NAME, coderag_pipeline
from pipelines.run import DEFAULT_PACKAGE, PROFILE_PACKAGES, PipelineSubmitError, compile_pipeline, run_local, submit

# The evaluate -> gate -> deploy tail exists twice: "-2" is its copy in the generator-sft branch.
EXECUTORS = {"synthesize", "finetune", "finetune-generator", "plan-shards", "embed-shard", "build-index", "evaluate", "gate",
             "deploy", "skip-deploy", "evaluate-2", "gate-2", "deploy-2", "skip-deploy-2", "record-run-status"}
TINY = {"n_records": 200, "max_train_pairs": 32, "batch_size": 8, "max_steps": 2, "k": 2,
        "n_eval": 2, "max_new_tokens": 24}


def _docs(path: Path) -> tuple[dict, dict]:
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")


@pytest.fixture(scope="module")
def compiled_full(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline_full.yaml", profile="full")


def test_committed_yaml_is_not_stale(compiled, compiled_full):
    for profile, fresh in (("laptop", compiled), ("full", compiled_full)):
        committed = PROFILE_PACKAGES[profile]
        assert committed.is_file(), f"run `coderag pipeline compile --profile {profile}` and commit {committed.name}"
        assert committed.read_text() == fresh.read_text(), (
            f"pipelines/{committed.name} is stale: run `coderag pipeline compile --profile {profile}` and commit it")
    assert PROFILE_PACKAGES["laptop"] == DEFAULT_PACKAGE


def test_full_profile_fine_tunes_on_a_gpu_node_with_its_defaults(compiled, compiled_full):
    """The profile is settings, not a fork: the same graph, its defaults and the fine-tune step's placement."""
    laptop, _ = _docs(compiled)
    full, platform = _docs(compiled_full)
    assert "accelerator" not in laptop["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]
    accelerator = full["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1
    tolerations = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    defaults = {name: p.get("defaultValue") for name, p in full["root"]["inputDefinitions"]["parameters"].items()}
    expected = PipelineSettings.from_values(profile="full").pipeline_arguments()
    for name in ("profile", "max_train_pairs", "n_negatives", "epochs", "batch_size", "max_steps", "cached"):
        assert defaults[name] == expected[name], name
    assert expected["cached"] is True and expected["max_train_pairs"] == 0 and expected["profile"] == "full"
    assert set(full["deploymentSpec"]["executors"]) == set(laptop["deploymentSpec"]["executors"])


def test_yaml_has_every_component_on_the_project_image(compiled):
    spec, _ = _docs(compiled)
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-") for name in executors} == EXECUTORS
    for name, executor in executors.items():
        assert executor["container"]["image"] == IMAGE, name
        # No pip install at start-up: the image already holds coderag and kfp.
        assert "pip install" not in " ".join(executor["container"]["command"]), name


def test_yaml_has_resource_requests_and_gpu_for_training(compiled):
    spec, _ = _docs(compiled)
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        assert resources["cpuRequest"] > 0 and resources["memoryRequest"] > 0, name
    for name in ("exec-embed-shard", "exec-synthesize"):
        accelerator = executors[name]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1
    assert "accelerator" not in executors["exec-evaluate"]["container"]["resources"]


def _branches(spec: dict, component: str) -> dict[str, dict]:
    """The condition branches under ``component``, by their names (``taskInfo.name``)."""
    tasks = spec["components"][component]["dag"]["tasks"]
    branches = next(spec["components"][t["componentRef"]["name"]]["dag"]["tasks"] for name, t in tasks.items()
                    if name.startswith("condition-branches"))
    return {t["taskInfo"]["name"]: t for t in branches.values()}


def _tasks(spec: dict, branch: dict) -> dict[str, dict]:
    return spec["components"][branch["componentRef"]["name"]]["dag"]["tasks"]


def test_yaml_has_gate_condition_and_exit_handler(compiled):
    spec, _ = _docs(compiled)
    tails = _branches(spec, "comp-exit-handler-1")
    for tail, gate in (("configured-generator", "gate"), ("generator-sft", "gate-2")):
        gated = _branches(spec, tails[tail]["componentRef"]["name"])
        passed = f"inputs.parameter_values['pipelinechannel--{gate}-passed'] == true"
        assert gated["gate-passed"]["triggerPolicy"]["condition"] == passed
        assert gated["gate-failed"]["triggerPolicy"]["condition"] == f"!({passed})"
        suffix = gate.removeprefix("gate")
        assert set(_tasks(spec, gated["gate-passed"])) == {f"deploy{suffix}"}
        assert set(_tasks(spec, gated["gate-failed"])) == {f"skip-deploy{suffix}"}
    root = spec["root"]["dag"]["tasks"]
    assert root["record-run-status"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(PIPELINE_PARAMETERS)


def test_generator_sft_is_an_opt_in_gpu_step_on_tolerated_gpu_nodes(compiled):
    spec, platform = _docs(compiled)
    tails = _branches(spec, "comp-exit-handler-1")
    configured = "int(inputs.parameter_values['pipelinechannel--generator_sft_steps']) <= 0"
    assert tails["configured-generator"]["triggerPolicy"]["condition"] == configured
    assert tails["generator-sft"]["triggerPolicy"]["condition"] == f"!({configured})"
    assert spec["root"]["inputDefinitions"]["parameters"]["generator_sft_steps"]["defaultValue"] == 0
    resources = spec["deploymentSpec"]["executors"]["exec-finetune-generator"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu" and int(resources["accelerator"]["resourceCount"]) == 1
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"} in \
        executors["exec-finetune-generator"]["tolerations"]


def test_with_generator_sft_the_evaluate_step_scores_the_adapter_it_trained(compiled):
    """generator_sft_steps > 0: the branch's evaluate takes finetune-generator's adapter (and a GPU); without
    it, evaluate scores the configured generator; each branch gates and deploys what it scored."""
    spec, platform = _docs(compiled)
    tails = _branches(spec, "comp-exit-handler-1")
    sft, configured = _tasks(spec, tails["generator-sft"]), _tasks(spec, tails["configured-generator"])
    assert {"finetune-generator", "evaluate-2", "gate-2"} <= set(sft) and "evaluate" not in sft
    assert {"evaluate", "gate"} <= set(configured) and "finetune-generator" not in configured
    assert sft["evaluate-2"]["inputs"]["artifacts"]["generator"]["taskOutputArtifact"] == {
        "outputArtifactKey": "generator", "producerTask": "finetune-generator"}
    assert "generator" not in configured["evaluate"]["inputs"].get("artifacts", {})
    assert spec["components"]["comp-evaluate"]["inputDefinitions"]["artifacts"]["generator"]["isOptional"] is True
    assert sft["gate-2"]["inputs"]["artifacts"]["metrics"]["taskOutputArtifact"]["producerTask"] == "evaluate-2"
    assert configured["gate"]["inputs"]["artifacts"]["metrics"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-evaluate-2"]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "accelerator" not in executors["exec-evaluate"]["container"]["resources"]
    assert {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"} in \
        platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-evaluate-2"]["tolerations"]


def test_yaml_embeds_shards_in_a_parallel_for_and_merges_the_collected_vectors(compiled):
    spec, _ = _docs(compiled)
    handler = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    loop = handler["for-loop-2"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-shards-Output"
    assert loop["dependentTasks"] == ["finetune", "plan-shards", "synthesize"]
    assert set(spec["components"]["comp-for-loop-2"]["dag"]["tasks"]) == {"embed-shard"}
    merge = handler["build-index"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert merge == {"outputArtifactKey": "pipelinechannel--embed-shard-vectors", "producerTask": "for-loop-2"}
    executors = spec["deploymentSpec"]["executors"]
    accelerator = executors["exec-embed-shard"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1


def test_llm_key_comes_from_a_secret_never_a_parameter(compiled):
    _, platform = _docs(compiled)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-synthesize", "exec-evaluate"):
        secret = executors[name]["secretAsEnv"][0]
        assert secret["secretName"] == LLM_SECRET_NAME and secret["optional"] is True
        assert secret["keyToEnv"] == [{"envVar": "CODERAG_LLM_API_KEY", "secretKey": "api-key"}]
    # The deploy step pushes to the GitOps remote with a token from its own Secret.
    secret = executors["exec-deploy"]["secretAsEnv"][0]
    assert secret["secretName"] == "coderag-gitops" and secret["optional"] is True
    assert secret["keyToEnv"] == [{"envVar": "CODERAG_PROMOTE_GIT_TOKEN", "secretKey": "token"}]
    assert not any("key" in p or p.endswith("token") or "secret" in p for p in PIPELINE_PARAMETERS)


def test_image_override_leaves_module_components_alone(tmp_path):
    pinned = "registry.example/coderag@sha256:" + "a" * 64
    out = compile_pipeline(tmp_path / "pinned.yaml", image=pinned)
    spec, _ = _docs(out)
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {pinned}
    import components

    assert components.deploy.component_spec.implementation.container.image == IMAGE


def test_settings_parameters_match_the_pipeline_signature():
    signature = inspect.signature(coderag_pipeline.pipeline_func).parameters
    assert tuple(signature) == PIPELINE_PARAMETERS
    defaults = PipelineSettings().pipeline_arguments()
    assert {name: p.default for name, p in signature.items()} == defaults


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_to_unreachable_host_is_one_clear_error(capsys):
    host = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(PipelineSubmitError, match="cannot reach the KFP API at " + host):
        submit(host, "coderag", "r1", {})
    assert cli_main(["pipeline", "submit", "--host", host, "--n-records", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coderag: error: cannot reach the KFP API") and "\n" not in err


def test_submit_and_run_validate_their_input(tmp_path, capsys):
    with pytest.raises(ConfigError, match="http"):
        submit("localhost:8080", "coderag", None, {})
    with pytest.raises(ConfigError, match="compile"):
        submit("http://127.0.0.1:1", "coderag", None, {}, package_path=tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unknown pipeline parameter"):
        run_local({"n_recordz": 5}, tmp_path / "run")
    assert cli_main(["pipeline", "run", "--n-records", "100"]) == 2
    assert "--local" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: the choices come from the setting's type
        cli_main(["pipeline", "run", "--local", "--promote-env", "qa"])
    assert exited.value.code == 2 and "--promote-env: invalid choice: 'qa'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot promote them: drop --promote-repo"):
        run_local({"promote_repo": "https://example.com/gitops.git"}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture()
def one_thread_per_step(monkeypatch):
    """Each step is its own process; one torch thread each avoids oversubscribing a small, shared CPU."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.usefixtures("one_thread_per_step")
def test_local_run_with_failing_step_stops_before_deploy(tmp_path):
    missing = tmp_path / "no-such-corpus.jsonl"
    result = run_local({**TINY, "corpus": str(missing), "min_recall_at_5": 0.0}, tmp_path / "run")
    assert result.status == "failed" and result.stopped_at == "synthesize"
    assert result.run_status["status"] == "FAILED"
    run_dir = next((tmp_path / "run" / "artifacts").iterdir())
    assert not any((run_dir / step).exists() for step in ("finetune", "evaluate", "gate", "deploy"))
    assert not (tmp_path / "deployed").exists()
    assert "no-such-corpus" in (tmp_path / "run" / "pipeline.log").read_text()


@pytest.mark.usefixtures("one_thread_per_step")
def test_local_run_deploys_then_gates_the_next_run_against_the_release(tmp_path):
    """Gate passes -> the release is deployed; the next run is compared with it question by question, and
    one that fails the gate (an impossible floor) is skipped: the deployed release stays as it was."""
    first = run_local({**TINY, "min_recall_at_5": 0.0, "min_execution_accuracy": 0.0}, tmp_path / "first")
    assert (first.status, first.reasons, first.run_status["status"]) == ("deployed", [], "SUCCEEDED")
    current = json.loads((tmp_path / "deployed" / "current.json").read_text())
    assert current["metrics"]["recall@5"] == first.metrics["recall@5"]
    assert current["metrics"]["ex"] == first.metrics["ex"]
    run_dir = next((tmp_path / "first" / "artifacts").iterdir())
    built = SchemaIndex.load(run_dir / "build-index" / "index")
    released = SchemaIndex.load(current["index_dir"])
    assert (released.count, released.snippets) == (built.count, built.snippets)
    released_rows = json.loads(Path(current["per_question"]).read_text())["rows"]
    assert len(released_rows) == first.metrics["n_eval"] == 2
    outcome = json.loads((tmp_path / "first" / "outcome.json").read_text())
    assert outcome["status"] == "deployed"

    # The next run, same seed and config, on an impossible floor: the gate compares it with the deployed
    # release question by question, refuses it on the floor, and nothing is deployed over the release.
    deployed_before = (tmp_path / "deployed" / "current.json").read_bytes()
    second = run_local({**TINY, "min_recall_at_5": 1.01, "min_execution_accuracy": 0.0}, tmp_path / "second")
    assert second.status == "skipped" and second.run_status["status"] == "SUCCEEDED"
    assert second.reasons and "recall@5" in second.reasons[0] and "floor 1.0100" in second.reasons[0]
    assert second.metrics["n_eval"] == 2
    outcome = json.loads((tmp_path / "second" / "outcome.json").read_text())
    assert outcome["status"] == "skipped" and outcome["reasons"] == second.reasons
    # Same seed and config: the same questions, so each metric is paired with the deployed release's.
    paired = [c for c in outcome["gate"]["checks"] if "deployed" in c]
    assert paired, outcome["gate"]["checks"]
    run_dir = next((tmp_path / "second" / "artifacts").iterdir())
    expected = held_out_retrieval(run_dir / "synthesize" / "corpus_split", run_dir / "finetune" / "model",
                                  run_dir / "build-index" / "index")
    assert second.metrics["recall@5"] == pytest.approx(expected["recall@5"], abs=1e-3)
    assert (run_dir / "build-index" / "index" / "manifest.json").is_file()
    assert not (run_dir / "deploy").exists()
    assert (tmp_path / "deployed" / "current.json").read_bytes() == deployed_before


def test_evaluate_component_hands_the_tuned_generator_to_the_stage(tmp_path, monkeypatch):
    """The component passes the adapter's path on (and "" without one); the stage loads that directory."""
    from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

    import coderag.evaluation.report
    import coderag.generation.llm
    import coderag.pipeline.stages
    import components

    seen = []
    monkeypatch.setattr(coderag.pipeline.stages, "evaluate_stage", lambda **kw: seen.append(kw) or {"ex": 0.5})
    monkeypatch.setattr(coderag.evaluation.report, "combined_report", lambda report_dir: ("# report", "<p>report</p>"))
    art = {name: kind(name=name, uri=str(tmp_path / name), metadata={}) for name, kind in (
        ("corpus_split", Dataset), ("model", Model), ("index", Artifact), ("metrics", Metrics),
        ("details", Artifact), ("report", Markdown), ("report_html", HTML), ("generator", Model))}
    common = dict(corpus_split=art["corpus_split"], model=art["model"], index=art["index"], k=2, n_eval=2,
                  max_new_tokens=24, n_candidates=1, sampling_temperature=0.7, examples=0, llm_base_url="",
                  llm_model="", benchmark_dir="", n_benchmark=2, seed=0, metrics=art["metrics"],
                  details=art["details"], report=art["report"], report_html=art["report_html"])
    components.evaluate.python_func(**common, generator=art["generator"])
    components.evaluate.python_func(**common)
    assert [kw["generator_dir"] for kw in seen] == [art["generator"].path, ""]

    class Loaded:
        def __init__(self, model_path=None, device="cpu", **kwargs):
            self.model_path, self.device = model_path, device

    monkeypatch.setattr(coderag.generation.llm, "LocalTransformersGenerator", Loaded)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    with pytest.raises(ConfigError, match="no tuned generator"):
        coderag.pipeline.stages.stage_generator(generator_dir=tuned)
    (tuned / coderag.generation.llm.GENERATOR_MANIFEST).write_text(json.dumps({"format": "lora-adapter"}))
    loaded = coderag.pipeline.stages.stage_generator("http://127.0.0.1:9/v1", "served", generator_dir=tuned)
    assert isinstance(loaded, Loaded) and loaded.model_path == str(tuned)
    assert type(coderag.pipeline.stages.stage_generator("http://127.0.0.1:9/v1", "served")).__name__ == \
        "OpenAIChatGenerator"

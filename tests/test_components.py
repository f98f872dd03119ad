"""Each KFP component's function, called directly (no KFP runner) on a tiny config, in graph order."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from expected import held_out_retrieval, same_rows_on_context
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model
from tooling import needs_tool

import components
from coderag.errors import ConfigError
from coderag.pipeline.stages import HELDOUT_FILE, TRAIN_FILE, read_corpus
from coderag.retrieval.index import SchemaIndex

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"corpus": "builtin", "n_records": 200, "eval_fraction": 0.2, "seed": 0}


def _artifact(kind, root: Path, name: str):
    return kind(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """synthesize -> finetune -> build_index -> evaluate, each through its component's python_func."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small shared CPU: one thread avoids oversubscription
    root = tmp_path_factory.mktemp("components")
    a = {name: _artifact(kind, root, name) for name, kind in (
        ("corpus_split", Dataset), ("pairs", Dataset), ("model", Model), ("training_metrics", Metrics),
        ("index", Artifact), ("metrics", Metrics), ("details", Artifact), ("report", Markdown),
        ("report_html", HTML))}
    components.synthesize.python_func(
        **TINY, synth_backend="offline", llm_base_url="", llm_model="", max_train_pairs=32, n_negatives=1,
        corpus_split=a["corpus_split"], pairs=a["pairs"])
    components.finetune.python_func(
        # batch 2: the 32 tiny pairs hold few distinct schemas, and a batch never repeats a text
        pairs=a["pairs"], corpus_split=a["corpus_split"], encoder="", profile="laptop", epochs=1.0, batch_size=2,
        max_steps=2, learning_rate=5e-5, cached=False, seed=0, model=a["model"], training_metrics=a["training_metrics"])
    shards = components.plan_shards.python_func(corpus_split=a["corpus_split"], shard_size=16)
    shard_artifacts = [_artifact(Artifact, root, f"shard-{shard}") for shard in shards]
    for shard, artifact in zip(shards, shard_artifacts, strict=True):
        components.embed_shard.python_func(corpus_split=a["corpus_split"], model=a["model"], shard=shard,
                                           shard_size=16, device="", vectors=artifact)
    a["shards"] = shard_artifacts
    components.build_index.python_func(corpus_split=a["corpus_split"], model=a["model"], shards=shard_artifacts,
                                       index_type="flat", lexical_weight=0.3, examples=2, index=a["index"])
    components.evaluate.python_func(
        corpus_split=a["corpus_split"], model=a["model"], index=a["index"], k=2, n_eval=2, max_new_tokens=24,
        n_candidates=2, sampling_temperature=0.7, examples=2,
        llm_base_url="", llm_model="", benchmark_dir="", n_benchmark=2, seed=0, metrics=a["metrics"],
        details=a["details"], report=a["report"], report_html=a["report_html"])
    torch.set_num_threads(threads)
    return root, a


def test_synthesize_writes_split_corpus_and_pairs(stages):
    _, a = stages
    corpus_dir = Path(a["corpus_split"].path)
    assert (corpus_dir / TRAIN_FILE).is_file() and (corpus_dir / HELDOUT_FILE).is_file()
    train, held_out = read_corpus(corpus_dir)
    assert len(train) + len(held_out) == 200
    assert not {r["domain"] for r in train} & {r["domain"] for r in held_out}
    assert a["corpus_split"].metadata["heldout_records"] == len(held_out)

    from datasets import Dataset as HFDataset

    pairs = HFDataset.load_from_disk(a["pairs"].path)
    assert 2 <= len(pairs) <= 32
    assert len(pairs) == a["pairs"].metadata["train_pairs"]
    assert {"anchor", "positive", "negative_1"} <= set(pairs.column_names)
    assert set(pairs["task"]) <= {"question->schema", "paraphrase->schema", "hybrid_question->schema"}
    # Pairs never come from held-out domains (evaluation must see unseen schemas).
    assert not set(pairs["domain"]) & {r["domain"] for r in held_out}


def test_finetune_saves_a_model_and_logs_before_after(stages):
    _, a = stages
    model_dir = Path(a["model"].path)
    assert (model_dir / "README.md").is_file() and (model_dir / "training_report.json").is_file()
    logged = a["training_metrics"].metadata
    assert {"before/recall@1", "after/recall@1", "before/ndcg@10", "after/ndcg@10"} <= set(logged)
    assert a["model"].metadata["framework"] == "sentence-transformers"
    report = json.loads((model_dir / "training_report.json").read_text())
    assert logged["train_steps"] == report["training"]["steps"] == 2 and logged["train_minutes"] == report["minutes"] > 0
    assert report["profile"] == "laptop" and report["device_name"].startswith("cpu")
    card = (model_dir / "README.md").read_text()
    steps = report["training"]["steps"]
    assert f"| laptop | {report['train_size']} | {steps} | {report['minutes']} | {report['device_name']} |" in card


def test_build_index_indexes_every_unique_schema(stages):
    """Train and held-out schemas alike: held-out questions must be able to find their own schema."""
    from coderag.corpus.schemas import normalize_schema, schema_only

    _, a = stages
    index = SchemaIndex.load(a["index"].path)
    train, held_out = read_corpus(a["corpus_split"].path)
    expected = {normalize_schema(schema_only(r["sql_context"])) for r in train + held_out}
    indexed = [normalize_schema(s) for s in index.snippets]
    assert len(indexed) == len(set(indexed)) == len(expected) == index.count == a["index"].metadata["count"]
    assert set(indexed) == expected
    held_out_only = {normalize_schema(schema_only(r["sql_context"])) for r in held_out} - {
        normalize_schema(schema_only(r["sql_context"])) for r in train}
    assert held_out_only and held_out_only <= set(indexed)
    assert index.encoder_name == a["model"].path
    # Three shards of at most 16 schemas, merged in order: the plan, the loop bodies and the merge agree.
    assert len(a["shards"]) == -(-index.count // 16) >= 2
    assert [s.metadata["start"] for s in a["shards"]] == list(range(0, index.count, 16))
    assert a["index"].metadata["shards"] == len(a["shards"])
    # The training split's question -> SQL examples are stored beside it, and nothing of the held-out side.
    assert set(index.examples.questions) == {r["sql_prompt"] for r in train}
    assert not set(index.examples.domains) & {r["domain"] for r in held_out}
    assert a["index"].metadata["examples"] == len(train)


def test_build_index_without_examples_stores_none_and_the_same_schemas(stages, tmp_path):
    """``examples`` 0 (the pipeline's default): the merge step stores the schemas alone, no example files."""
    from coderag.retrieval.examples import EXAMPLES_FILE

    root, a = stages
    bare = _artifact(Artifact, tmp_path, "index-without-examples")
    components.build_index.python_func(corpus_split=a["corpus_split"], model=a["model"], shards=a["shards"],
                                       index_type="flat", lexical_weight=0.0, examples=0, index=bare)
    index, with_examples = SchemaIndex.load(bare.path), SchemaIndex.load(a["index"].path)
    assert (index.lexical_weight, with_examples.lexical_weight) == (0.0, 0.3)  # the parameter, in the manifest
    assert bare.metadata["lexical_weight"] == 0.0 and a["index"].metadata["lexical_weight"] == 0.3
    assert index.examples is None and not (Path(bare.path) / EXAMPLES_FILE).exists()
    assert "examples" not in json.loads((Path(bare.path) / "manifest.json").read_text())
    assert index.snippets == with_examples.snippets and bare.metadata["examples"] == 0


def test_evaluate_logs_retrieval_and_sql_metrics(stages):
    _, a = stages
    logged = a["metrics"].metadata
    # Retrieval, recomputed here by brute force (numpy dot products over the index's own snippets).
    expected = held_out_retrieval(a["corpus_split"].path, a["model"].path, a["index"].path)
    for name in ("recall@1", "recall@5", "recall@10", "mrr@10"):
        assert logged[name] == pytest.approx(expected[name], abs=1e-3), name
    assert logged["n_eval"] == 2
    details = json.loads(Path(a["details"].path).read_text())
    rows = details["rows"]
    assert len(rows) == 2
    assert logged["ex"] == pytest.approx(sum(r["ex"] for r in rows) / 2)
    assert logged["em"] == pytest.approx(sum(r["em"] for r in rows) / 2)
    _, held_out = read_corpus(a["corpus_split"].path)
    for row in rows:
        record = next(r for r in held_out if str(r["id"]) == row["id"])
        naive = same_rows_on_context(record["sql_context"], row["gold"], row["pred"])
        # Test-suite EX is stricter than one database: a match there never fails here, a miss here never matches.
        assert not row["ex"] or naive, row
        assert (row["status"] == "ok") == row["ex"], row
        # Two candidates voted on, two training examples in the prompt (never a held-out question).
        assert row["vote"]["n"] == 2 and len(row["examples"]) == 2
        assert not set(row["examples"]) & {r["sql_prompt"] for r in held_out}
    assert {"key", "ex", "hit@5", "hardness", "status"} <= set(details["rows"][0])
    assert details["rows"][0]["key"].startswith("heldout:")
    assert "# CodeRAG evaluation: heldout" in Path(a["report"].path).read_text()
    page = Path(a["report_html"].path).read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page


def test_gate_component_passes_and_fails_on_floors(stages, tmp_path):
    _, a = stages
    passing = components.gate.python_func(
        metrics=a["metrics"], details=a["details"], min_recall_at_5=0.0, min_execution_accuracy=0.0, max_regression=0.0,
        current_metrics="", decision=_artifact(Artifact, tmp_path, "ok"))
    assert passing.passed is True and json.loads(passing.reasons) == []
    decision = _artifact(Artifact, tmp_path, "impossible")
    failing = components.gate.python_func(
        metrics=a["metrics"], details=a["details"], min_recall_at_5=1.5, min_execution_accuracy=0.0, max_regression=0.0,
        current_metrics="", decision=decision)
    assert failing.passed is False
    assert "floor 1.5000" in json.loads(failing.reasons)[0]
    assert json.loads(Path(decision.path).read_text())["passed"] is False


def test_gate_component_applies_the_execution_accuracy_floor(stages, tmp_path):
    """The EX floor reaches decide(): a floor above the measured EX fails the gate on EX alone."""
    _, a = stages
    ex = a["metrics"].metadata["ex"]
    floor = round(ex + 0.25, 4)
    decision = _artifact(Artifact, tmp_path, "ex-floor")
    failing = components.gate.python_func(
        metrics=a["metrics"], details=a["details"], min_recall_at_5=0.0, min_execution_accuracy=floor,
        max_regression=0.0, current_metrics="", decision=decision)
    reasons = json.loads(failing.reasons)
    assert failing.passed is False
    assert len(reasons) == 1 and reasons[0].startswith("ex ") and f"floor {floor:.4f}" in reasons[0]
    assert json.loads(Path(decision.path).read_text())["reasons"] == reasons


def test_deploy_publishes_release_and_skip_records_reasons(stages, tmp_path):
    _, a = stages
    decision = _artifact(Artifact, tmp_path, "decision")
    components.gate.python_func(metrics=a["metrics"], details=a["details"], min_recall_at_5=0.0, min_execution_accuracy=0.0,
                                max_regression=0.0, current_metrics="", decision=decision)
    deploy_dir = tmp_path / "deployed"
    outcome = _artifact(Artifact, tmp_path, "outcome")
    components.deploy.python_func(model=a["model"], index=a["index"], metrics=a["metrics"], details=a["details"], decision=decision,
                                  deploy_dir=str(deploy_dir), promote_repo="", promote_env="dev", outcome=outcome)
    current = json.loads((deploy_dir / "current.json").read_text())
    assert current["metrics"]["recall@5"] == a["metrics"].metadata["recall@5"]
    # The per-question results travel with the release: the next gate pairs with them.
    assert json.loads(Path(current["per_question"]).read_text())["rows"] == json.loads(
        Path(a["details"].path).read_text())["rows"]
    assert SchemaIndex.load(current["index_dir"]).count == a["index"].metadata["count"]
    assert (Path(current["model_dir"]) / "config.json").is_file()
    assert json.loads(Path(outcome.path).read_text())["status"] == "deployed"

    failed = _artifact(Artifact, tmp_path, "failed-decision")
    components.gate.python_func(metrics=a["metrics"], details=a["details"], min_recall_at_5=2.0, min_execution_accuracy=0.0,
                                max_regression=0.0, current_metrics="", decision=failed)
    skipped = _artifact(Artifact, tmp_path, "skipped")
    components.skip_deploy.python_func(decision=failed, outcome=skipped)
    record = json.loads(Path(skipped.path).read_text())
    assert record["status"] == "skipped" and "floor 2.0000" in record["reasons"][0]


def test_deploy_without_a_target_is_refused(stages, tmp_path):
    _, a = stages
    decision = _artifact(Artifact, tmp_path, "decision")
    decision_path = Path(decision.path)
    decision_path.write_text(json.dumps({"passed": True, "reasons": []}))
    with pytest.raises(ConfigError, match="deploy_dir"):
        components.deploy.python_func(model=a["model"], index=a["index"], metrics=a["metrics"], details=a["details"], decision=decision,
                                      deploy_dir="", promote_repo="", promote_env="dev",
                                      outcome=_artifact(Artifact, tmp_path, "outcome"))


def test_record_run_status_writes_the_final_state(tmp_path):
    from kfp.dsl import PipelineTaskFinalStatus

    status = PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="job", pipeline_task_name="exit",
                                     error_code=1, error_message="synthesize failed")
    out = _artifact(Artifact, tmp_path, "run_status")
    components.record_run_status.python_func(status=status, run_status=out)
    record = json.loads(Path(out.path).read_text())
    assert record["status"] == "FAILED" and record["reasons"] == ["synthesize failed"]


def _gitops_checkout(repo: Path) -> Path:
    """A git repository holding a copy of this project's manifests/, one commit on main."""
    shutil.copytree(REPO_ROOT / "manifests", repo / "manifests")
    for args in (("init", "--quiet", "--initial-branch=main"), ("add", "."), ("commit", "--quiet", "-m", "init")):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)
    return repo


@needs_tool("git", "scripts/install-system.sh")
def test_deploy_promotes_artifact_uris_into_a_gitops_checkout(stages, tmp_path):
    """With promote_repo, the deploy step commits the artifacts' URIs and metrics to the dev overlay."""
    from coderag.release.promotion import read_release
    from coderag.release.publish import deploy_release

    repo = _gitops_checkout(tmp_path / "gitops")
    _, a = stages
    record = deploy_release(model_dir=a["model"].path, index_dir=a["index"].path, metrics={"recall@5": 0.8, "ex": 0.3},
                            model_uri="s3://bucket/run-1/model", index_uri="s3://bucket/run-1/index",
                            promote_repo=str(repo), promote_env="dev")
    assert record["promotion"]["committed"] is True
    release = read_release(repo, "dev")
    assert (release.model_uri, release.index_uri) == ("s3://bucket/run-1/model", "s3://bucket/run-1/index")
    message = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%B"], capture_output=True, text=True,
                             check=True).stdout
    assert "recall@5: 0.8" in message


@needs_tool("git", "scripts/install-system.sh")
def test_deploy_pushes_kfp_minio_artifacts_to_a_gitops_remote_as_s3(stages, tmp_path):
    """In the cluster the deploy step has no checkout: it clones the remote, commits and pushes s3:// URIs."""
    from coderag.release.publish import deploy_release

    seed = _gitops_checkout(tmp_path / "seed")
    remote = tmp_path / "gitops.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(seed), str(remote)], check=True)
    _, a = stages
    record = deploy_release(model_dir=a["model"].path, index_dir=a["index"].path, metrics={"recall@5": 0.8},
                            model_uri="minio://mlpipeline/v2/artifacts/run-2/model",
                            index_uri="minio://mlpipeline/v2/artifacts/run-2/index",
                            promote_repo=f"file://{remote}", promote_env="dev")
    assert record["promotion"]["committed"] and record["promotion"]["pushed_to"] == f"file://{remote}"
    released = subprocess.run(["git", "-C", str(remote), "show", "main:manifests/overlays/dev/release.env"],
                              capture_output=True, text=True, check=True).stdout
    assert "MODEL_URI=s3://mlpipeline/v2/artifacts/run-2/model" in released

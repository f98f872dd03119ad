"""The retriever service: a real ModelServer on 127.0.0.1 called with KServe's InferenceRESTClient (v1, v2)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from kserve import InferenceRESTClient, InferRequest, RESTConfig
from kserve.protocol.infer_type import InferInput
from serving_harness import metric_value, scrape_metrics, start_service

from serving import metrics
from serving.batching import MicroBatcher
from serving.retriever import RetrieverModel
from serving.settings import RetrieverSettings

MODEL = "coderag-retriever"


def _v1(service, instances):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            return await client.infer(service.url, {"instances": instances}, model_name=MODEL)
        finally:
            await client._client.aclose()

    return asyncio.run(call())


def test_v1_returns_top_k_snippets_of_the_right_domain(retriever_service):
    response = _v1(
        retriever_service,
        [
            {"query": "Which patients were admitted to each hospital ward?", "k": 3},
            {"query": "List flights by origin and destination airport"},
        ],
    )
    first, second = response["predictions"]
    assert [h["rank"] for h in first["results"]] == [1, 2, 3]
    assert first["results"][0]["domain"] == "hospital"
    assert "CREATE TABLE patients_" in first["results"][0]["text"]
    scores = [h["score"] for h in first["results"]]
    hybrid = [h["hybrid"] for h in first["results"]]  # ranks follow cosine + lexical weight x BM25
    assert hybrid == sorted(hybrid, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(0.0 <= h["lexical"] <= 1.0 for h in first["results"])
    assert second["k"] == 3 and len(second["results"]) == 3  # the default k (the one shared default)
    assert second["results"][0]["domain"] == "aviation"


def test_v2_infer_with_bytes_query_and_k(retriever_service):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        request = InferRequest(
            model_name=MODEL,
            infer_inputs=[
                InferInput(
                    "query", [2], "BYTES", ["power plants by fuel type and capacity", "album release year by artist"]
                ),
                InferInput("k", [1], "INT32", [4]),
            ],
        )
        try:
            return await client.infer(retriever_service.url, request, model_name=MODEL)
        finally:
            await client._client.aclose()

    response = asyncio.run(call())
    outputs = {o.name: o for o in response.outputs}
    assert outputs["text"].shape == [2, 4] and outputs["score"].shape == [2, 4]
    domains = outputs["domain"].as_numpy()
    assert domains[0][0] in ("energy", b"energy") and domains[1][0] in ("music", b"music")
    ids = outputs["snippet_id"].as_numpy()
    assert ids.shape == (2, 4) and (ids >= 0).all()


def test_concurrent_requests_all_answered_and_batched(retriever_service):
    before = scrape_metrics(retriever_service.url)

    async def call_many():
        async with httpx.AsyncClient(timeout=60) as client:
            url = f"{retriever_service.url}/v1/models/{MODEL}:predict"
            bodies = [{"instances": [{"query": f"students with gpa above {i}", "k": 2}]} for i in range(16)]
            return await asyncio.gather(*(client.post(url, json=b) for b in bodies))

    responses = asyncio.run(call_many())
    assert all(r.status_code == 200 for r in responses)
    assert all(r.json()["predictions"][0]["results"][0]["domain"] == "education" for r in responses)
    after = scrape_metrics(retriever_service.url)
    def delta(sample: str) -> float:
        name = f"{metrics.BATCH_SIZE}_{sample}"
        return metric_value(after, name, service="retriever") - metric_value(before, name, service="retriever")

    assert delta("sum") == 16  # every query went through exactly one micro-batch
    assert delta("count") < 16  # and concurrent queries shared batches (one encode + one search each)


def test_metrics_exported_with_values(retriever_service):
    _v1(retriever_service, [{"query": "shipments by warehouse weight", "k": 2}])
    samples = scrape_metrics(retriever_service.url)
    assert metric_value(samples, metrics.INDEX_SIZE, service="retriever") == 240
    assert (
        metric_value(
            samples, metrics.MODEL_INFO, service="retriever", encoder="builtin:all-MiniLM-L6-v2", index_dim="384"
        )
        == 1
    )
    for stage in ("embed", "search", "retrieve", "total"):
        assert metric_value(samples, f"{metrics.STAGE_LATENCY}_count", service="retriever", stage=stage) > 0
    assert metric_value(samples, f"{metrics.TOP1_SCORE}_count", service="retriever") > 0
    assert metric_value(samples, metrics.REQUESTS, service="retriever", route="v1_predict", code="200") > 0
    assert metric_value(samples, metrics.EMPTY_RESULTS, service="retriever") == 0
    # KServe's own metrics are still there beside ours.
    assert any(name.startswith("request_predict_seconds") for name in samples)


def test_min_score_floor_counts_empty_results_and_pads_v2(built_schema_index, encoder_model):
    settings = RetrieverSettings(index_dir="unused", min_score=0.99)
    model = RetrieverModel("floor", settings, index=built_schema_index, encoder_model=encoder_model)
    assert model.load() and model.ready
    before = metrics.empty_results.labels(service="retriever")._value.get()
    response = asyncio.run(model.predict({"instances": [{"query": "weather on mars", "k": 3}]}))
    assert response["predictions"][0]["results"] == []
    assert metrics.empty_results.labels(service="retriever")._value.get() == before + 1
    v2 = asyncio.run(
        model.predict(
            InferRequest(model_name="floor", infer_inputs=[InferInput("query", [1], "BYTES", ["weather on mars"])])
        )
    )
    assert v2.outputs[0].shape == [1, 0]
    model.stop()


def test_micro_batcher_merges_concurrent_submissions_and_keeps_order():
    seen = []

    def run_batch(texts, k):
        seen.append((list(texts), k))
        return [f"{t}:{k}" for t in texts]

    async def main():
        batcher = MicroBatcher(run_batch, max_batch_size=8, max_wait_s=0.05)
        try:
            return await asyncio.gather(*(batcher.submit([f"q{i}"], k=i % 3 + 1) for i in range(10)))
        finally:
            batcher.close()

    results = asyncio.run(main())
    assert [r[0].split(":")[0] for r in results] == [f"q{i}" for i in range(10)]
    assert [len(texts) for texts, _ in seen] == [8, 2]  # capped at max_batch_size, the rest in the next batch
    assert seen[0][1] == 3  # the largest k of the batch


def test_micro_batcher_hands_errors_to_every_caller():
    def run_batch(texts, k):
        raise ValueError("boom")

    async def main():
        batcher = MicroBatcher(run_batch, max_batch_size=4, max_wait_s=0.01)
        try:
            return await asyncio.gather(*(batcher.submit(["a"], 1) for _ in range(3)), return_exceptions=True)
        finally:
            batcher.close()

    assert all(isinstance(r, ValueError) for r in asyncio.run(main()))


def test_unready_retriever_answers_503_with_the_reason(tmp_path):
    missing = tmp_path / "no-index"
    service = start_service(
        "retriever",
        ["--index_dir", str(missing), "--background_load", "true"],
        tmp_path,
        model_name=MODEL,
        wait_ready=False,
    )
    try:
        health = httpx.get(f"{service.url}/v1/models/{MODEL}", timeout=10)
        assert health.status_code == 503
        response = httpx.post(
            f"{service.url}/v1/models/{MODEL}:predict", json={"instances": [{"query": "x"}]}, timeout=10
        )
        assert response.status_code == 503
        # The reason without the server's paths; the log keeps them for the operator.
        assert response.json()["error"] == (
            f"Model with name {MODEL} is not ready. index directory <path> does not exist: "
            "build one with `coderag index build --out <path>`"
        )
        assert str(missing) in service.log_tail(200)
        assert httpx.get(f"{service.url}/v2/health/live", timeout=10).status_code == 200
        ready = httpx.get(f"{service.url}/v2/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json() == {
            "ready": False,
            "error": f"not ready: {MODEL}: index directory <path> does not exist: "
                     "build one with `coderag index build --out <path>`",
        }
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "the retriever needs an index: pass --index_dir DIR or --storage_uri DIR (CODERAG_RETRIEVER_INDEX_DIR)"),
        (
            ["--index_dir", "/nonexistent/idx", "--max_k", "0"],
            "invalid setting max_k: Input should be greater than or equal to 1",
        ),
        (
            ["--index_dir", "/nonexistent/idx", "--lexical_weight", "1.5"],
            "invalid setting lexical_weight: Input should be less than or equal to 1",
        ),
    ],
)
def test_cli_refuses_bad_configuration_in_one_line(flags, message):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "coderag.cli", "serve", "retriever", "--http_port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"coderag: error: {message}")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "text/plain"])
def test_json_body_with_another_content_type_is_served(retriever_service, content_type):
    """KServe decodes only an exact application/json; a charset parameter must not turn a good body into a 400."""
    response = httpx.post(f"{retriever_service.url}/v1/models/{MODEL}:predict",
                          content=b'{"instances": [{"query": "patients per ward", "k": 2}]}',
                          headers={"content-type": content_type}, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["results"]) == 2


def test_an_unexpected_load_failure_is_kept_as_the_503_reason():
    from kserve.errors import ModelNotReady

    from serving.server import ServiceModel

    class Broken(ServiceModel):
        def load(self):
            raise RuntimeError("faiss: cannot map file\nsecond line")

    model = Broken("broken")
    assert model.load_or_record() is False and not model.ready
    assert model.load_error == ("loading failed unexpectedly (RuntimeError: faiss: cannot map file): "
                                "see the server log")
    with pytest.raises(ModelNotReady):
        asyncio.run(model.healthy())


def test_retriever_is_not_ready_with_an_encoder_the_index_was_not_built_with(encoder_model, tmp_path):
    """Same dimension, other weights: serving would be silently worse, so the model never becomes ready."""
    import numpy as np

    from coderag.retrieval.index import SchemaIndex

    index = SchemaIndex.from_vectors(np.eye(2, 384, dtype="float32"), ["a", "b"], encoder_name="my-finetuned",
                                     encoder_fingerprint="0" * 16)
    model = RetrieverModel(MODEL, RetrieverSettings(index_dir=tmp_path), index=index, encoder_model=encoder_model)
    assert model.load_or_record() is False and not model.ready
    assert "index was built with encoder my-finetuned" in model.load_error
    assert "load the matching encoder" in model.load_error


@pytest.mark.parametrize("service", ["retriever", "generator", "rag"])
def test_grpc_is_off_unless_asked_for(service):
    """Validation, JSON errors and request metrics live on the REST app: gRPC must be an explicit choice."""
    from serving.entrypoints import build_service_parser

    parser = build_service_parser(service)
    assert parser.parse_args([]).enable_grpc is False
    assert parser.parse_args(["--enable_grpc", "true"]).enable_grpc is True


def test_retriever_searching_by_gemm_answers_what_faiss_finds(serving_index_dir, built_schema_index, encoder_model,
                                                               tmp_path):
    from coderag.retrieval.encoder import encode

    questions = ["Which patients were admitted to each hospital ward?", "List flights by origin airport",
                 "power plants by fuel type", "album release year by artist", "average gpa per major"]
    # --lexical_weight 0 (cosine only) overrides the manifest's weight: the service ranks as FAISS does
    service = start_service("retriever", ["--index_dir", str(serving_index_dir), "--flat_search", "gemm",
                                          "--lexical_weight", "0"], tmp_path, model_name=MODEL)
    try:
        response = _v1(service, [{"query": q, "k": 5} for q in questions])
    finally:
        service.stop()
    scores, ids = built_schema_index.faiss_index.search(encode(encoder_model, questions), 5)
    got = response["predictions"]
    assert [[h["snippet_id"] for h in p["results"]] for p in got] == ids.tolist()
    for prediction, row in zip(got, scores.tolist(), strict=True):
        assert [h["score"] for h in prediction["results"]] == pytest.approx(row, abs=1e-5)
        assert all(h["lexical"] == 0.0 for h in prediction["results"])


def test_retriever_ranks_by_the_hybrid_score_the_index_manifest_records(serving_index_dir, built_schema_index,
                                                                          encoder_model, tmp_path):
    from coderag.retrieval.encoder import encode

    questions = ["Which patients were admitted to each hospital ward?", "average gpa per major"]
    weight = json.loads((serving_index_dir / "manifest.json").read_text())["lexical_weight"]
    assert weight == built_schema_index.lexical_weight > 0
    service = start_service("retriever", ["--index_dir", str(serving_index_dir)], tmp_path, model_name=MODEL)
    try:
        response = _v1(service, [{"query": q, "k": 5} for q in questions])
    finally:
        service.stop()
    cosine, lexical, ids = built_schema_index.search_questions(encode(encoder_model, questions), questions, 5)
    got = response["predictions"]
    assert [[h["snippet_id"] for h in p["results"]] for p in got] == ids.tolist()
    for prediction, row_cos, row_lex in zip(got, cosine.tolist(), lexical.tolist(), strict=True):
        assert [h["score"] for h in prediction["results"]] == pytest.approx(row_cos, abs=1e-5)
        assert [h["lexical"] for h in prediction["results"]] == pytest.approx(row_lex, abs=1e-5)
        assert any(h["lexical"] > 0 for h in prediction["results"])  # the questions' words are in the schemas


def test_gemm_search_on_an_hnsw_index_keeps_the_retriever_unready_with_the_reason(encoder_model, tmp_path):
    import numpy as np

    from coderag.retrieval.ann import IndexSpec
    from coderag.retrieval.encoder import encoder_fingerprint
    from coderag.retrieval.index import SchemaIndex

    vectors = np.random.default_rng(0).standard_normal((50, 384)).astype("float32")
    index = SchemaIndex.from_vectors(vectors, [f"CREATE TABLE t{i} (x INT);" for i in range(50)],
                                     encoder_name="builtin", encoder_fingerprint=encoder_fingerprint(encoder_model),
                                     spec=IndexSpec("hnsw"))
    settings = RetrieverSettings(index_dir=tmp_path, flat_search="gemm")
    model = RetrieverModel(MODEL, settings, index=index, encoder_model=encoder_model)
    assert model.load_or_record() is False and not model.ready
    assert model.load_error == ("flat search 'gemm' needs a flat index, this one is hnsw: "
                                "set flat_search to auto or faiss")

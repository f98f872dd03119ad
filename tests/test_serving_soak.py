"""A bounded soak: 16 clients on loopback for a fixed time, mixing good, bad and hostile requests.

Asserts zero 5xx (and zero transport errors) and RSS growth under 10% for the RAG endpoint and the
retriever. The default run is short (45 s); ``CODERAG_SOAK_SECONDS`` / ``CODERAG_SOAK_CLIENTS`` change
it, and the ``slow`` test runs the 5-minute version (``pytest -m slow -s tests/test_serving_soak.py``).
The figures (requests, statuses, RSS before/after, p50/p99) are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import time

import httpx
import psutil
import pytest
from serving_harness import ScriptedChatServer, start_service

CONTEXT = "CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2), (3);"
RAG = "/v1/models/coderag-rag:predict"
RETRIEVER = "/v1/models/coderag-retriever:predict"


def _workload(rag_url: str, retriever_url: str) -> list[tuple[str, bytes, int]]:
    """(url, body, expected status) cycled by every client: good, careless and hostile requests."""
    def body(value) -> bytes:
        return value if isinstance(value, bytes) else json.dumps(value).encode()

    return [
        (rag_url + RAG, body({"question": "Q-rows: list every a", "sql_context": CONTEXT}), 200),
        (rag_url + RAG, body({"question": "Q-rows: how many orders per city?", "k": 2}), 200),
        (retriever_url + RETRIEVER, body({"instances": [{"query": "patients per ward", "k": 3}]}), 200),
        (rag_url + RAG, body(b'{"question": ' + b"[" * 200 + b"]" * 200 + b"}"), 400),
        (rag_url + RAG, body({"question": "Q-rows", "sql_context": "PRAGMA hard_heap_limit=200000"}), 400),
        (rag_url + RAG, body({"question": "Q-rows", "sql_context": "CREATE TABLE z (b); "
                              + "INSERT INTO z VALUES (zeroblob(100000000)); " * 3}), 400),
        (rag_url + RAG, body({"question": "Q-multi", "sql_context": CONTEXT}), 200),
        (retriever_url + RETRIEVER, body({"instances": [{"query": "orders", "k": 0}]}), 400),
    ]


async def _client(work, stop_at: float, results: list, errors: list, offset: int) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for url, body, expected in itertools.islice(itertools.cycle(work), offset, None):
            if time.monotonic() >= stop_at:
                return
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            results.append((response.status_code, expected, time.perf_counter() - t0))
            if response.status_code != expected and len(errors) < 20:
                errors.append(f"unexpected {response.status_code} (expected {expected}) from {url}: "
                              f"{body[:80]!r} -> {response.text[:300]}")


def soak(rag, retriever, *, seconds: float, clients: int) -> dict:
    """Run the soak; returns its figures (also printed)."""
    work = _workload(rag.url, retriever.url)
    processes = {"rag": psutil.Process(rag.process.pid), "retriever": psutil.Process(retriever.process.pid)}

    async def run(duration: float) -> tuple[list, list]:
        results, errors = [], []
        stop_at = time.monotonic() + duration
        await asyncio.gather(*(_client(work, stop_at, results, errors, i) for i in range(clients)))
        return results, errors

    asyncio.run(run(min(10.0, seconds / 5)))  # warm-up: first-use allocations are not growth
    before = {name: p.memory_info().rss for name, p in processes.items()}
    results, errors = asyncio.run(run(seconds))
    after = {name: p.memory_info().rss for name, p in processes.items()}
    latencies = sorted(r[2] for r in results)
    figures = {
        "seconds": seconds,
        "clients": clients,
        "requests": len(results),
        "status_counts": {str(code): sum(1 for r in results if r[0] == code) for code in sorted({r[0] for r in results})},
        "5xx": sum(1 for r in results if r[0] >= 500),
        "unexpected": sum(1 for r in results if r[0] != r[1]),
        "transport_errors": sum(1 for e in errors if not e.startswith("unexpected ")),
        "rss_mib_before": {k: round(v / 2**20, 1) for k, v in before.items()},
        "rss_mib_after": {k: round(v / 2**20, 1) for k, v in after.items()},
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1) if latencies else None,
    }
    figures["first_errors"] = errors[:5]
    print("soak figures:", json.dumps(figures))
    assert not errors, errors[:5]
    assert figures["5xx"] == 0 and figures["unexpected"] == 0, figures
    for name in processes:
        growth = (after[name] - before[name]) / before[name]
        assert growth < 0.10, f"{name} RSS grew {growth:.1%}: {figures}"
    return figures


@pytest.fixture(scope="module")
def soak_rag(retriever_service, tmp_path_factory):
    llm = ScriptedChatServer({"Q-multi": "SELECT count(*) FROM t; DROP TABLE t", "Q-rows": "```sql\nSELECT a FROM t\n```"})
    flags = ["--retriever_url", retriever_service.url, "--llm_base_url", llm.url, "--llm_model", "scripted"]
    service = start_service("rag", flags, tmp_path_factory.mktemp("soak-logs"), model_name="coderag-rag")
    yield service
    service.stop()
    llm.close()


def test_soak_short(soak_rag, retriever_service):
    figures = soak(soak_rag, retriever_service, seconds=float(os.environ.get("CODERAG_SOAK_SECONDS", "45")),
                   clients=int(os.environ.get("CODERAG_SOAK_CLIENTS", "16")))
    assert figures["requests"] > figures["clients"]


@pytest.mark.slow
def test_soak_five_minutes(soak_rag, retriever_service):
    figures = soak(soak_rag, retriever_service, seconds=300, clients=16)
    assert figures["requests"] > figures["clients"]

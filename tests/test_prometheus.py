"""Alert rules (promtool), the Grafana dashboard against a real scrape, and a real Prometheus server.

promtool and prometheus come from Debian's ``prometheus`` package (scripts/install-system.sh); the
tests that need them skip when they are absent.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tooling import needs_tool

REPO_ROOT = Path(__file__).resolve().parents[1]
MONITORING = REPO_ROOT / "manifests" / "monitoring"
METRIC_NAME = re.compile(r"\b(coderag_[a-z0-9_]+)\b")

needs_promtool = needs_tool("promtool", "Debian: prometheus; scripts/install-system.sh")
needs_prometheus = needs_tool("prometheus", "Debian: prometheus; scripts/install-system.sh")


def rule_groups() -> dict:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    (tmp_path / "coderag.rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    shutil.copy(MONITORING / "prometheusrule.test.yaml", tmp_path / "prometheusrule.test.yaml")
    return tmp_path


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboards" / "coderag.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return queries


def names_in(queries: list[str]) -> set[str]:
    return {name for query in queries for name in METRIC_NAME.findall(query)}


@needs_promtool
def test_promtool_checks_rules(rules_dir):
    done = subprocess.run(
        ["promtool", "check", "rules", "coderag.rules.yaml"], cwd=rules_dir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_every_alert(rules_dir):
    done = subprocess.run(
        ["promtool", "test", "rules", "prometheusrule.test.yaml"], cwd=rules_dir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((MONITORING / "prometheusrule.test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    alerts = {rule["alert"] for group in rule_groups()["groups"] for rule in group["rules"]}
    assert fired == alerts, f"alerts without a firing unit test: {alerts - fired}"
    assert {
        "CodeRAGHighErrorRate",
        "CodeRAGRetrieverLatencyP99High",
        "CodeRAGGuardRefusalSpike",
        "CodeRAGLowTop1Score",
    } <= alerts


@needs_promtool
def test_promtool_unit_test_fails_on_a_wrong_expectation(rules_dir):
    """The unit tests can fail: flip one expected label and promtool must say so."""
    path = rules_dir / "prometheusrule.test.yaml"
    path.write_text(path.read_text().replace("service: rag", "service: retriever", 1))
    done = subprocess.run(["promtool", "test", "rules", path.name], cwd=rules_dir, capture_output=True, text=True)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_metric_names_match_the_serving_contract():
    from serving import metrics

    used = names_in(dashboard_queries()) | names_in([r["expr"] for g in rule_groups()["groups"] for r in g["rules"]])
    suffixes = ("_bucket", "_count", "_sum")
    bases = {next((n.removesuffix(s) for s in suffixes if n.endswith(s)), n) for n in used}
    assert bases <= set(metrics.ALL_METRIC_NAMES), bases - set(metrics.ALL_METRIC_NAMES)


def _scrape_names(url: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def _ask_retriever(service) -> None:
    reply = httpx.post(
        f"{service.url}/v1/models/{service.model_name}:predict",
        json={"instances": [{"query": "average order total per city", "k": 3}]},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text


def test_every_dashboard_and_alert_metric_is_exported_by_a_running_retriever(retriever_service):
    _ask_retriever(retriever_service)
    exported = _scrape_names(retriever_service.url)
    dashboard = names_in(dashboard_queries())
    assert len(dashboard) >= 10
    assert dashboard <= exported, f"dashboard queries metrics nobody exports: {sorted(dashboard - exported)}"
    alerts = names_in([r["expr"] for g in rule_groups()["groups"] for r in g["rules"]])
    assert alerts <= exported, f"alert rules query metrics nobody exports: {sorted(alerts - exported)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(base: str, promql: str) -> list[dict]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


@needs_prometheus
def test_real_prometheus_scrapes_the_retriever(retriever_service, serving_index_dir, rules_dir, tmp_path):
    _ask_retriever(retriever_service)
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "coderag.rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "coderag-retriever",
                "static_configs": [{"targets": [f"127.0.0.1:{retriever_service.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        result = []
        while time.monotonic() < deadline and not result:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                result = _query(base, 'coderag_index_size{job="coderag-retriever", service="retriever"}')
            if not result:
                time.sleep(0.5)
        assert result, (
            "Prometheus never scraped coderag_index_size:\n" + (tmp_path / "prometheus.log").read_text()[-2000:]
        )
        manifest = json.loads((serving_index_dir / "manifest.json").read_text())
        assert float(result[0]["value"][1]) == manifest["count"]
        assert float(_query(base, 'up{job="coderag-retriever"}')[0]["value"][1]) == 1.0
        answered = _query(base, 'sum(coderag_requests_total{service="retriever", code="200"})')
        assert answered and float(answered[0]["value"][1]) >= 1
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = [rule for group in rules for rule in group["rules"]]
        assert len(loaded) == 6 and all(rule["health"] in ("ok", "unknown") for rule in loaded), loaded
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

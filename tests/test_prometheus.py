"""Alert rules (promtool), the Grafana dashboard's layout and thresholds, and a real Prometheus server
scraping all three running services, on which every dashboard query and alert expression returns a series.

promtool and prometheus come from Debian's ``prometheus`` package (scripts/install-system.sh); the
tests that need them skip when they are absent (and fail under CI).
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
METRIC_NAME = re.compile(r"\b(coderag_[a-z0-9_]+|vllm:[a-z0-9_:]+)")
# vLLM's names are matched as vllm[:_]name (OpenMetrics output turns their colon into "_").
VLLM_SELECTOR = re.compile(r"vllm\[:_\]([a-z0-9_]+)")
ALERT_COMPARISON = re.compile(r"\s*(>|<|==|!=|>=|<=)\s*(-?[0-9.]+)\s*$")
DASHBOARD = MONITORING / "dashboards" / "coderag.json"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"

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


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for panel in dashboard()["panels"] for t in panel.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard()["templating"]["list"] if isinstance(v.get("query"), dict)]
    return queries


def alert_rules() -> list[dict]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"]]


def names_in(queries: list[str]) -> set[str]:
    names = {name for query in queries for name in METRIC_NAME.findall(query)}
    return names | {f"vllm:{name}" for query in queries for name in VLLM_SELECTOR.findall(query)}


@needs_promtool
def test_promtool_checks_rules(rules_dir):
    done = subprocess.run(
        ["promtool", "check", "rules", "coderag.rules.yaml"], cwd=rules_dir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


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
        "CodeRAGModelNotReady",
        "CodeRAGTargetDown",
    } <= alerts


@needs_promtool
def test_promtool_unit_test_fails_on_a_wrong_expectation(rules_dir):
    """The unit tests can fail: flip one expected label and promtool must say so."""
    path = rules_dir / "prometheusrule.test.yaml"
    path.write_text(path.read_text().replace("namespace: coderag-dev", "namespace: coderag-prod", 1))
    done = subprocess.run(["promtool", "test", "rules", path.name], cwd=rules_dir, capture_output=True, text=True)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_metric_names_match_the_serving_contract():
    from serving import metrics

    used = names_in(dashboard_queries()) | names_in([r["expr"] for r in alert_rules()])
    suffixes = ("_bucket", "_count", "_sum")
    bases = {next((n.removesuffix(s) for s in suffixes if n.endswith(s)), n) for n in used}
    known = set(metrics.ALL_METRIC_NAMES) | set(metrics.VLLM_METRIC_NAMES)
    assert bases <= known, bases - known


def test_every_alert_groups_by_namespace_and_links_its_runbook():
    anchors = {line[3:].strip().lower() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}
    for rule in alert_rules():
        assert "by (namespace" in " ".join(rule["expr"].split()), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://github.com/coderag/coderag/blob/main/docs/runbooks.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"docs/runbooks.md has no section for {rule['alert']}"


def test_monitoring_is_deployed_once_not_per_overlay():
    for env in ("dev", "staging", "prod"):
        kustomization = yaml.safe_load((REPO_ROOT / "manifests" / "overlays" / env / "kustomization.yaml").read_text())
        assert not any("monitoring" in r for r in kustomization["resources"]), env
    assert yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["namespace"] == "monitoring"
    selector = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())["spec"]["namespaceSelector"]
    assert selector == {"matchNames": ["coderag-dev", "coderag-staging", "coderag-prod"]}


def test_dashboard_layout_is_a_valid_24_column_grid():
    board = dashboard()
    assert board["uid"] == "coderag-serving"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "service"} <= variables
    titles = " ".join(p["title"] for p in panels)
    for wanted in ("vLLM", "Pod CPU", "Pod memory", "Pod restarts"):
        assert wanted in titles


def test_dashboard_thresholds_equal_the_alert_thresholds():
    thresholds = {}
    for rule in alert_rules():
        comparison = ALERT_COMPARISON.search(rule["expr"])
        thresholds[rule["alert"]] = float(comparison.group(2))
    linked = {}
    for panel in dashboard()["panels"]:
        match = re.search(r"the (CodeRAG\w+) alert's threshold", panel.get("description", ""))
        if match is None:
            continue
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, thresholds[match.group(1)]], panel["title"]
        linked[match.group(1)] = panel["title"]
    assert set(linked) == set(thresholds), f"alerts without a dashboard threshold: {set(thresholds) - set(linked)}"


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


def _ask_rag(service) -> None:
    reply = httpx.post(f"{service.url}/v1/models/{service.model_name}:predict", timeout=180,
                       json={"question": "How many patients are in each ward?", "k": 2, "repair": False,
                             "sql_context": "CREATE TABLE patients (id INT, ward TEXT); INSERT INTO patients VALUES (1, 'a');"})
    assert reply.status_code == 200, reply.text


def test_probes_and_scrapes_are_not_counted_as_requests(retriever_service):
    for path in ("/metrics", "/v2/health/ready", "/v2/health/live", f"/v1/models/{retriever_service.model_name}"):
        assert httpx.get(retriever_service.url + path, timeout=10).status_code == 200
    routes = {key for key in _scrape_routes(retriever_service.url)}
    assert not routes & {"metrics", "health"}, routes


def _scrape_routes(url: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {s.labels["route"] for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "coderag_requests_total"}


def test_every_dashboard_and_alert_metric_is_exported_by_the_running_services(retriever_service, rag_service,
                                                                              generator_service):
    _ask_retriever(retriever_service)
    _ask_rag(rag_service)
    exported = set().union(*(_scrape_names(s.url) for s in (retriever_service, generator_service, rag_service)))
    used = names_in(dashboard_queries())
    assert len(used) >= 15
    assert used <= exported, f"dashboard queries metrics nobody exports: {sorted(used - exported)}"
    alerts = names_in([r["expr"] for r in alert_rules()])
    assert alerts <= exported, f"alert rules query metrics nobody exports: {sorted(alerts - exported)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(base: str, promql: str) -> list[dict]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert reply["status"] == "success", (promql, reply)
    return reply["data"]["result"]


def _as_query(expr: str) -> str:
    """A dashboard/alert expression as a plain instant query: variables filled, alert comparison dropped."""
    expr = ALERT_COMPARISON.sub("", expr.strip())
    expr = expr.replace("$__rate_interval", "15s").replace("$namespace", ".*").replace("$service", ".*")
    label_values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr)
    if label_values:  # a template variable's query: the series that would list its values
        expr = f"group by ({label_values.group(2)}) ({label_values.group(1)})"
    return expr


@needs_prometheus
def test_real_prometheus_answers_every_dashboard_query_and_alert_expression(
        retriever_service, generator_service, rag_service, rules_dir, tmp_path):
    _ask_retriever(retriever_service)
    _ask_rag(rag_service)
    port = _free_port()
    services = {"retriever": retriever_service, "generator": generator_service, "rag": rag_service}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "coderag.rules.yaml")],
        "scrape_configs": [
            {
                "job_name": f"coderag-{component}",
                # What the PodMonitor gives every series in the cluster: namespace, component, pod.
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"],
                                    "labels": {"namespace": "coderag-test", "component": component,
                                               "pod": f"{component}-0"}}],
            }
            for component, service in services.items()
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
        up = []
        while time.monotonic() < deadline and len(up) < 3:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            # While it starts, Prometheus answers "not ready" as plain text (a 503): keep waiting.
            with contextlib.suppress(httpx.HTTPError, ValueError, AssertionError, KeyError):
                up = [r for r in _query(base, 'up{namespace="coderag-test"} == 1')]
            time.sleep(0.5)
        assert len(up) == 3, "Prometheus never scraped all three:\n" + (tmp_path / "prometheus.log").read_text()[-2000:]
        # rate() needs two samples after the traffic above: let a few scrapes pass, then ask again.
        _ask_retriever(retriever_service)
        _ask_rag(rag_service)
        time.sleep(4)
        empty = [expr for expr in dashboard_queries() + [r["expr"] for r in alert_rules()]
                 if not _query(base, _as_query(expr))]
        assert not empty, "queries that return no series:\n" + "\n".join(empty)
        index_size = _query(base, 'coderag_index_size{namespace="coderag-test", service="retriever"}')
        assert float(index_size[0]["value"][1]) == 240
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = [rule for group in rules for rule in group["rules"]]
        assert len(loaded) == 8 and all(rule["health"] in ("ok", "unknown") for rule in loaded), loaded
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

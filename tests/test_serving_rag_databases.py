"""The RAG endpoint answering on a database registered by name (PostgreSQL, MariaDB), URLs from the env."""

from __future__ import annotations

import json

import httpx
from serving_harness import ScriptedChatServer, start_service
from test_databases import shop  # noqa: F401 - the fixture: a fresh schema on each server

MODEL = "coderag-rag"


def _post(service, body) -> tuple[int, dict]:
    response = httpx.post(f"{service.url}/v1/models/{MODEL}:predict", json=body, timeout=120)
    return response.status_code, response.json()


def test_questions_run_read_only_on_a_registered_database(shop, serving_index_dir, tmp_path):  # noqa: F811
    kind, url, _ = shop
    llm = ScriptedChatServer([
        "```sql\nSELECT name, city FROM customers ORDER BY id\n```",
        "```sql\nDELETE FROM customers\n```",
    ])
    service = start_service(
        "rag",
        ["--index_dir", str(serving_index_dir), "--llm_base_url", llm.url, "--llm_model", "scripted"],
        tmp_path, model_name=MODEL, env={"CODERAG_RAG_DATABASES": json.dumps({"shop": url})},
    )
    try:
        status, answer = _post(service, {"question": "Where do our customers live?", "database": "shop"})
        assert status == 200 and answer["rows"] == [["ann", "oslo"], ["bob", "rome"]]
        assert answer["guard"]["statement_type"] == "SELECT" and answer["execution_error"] is None
        label = "PostgreSQL" if kind == "postgresql" else "MariaDB"
        assert llm.requests[0]["messages"][0]["content"].startswith(f"You write {label} queries.")

        status, refused = _post(service, {"question": "Remove every customer.", "database": "shop", "repair": False})
        assert status == 200 and refused["guard"]["allowed"] is False and refused["rows"] is None

        status, error = _post(service, {"question": "Which customers?", "database": "crm"})
        assert status == 400
        assert error["error"] == "database 'crm' is not registered here: use one of shop"
        status, error = _post(service, {"question": "Which customers?", "database": "shop",
                                        "sql_context": "CREATE TABLE t (a INT);"})
        assert status == 400 and error["error"] == "send sql_context or database, not both"
        # The URL (credentials, hosts) is never printed: the settings line masks it.
        log = service.log_tail(400)
        assert '"databases": "***"' in log and url not in log
        assert not llm.replies
    finally:
        assert service.stop() == 0
        llm.close()

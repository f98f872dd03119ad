"""Request models of the CodeRAG services: strict pydantic models, unknown fields refused, shown in OpenAPI.

Each service validates its bodies with these models (``extra="forbid"``, strict types: ``"3"`` is not
an integer, ``1`` is not ``true``) and turns the first problem into one sentence for the HTTP 400 body
(:func:`first_problem`). The same models are published in the server's ``/openapi.json`` (and its
``/docs`` page with ``--enable_docs_url true``) on KServe's inference routes by :func:`document_routes`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RagRequest(_Strict):
    """``POST /v1/models/{name}:predict`` of the RAG endpoint.

    Result rows are JSON values; a BLOB value is returned as text ``"\\x"`` followed by its bytes in
    lower-case hex (e.g. ``x'ff00'`` -> ``"\\xff00"``, PostgreSQL's ``bytea`` spelling).
    """

    question: str = Field(description="the question, in words", examples=["How many orders were placed in 2023?"])
    k: int | None = Field(None, ge=1, description="schema snippets to retrieve (1 to the server's max_k)")
    sql_context: str | None = Field(
        None, description="CREATE TABLE / INSERT statements the SQL runs on, in a sandbox (when the server "
                          "allows client contexts); exclusive with database"
    )
    database: str | None = Field(None, description="name of a database registered on the server to run the SQL on")
    repair: bool | None = Field(None, description="ask the LLM once to repair SQL that fails to execute")
    n_candidates: int | None = Field(
        None, ge=1, description="SQL candidates sampled and voted on by their execution results (1 to the "
                                "server's max_n_candidates; 1: one greedy reply)")
    examples: int | None = Field(
        None, ge=0, description="question -> SQL examples of the training split retrieved into the prompt "
                                "(0 to 16; needs an index with examples)")


class RetrieverInstance(_Strict):
    """One query of a v1 retriever request."""

    query: str = Field(description="the question", examples=["How many orders were placed in 2023?"])
    k: int | None = Field(None, ge=1, description="snippets to return (1 to the server's max_k)")


class RetrieverV1Request(_Strict):
    """``POST /v1/models/{name}:predict`` of the retriever: ``instances`` are queries or question strings."""

    instances: list[RetrieverInstance | str] = Field(description="the queries")


class V2Input(_Strict):
    """One input tensor of a KServe v2 inference request (JSON form)."""

    name: str
    shape: list[int] = Field(description="dimensions; their product must equal the number of data elements")
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2Output(_Strict):
    """A requested output of a KServe v2 inference request."""

    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(_Strict):
    """``POST /v2/models/{name}/infer``: KServe's v2 protocol, top level and inputs checked strictly."""

    id: str | None = None
    # KServe's own InferenceRESTClient sends the model's name in the body; the route's path names it too.
    model_name: str | None = None
    model_version: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Input]
    outputs: list[V2Output] | None = None


def first_problem(exc: ValidationError) -> str:
    """The first error of ``exc`` as ``"<field path>: <what is wrong>"`` (unknown fields named together)."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        names = ", ".join(".".join(str(p) for p in e["loc"]) for e in extra)
        return f"unknown field(s) {names}"
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "str"))))
    if "RetrieverInstance" in where or ".str" in where:  # union arms: keep the index, drop the arm's name
        where = where.split(".RetrieverInstance")[0].split(".str")[0]
    return f"{where or 'body'}: {err['msg']}"


def v2_shape_problem(request: V2InferenceRequest) -> str | None:
    """Why an input's ``shape`` does not match its data (or is negative); ``None`` when every input fits."""
    for tensor in request.inputs:
        if any(d < 0 for d in tensor.shape):
            return f"input '{tensor.name}': shape {tensor.shape} has a negative dimension"
        if tensor.data is None:
            continue  # binary extension: checked against the binary part
        count = _count(tensor.data)
        if math.prod(tensor.shape) != count:
            return (f"input '{tensor.name}': shape {tensor.shape} holds {math.prod(tensor.shape)} elements "
                    f"but data has {count}")
    return None


def _count(data: list) -> int:
    total, stack = 0, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            total += 1
    return total


_V1_PREDICT = "/v1/models/{model_name}:predict"
_V2_INFER = "/v2/models/{model_name}/infer"


def document_routes(app, models: dict[str, type[BaseModel]]) -> None:
    """Publish ``models`` (route path -> request model) as the request bodies of KServe's routes in OpenAPI.

    KServe's v1 route reads the raw body, so FastAPI cannot see the model; the schema is added to the
    generated document instead (once, when it is first built).
    """
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in models.items():
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
            operation = schema.get("paths", {}).get(path, {}).get("post")
            if operation is None:
                continue
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
            operation["description"] = (model.__doc__ or "").strip()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


V1_PREDICT_PATH = _V1_PREDICT
V2_INFER_PATH = _V2_INFER

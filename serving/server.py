"""Running CodeRAG models in ``kserve.ModelServer``: readiness, background loading, error handling."""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Callable, Sequence

import kserve
from kserve.errors import ModelNotReady

from coderag.errors import CodeRAGError, ConfigError
from serving import metrics
from serving.errors import install_error_handlers, scrub

log = logging.getLogger(__name__)


class ServiceModel(kserve.Model):
    """A ``kserve.Model`` that is ready only after :meth:`load` succeeded.

    KServe's ``Model.start()`` marks a model ready unconditionally; here readiness means the artifacts
    are loaded and consistent. A load that failed keeps the model unready and its reason is returned
    with every 503, so a caller sees why (e.g. the index directory is missing).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load_error: str | None = None

    def start(self) -> None:
        """Deliberately does not set ``ready`` (see the class docstring)."""

    def validate(self, payload):
        """Decode a JSON body KServe left as bytes; each model then checks its own fields.

        KServe decodes a v1 body only when Content-Type is exactly ``application/json``; clients that
        send ``application/json; charset=utf-8`` (many do) would otherwise get raw bytes through. The
        request middleware has already refused bodies that are not UTF-8 JSON with a 400.
        """
        if isinstance(payload, (bytes, bytearray)):
            try:
                return json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return payload  # the model answers 400: the body must be a JSON object
        return payload

    async def healthy(self) -> bool:
        if self.load_error is not None:
            raise ModelNotReady(self.name, self.load_error)
        return self.ready

    def load_or_record(self) -> bool:
        """:meth:`load`, keeping its failure as ``load_error`` (returned with every 503) instead of raising.

        A :class:`CodeRAGError` already reads as a sentence; anything else (a library's own error) is
        logged with its traceback and kept as one line, so the service never sits unready without a reason.
        """
        try:
            return self.load()
        except CodeRAGError as exc:
            self.load_error = scrub(str(exc))
            log.error("model %s failed to load: %s", self.name, exc)
        except Exception as exc:  # noqa: BLE001 - a background load must record every failure
            first = scrub((str(exc).strip().splitlines() or [""])[0][:300])
            self.load_error = f"loading failed unexpectedly ({type(exc).__name__}: {first}): see the server log"
            log.exception("model %s failed to load", self.name)
        return False


def server_options(args: argparse.Namespace) -> dict:
    """``kserve.ModelServer`` keyword arguments from a namespace parsed by ``kserve.model_server.parser``."""
    return {
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "workers": args.workers,
        "max_threads": args.max_threads,
        "max_asyncio_workers": args.max_asyncio_workers,
        "enable_grpc": args.enable_grpc,
        "enable_docs_url": args.enable_docs_url,
        "enable_latency_logging": args.enable_latency_logging,
        "access_log_format": args.access_log_format,
        "event_loop": args.event_loop,
        "timeout_keep_alive": args.timeout_keep_alive,
    }


def add_readiness_route(app, models: Sequence[ServiceModel]) -> None:
    """``GET /v2/health/ready``: 200 only when every model is loaded; 503 naming the ones that are not.

    KServe's own route answers ready as soon as the server runs, even while its only model failed to
    load; registered first, this route takes precedence over it.
    """
    from fastapi.responses import JSONResponse

    async def ready():
        waiting = {m.name: m.load_error or "still loading" for m in models if not m.ready or m.load_error}
        if waiting:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(waiting.items()))
            return JSONResponse(status_code=503, content={"ready": False, "error": f"not ready: {reasons}"})
        return {"ready": True}

    app.add_api_route("/v2/health/ready", ready, methods=["GET"], response_model=None, include_in_schema=False)


def _load_and_publish(models: Sequence[ServiceModel], service: str) -> None:
    for model in models:
        ready = model.load_or_record()
        metrics.model_ready.labels(service=service, model=model.name).set(1 if ready else 0)


def run_model_server(
    models: Sequence[ServiceModel],
    *,
    service: str,
    args: argparse.Namespace,
    background_load: bool = False,
    add_routes: Callable[[object, kserve.ModelServer], None] | None = None,
) -> None:
    """Serve ``models`` until SIGINT/SIGTERM.

    By default every model is loaded first and a load error propagates (the CLI prints it and exits
    non-zero). With ``background_load`` the server answers at once (503 with the reason until a model
    is ready), as Kubernetes readiness probes expect. ``add_routes(app, server)`` may add extra routes.
    """
    from kserve.model_server import app

    if args.workers > 1:
        # KServe's multi-process mode re-imports its app in fresh processes, without these models,
        # routes and error handlers: scale with replicas instead.
        raise ConfigError(
            f"--workers {args.workers} is not supported by the {service} service: run more replicas instead"
        )
    limits = models[0].settings if models and hasattr(models[0], "settings") else None
    install_error_handlers(app, service, max_body_bytes=getattr(limits, "max_body_bytes", 1_048_576),
                           body_timeout_s=getattr(limits, "body_timeout_s", 10.0))
    server = kserve.ModelServer(**server_options(args))
    add_readiness_route(app, models)
    if add_routes is not None:
        add_routes(app, server)
    for model in models:
        metrics.model_ready.labels(service=service, model=model.name).set(0)
    if background_load:
        for model in models:
            server.register_model(model)
        threading.Thread(target=_load_and_publish, args=(models, service), name="coderag-load", daemon=True).start()
        # Registered above; an empty list skips KServe's "at least one model is ready" start-up check.
        server.start([])
        return
    for model in models:
        model.load()
        metrics.model_ready.labels(service=service, model=model.name).set(1)
    server.start(list(models))

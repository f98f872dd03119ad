"""Command-line entry points of the three services (``coderag serve ...`` and ``python -m serving ...``).

Each service's parser is built on ``kserve.model_server.parser``, so ``--http_port``, ``--grpc_port``,
``--workers`` and ``--model_name`` mean what they mean in every KServe server; the service's own
settings become flags named like its fields (``--index_dir``, ``--max_k`` ...). A flag left out falls
back to the ``CODERAG_<SERVICE>_*`` environment variable, then to the default.
"""

from __future__ import annotations

import argparse
import logging

from coderag.config import add_settings_flags

log = logging.getLogger(__name__)

SERVICE_HELP = {
    "retriever": "serve the encoder + FAISS index (KServe v1/v2): question -> top-k schema snippets",
    "generator": "serve the local LLM on the OpenAI chat route /openai/v1/chat/completions",
    "rag": "serve question -> SQL: retrieve, prompt, generate, guard, optionally execute and repair",
}


def _settings_class(service: str):
    from serving.settings import GeneratorSettings, RagSettings, RetrieverSettings

    return {"retriever": RetrieverSettings, "generator": GeneratorSettings, "rag": RagSettings}[service]


def _default_model_name(service: str) -> str:
    from serving.settings import DEFAULT_GENERATOR_NAME, DEFAULT_RAG_NAME, DEFAULT_RETRIEVER_NAME

    return {"retriever": DEFAULT_RETRIEVER_NAME, "generator": DEFAULT_GENERATOR_NAME, "rag": DEFAULT_RAG_NAME}[service]


def build_service_parser(service: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The full parser of one service: KServe's server flags plus one flag per settings field."""
    from kserve.model_server import parser as kserve_parser

    settings_cls = _settings_class(service)
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[kserve_parser],
        # No prefixes: --databases must never silently mean --databases_file.
        allow_abbrev=False,
        description=SERVICE_HELP[service],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"Every CodeRAG flag may also be set as {settings_cls.model_config['env_prefix']}<FLAG> (upper case); "
               "the LLM key only as CODERAG_LLM_API_KEY / OPENAI_API_KEY or a file (--llm_api_key_file).",
    )
    add_settings_flags(parser.add_argument_group("CodeRAG settings"), settings_cls, style="kserve")
    # gRPC off unless asked for (--enable_grpc true): request validation, the JSON 4xx errors and the
    # request metrics sit on the REST app, and gRPC's ModelInfer would also start a second, blocking
    # load() of a model still loading in the background. The manifests expose only the HTTP port.
    parser.set_defaults(model_name=_default_model_name(service), service=service, func=run_service,
                        enable_grpc=False)
    return parser


def settings_from_args(service: str, args: argparse.Namespace):
    """The service's settings from parsed flags; an invalid value raises :class:`ConfigError` in one line."""
    return _settings_class(service).from_args(args, service)


def run_service(args: argparse.Namespace) -> int:
    """Build the service's model(s) from ``args`` and serve until interrupted."""
    from serving import schemas
    from serving.server import run_model_server

    service = args.service
    settings = settings_from_args(service, args)
    if service == "retriever":
        from serving.retriever import RetrieverModel

        model = RetrieverModel(args.model_name, settings)
        documented = {schemas.V1_PREDICT_PATH: schemas.RetrieverV1Request,
                      schemas.V2_INFER_PATH: schemas.V2InferenceRequest}
        run_model_server([model], service=service, args=args, background_load=settings.background_load,
                         add_routes=lambda app, server: schemas.document_routes(app, documented))
    elif service == "generator":
        from serving.generator import GeneratorModel, add_openai_routes

        model = GeneratorModel(args.model_name, settings)
        run_model_server(
            [model], service=service, args=args, background_load=settings.background_load, add_routes=add_openai_routes
        )
    else:
        from serving.rag import RagModel

        settings.check_retrieval_source()
        model = RagModel(args.model_name, settings)
        run_model_server([model], service=service, args=args, background_load=settings.background_load,
                         add_routes=lambda app, server: schemas.document_routes(
                             app, {schemas.V1_PREDICT_PATH: schemas.RagRequest}))
    return 0


class LazyServiceParser(argparse.ArgumentParser):
    """A sub-parser that imports KServe only when its service is actually chosen.

    ``coderag --help`` and every other subcommand stay fast; ``coderag serve retriever ...`` parses
    with :func:`build_service_parser`.
    """

    def __init__(self, *args, service: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.service = service

    def parse_known_args(self, args=None, namespace=None):
        if self.service is None:
            return super().parse_known_args(args, namespace)
        return build_service_parser(self.service, prog=self.prog).parse_known_args(args, namespace)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving {retriever,generator,rag} [flags]``."""
    import sys

    from coderag.errors import CodeRAGError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SERVICE_HELP:
        print(f"usage: python -m serving {{{','.join(SERVICE_HELP)}}} [flags] (--help for flags)", file=sys.stderr)
        return 2
    args = build_service_parser(argv[0], prog=f"python -m serving {argv[0]}").parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return run_service(args)
    except CodeRAGError as exc:
        print(f"coderag serve {argv[0]}: error: {exc}", file=sys.stderr)
        return 2

"""``coderag serve retriever|generator|rag``: run a CodeRAG service in ``kserve.ModelServer``.

The flags of each service are KServe's own (``--http_port``, ``--grpc_port``, ``--workers``,
``--model_name`` ...) plus the service's settings; KServe is imported only when a service is chosen.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from serving.entrypoints import SERVICE_HELP, LazyServiceParser

    serve = subparsers.add_parser(
        "serve",
        help="run the retriever, generator or question->SQL service with KServe's ModelServer",
        description="Run a CodeRAG service locally or in a container; `coderag serve SERVICE --help` lists its flags.",
    )
    services = serve.add_subparsers(dest="service", metavar="SERVICE", required=True, parser_class=LazyServiceParser)
    for name, text in SERVICE_HELP.items():
        services.add_parser(name, help=text, description=text, add_help=False, service=name)

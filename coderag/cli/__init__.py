"""The ``coderag`` command line: one subcommand per stage.

Each area registers its subcommands from its own ``cli_<area>`` module; this module wires them and
turns :class:`~coderag.errors.CodeRAGError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from coderag.errors import CodeRAGError

# Modules that expose ``register(subparsers)``; each adds its own subcommands.
_AREAS = (
    "coderag.cli.corpus",
    "coderag.cli.index",
    "coderag.cli.run",
    "coderag.cli.evaluate",
    "coderag.cli.training",
    "coderag.cli.pipeline",
    "coderag.cli.serve",
    "coderag.cli.promote",
    "coderag.cli.release",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coderag",
        description=(
            "CodeRAG: retrieval-augmented Text-to-SQL. Build a corpus, embed and index its schemas, "
            "retrieve schemas for a question, generate SQL with an LLM, and score it; run the whole "
            "thing as a Kubeflow pipeline and serve it with KServe."
        ),
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _AREAS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Quiet by default, but a server logs its start-up and access lines at INFO (as in the manifests).
    base = logging.INFO if args.command == "serve" else logging.WARNING
    level = base - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except CodeRAGError as exc:
        print(f"coderag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coderag: interrupted", file=sys.stderr)
        return 130



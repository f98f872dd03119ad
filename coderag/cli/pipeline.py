"""``coderag pipeline compile | run --local | submit``: the Kubeflow pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from coderag.config import PIPELINE_PARAMETERS, PipelineSettings, add_settings_flags
from coderag.errors import ConfigError
from coderag.evaluation.report import sql_verdict_label

SUMMARY_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "ex", "em", "em_semantic")
SUMMARY_COUNTS = ("retrieval_queries", "n_eval", "parse_failures", "guard_refusals")


def _add_parameter_flags(p: argparse.ArgumentParser) -> None:
    add_settings_flags(p.add_argument_group("pipeline parameters"), PipelineSettings, PIPELINE_PARAMETERS)


def _cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.run import DEFAULT_PACKAGE, compile_pipeline

    s = PipelineSettings.from_args(args, "pipeline-compile")
    path = compile_pipeline(args.out or DEFAULT_PACKAGE, image=s.image)
    print(f"compiled pipeline: {path}")
    return 0


def render_summary(result: dict[str, Any]) -> str:
    """The evaluation table, the gate's checks and the outcome of a local run."""
    from coderag.evaluation.report import format_table

    lines = []
    metrics = result.get("metrics") or {}
    if metrics:
        ordered = {name: metrics[name] for name in SUMMARY_METRICS if name in metrics}
        ordered.update({name: value for name, value in metrics.items()
                        if name.startswith(("ex_", "recall@5_")) and isinstance(value, float)})
        ordered.update({name: int(metrics[name]) for name in metrics
                        if name in SUMMARY_COUNTS or (name.startswith("n_") and name != "n_eval")})
        lines += ["Evaluation: retrieval over the whole index (held-out domains); EX/EM with retrieved schemas on "
                  f"n={int(metrics.get('n_eval', 0))} questions (held-out synthetic + benchmark), test-suite EX",
                  format_table(ordered)]
    gate = result.get("gate") or {}
    for check in gate.get("checks", []):
        lines.append(f"  gate: {check}")
    status = result["status"]
    if status == "deployed":
        release = result.get("release") or {}
        lines.append(f"Outcome: DEPLOYED release {release.get('release_id', '?')} -> {release.get('model_dir', '')}")
    elif status == "skipped":
        lines.append("Outcome: deploy SKIPPED by the quality gate: " + "; ".join(result["reasons"]))
    else:
        lines.append("Outcome: run FAILED before deploy: " + "; ".join(result["reasons"]))
    return "\n".join(lines)


def _answer_sample(s: PipelineSettings, release: dict[str, Any]) -> str:
    """Answer the sample question with the deployed (gated) encoder and index."""
    from coderag.generation.answer import answer_question
    from coderag.generation.llm import make_generator
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex

    index = SchemaIndex.load(release["index_dir"])
    encoder_model = load_encoder(release["model_dir"])
    answer = answer_question(s.question, index=index, encoder_model=encoder_model,
                             generator=make_generator(s), k=s.k, max_tokens=s.max_new_tokens,
                             n_candidates=s.n_candidates, temperature=s.sampling_temperature,
                             examples=s.examples if index.examples is not None else 0)
    lines = [f"Question: {answer.question}"]
    lines += [f"  schema #{h['rank']} score={h['score']:.3f} domain={h['domain']}" for h in answer.snippets]
    verdict = sql_verdict_label(answer.allowed, answer.guard_reason)
    lines.append(f"SQL ({verdict}):\n  " + (answer.sql or "(no SQL in the reply)").replace("\n", "\n  "))
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from pipelines.run import default_workdir, run_local

    if not args.local:
        raise ConfigError("`coderag pipeline run` runs here only with --local; use `coderag pipeline submit "
                          "--host URL` to run on a Kubeflow cluster")
    s = PipelineSettings.from_args(args, "pipeline-run")
    workdir = (s.workdir or default_workdir()).absolute()
    print(f"local pipeline run: artifacts and logs in {workdir}", file=sys.stderr)
    started = time.perf_counter()
    result = run_local(s.local_arguments(), workdir, verbose=args.verbose > 0).to_dict()
    print(render_summary(result))
    if result["status"] == "deployed" and not args.no_sample:
        print(_answer_sample(s, result["release"]))
    print(f"outcome: {workdir / 'outcome.json'}   log: {workdir / 'pipeline.log'}   "
          f"wall time: {time.perf_counter() - started:.0f}s")
    return 1 if result["status"] == "failed" else 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.run import submit

    s = PipelineSettings.from_args(args, "pipeline-submit")
    if not s.host:
        raise ConfigError("submit needs --host URL (or CODERAG_PIPELINE_HOST): the KFP API endpoint")
    explicit = s.pipeline_arguments([name for name in PIPELINE_PARAMETERS if name in s.model_fields_set])
    run = submit(s.host, s.experiment, s.run_name, explicit, package_path=args.package, namespace=s.namespace)
    print(json.dumps(run))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``coderag pipeline`` with its compile, run and submit subcommands."""
    pipeline = sub.add_parser(
        "pipeline", help="the Kubeflow pipeline: compile it, run it locally, or submit it to a cluster",
        description="synthesize -> fine-tune -> build index -> evaluate -> quality gate -> deploy/promote, "
                    "as a KFP v2 pipeline. Compile it to YAML, run the same graph here with kfp.local "
                    "(no Docker), or submit it to a KFP API.")
    actions = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    p = actions.add_parser("compile", help="compile the pipeline to YAML (default pipelines/coderag_pipeline.yaml)")
    p.add_argument("--out", type=Path, help="output YAML path")
    add_settings_flags(p, PipelineSettings, ("image",))
    p.set_defaults(func=_cmd_compile)

    p = actions.add_parser(
        "run", help="run the whole pipeline here (--local), gate it, deploy locally, answer a question",
        description="Run every step with kfp.local.SubprocessRunner in this Python (no Docker, no cluster). "
                    "A release that passes the gate is published to runs/deployed (current.json), the "
                    "baseline the next run is gated against. Prints the evaluation table and answers "
                    "--question with the deployed encoder and index.")
    p.add_argument("--local", action="store_true", help="run here with the kfp local runner (required)")
    add_settings_flags(p, PipelineSettings, ("workdir", "question", "llm_api_key_file"))
    p.add_argument("--no-sample", action="store_true", help="skip answering the sample question")
    _add_parameter_flags(p)
    p.set_defaults(func=_cmd_run)

    p = actions.add_parser(
        "submit", help="submit a run of the compiled pipeline to a KFP API",
        description="Create a run of pipelines/coderag_pipeline.yaml on the KFP API at --host with kfp.Client. "
                    "Only parameters you set are sent; the rest keep the compiled defaults.")
    add_settings_flags(p, PipelineSettings, ("host", "experiment", "run_name", "namespace"))
    p.add_argument("--package", type=Path, help="compiled pipeline YAML (default pipelines/coderag_pipeline.yaml)")
    _add_parameter_flags(p)
    p.set_defaults(func=_cmd_submit)

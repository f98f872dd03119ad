"""``coderag run`` (the main job) and ``coderag ask`` (answer one question from a built index)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.job_settings import MainJobSettings, make_job_generator
from coderag.report_table import sql_verdict_label


def _add_llm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm-backend", choices=["local", "openai"], help="SQL generator backend (default local)")
    p.add_argument("--llm-model", help="local model path/hub name, or served model name for openai")
    p.add_argument("--llm-base-url", help="OpenAI-compatible base URL (vLLM: http://host/v1; KServe: http://host/openai/v1)")
    p.add_argument("--max-new-tokens", type=int, help="generation budget per question (default 128)")
    p.add_argument("-k", type=int, help="schemas retrieved per question (default 3)")


def _cmd_run(args: argparse.Namespace) -> int:
    from coderag.report_table import render_main_report
    from coderag.workflow import run_main_job

    s = MainJobSettings.from_args(args, "main-job")
    report = run_main_job(corpus_source=s.corpus, n_records=s.n_records, encoder=s.encoder, out_dir=s.out_dir,
                          k=s.k, n_eval=s.n_eval, question=s.question, generator_factory=lambda: make_job_generator(s),
                          seed=s.seed, max_new_tokens=s.max_new_tokens)
    print(render_main_report(report.to_dict()))
    print(f"index: {s.out_dir / 'index'}   results: {s.out_dir / 'results.json'}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from coderag.answer import answer_question
    from coderag.encoder import load_encoder
    from coderag.index import SchemaIndex
    from coderag.retrieval import validate_question

    s = MainJobSettings.from_args(args, "ask", question=args.question_text)
    question = validate_question(s.question)
    index = SchemaIndex.load(Path(args.index))
    encoder_model = load_encoder(args.encoder_dir or index.encoder_name)
    index.check_compatible(encoder_model)
    answer = answer_question(question, index=index, encoder_model=encoder_model,
                             generator=make_job_generator(s), k=s.k, min_score=s.min_score,
                             max_tokens=s.max_new_tokens)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    else:
        for hit in answer.snippets:
            print(f"[{hit['rank']}] score={hit['score']:.3f} domain={hit['domain']}")
        verdict = sql_verdict_label(answer.allowed, answer.guard_reason)
        print(f"SQL ({verdict}):\n{answer.sql or '(no SQL in the reply)'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="main job: corpus -> index -> retrieval + EM/EX evaluation -> answer a question",
        description="Build the corpus (offline generator by default), embed and index its schemas, score "
                    "retrieval (Recall@k, MRR, nDCG@10) and SQL generation (EM, EX; with and without "
                    "retrieval), answer a sample question, and write results.json.")
    run.add_argument("--corpus", help="builtin (default), a parquet/json/jsonl path, or a hub dataset name")
    run.add_argument("--n-records", type=int, help="records to use (default: 2000 for builtin)")
    run.add_argument("--encoder", help="sentence-transformers path or hub name (default offline MiniLM)")
    run.add_argument("--out-dir", type=Path, help="output directory (default runs/main)")
    run.add_argument("--n-eval", type=int, help="questions scored for EM/EX (default 12)")
    run.add_argument("--question", help="sample question answered at the end")
    run.add_argument("--seed", type=int)
    _add_llm_flags(run)
    run.set_defaults(func=_cmd_run)

    ask = sub.add_parser("ask", help="answer one question with SQL from a built index",
                         description="Retrieve schemas from INDEX for the question, generate SQL, guard it.")
    ask.add_argument("question_text", metavar="QUESTION")
    ask.add_argument("--index", required=True, help="index directory (from `coderag run` or `coderag index build`)")
    ask.add_argument("--encoder-dir", help="encoder for the question (default: the index manifest's)")
    ask.add_argument("--min-score", type=float, help="drop schemas scoring below this")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    _add_llm_flags(ask)
    ask.set_defaults(func=_cmd_ask)

"""``coderag run`` (the main job) and ``coderag ask`` (answer one question from a built index)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coderag.config import JobSettings, add_settings_flags
from coderag.errors import ConfigError
from coderag.evaluation.report import sql_verdict_label
from coderag.generation.llm import make_generator

LLM_FLAGS = ("llm_backend", "llm_base_url", "llm_model", "llm_api_key_file", "llm_timeout_s", "max_new_tokens", "k",
             "n_candidates", "sampling_temperature", "examples")


def _cmd_run(args: argparse.Namespace) -> int:
    from coderag.evaluation.report import render_main_report
    from coderag.pipeline.main_job import run_main_job

    s = JobSettings.from_args(args, "main-job")
    report = run_main_job(corpus_source=s.corpus, n_records=s.n_records, encoder=s.encoder, out_dir=s.out_dir,
                          k=s.k, n_eval=s.n_eval, question=s.question, generator_factory=lambda: make_generator(s),
                          seed=s.seed, max_new_tokens=s.max_new_tokens, n_candidates=s.n_candidates,
                          sampling_temperature=s.sampling_temperature, examples=s.examples,
                          eval_fraction=s.eval_fraction)
    print(render_main_report(report.to_dict()))
    print(f"index: {s.out_dir / 'index'}   results: {s.out_dir / 'results.json'}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from coderag.generation.answer import answer_question
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.search import validate_question

    s = JobSettings.from_args(args, "ask")
    if (args.question_text is None) == (args.questions_file is None):
        raise ConfigError("ask needs one QUESTION or --questions-file FILE (one question per line), not both")
    if args.questions_file is not None:
        try:
            lines = args.questions_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --questions-file {args.questions_file} ({exc})") from None
        questions = [validate_question(q) for q in lines if q.strip()]
        if not questions:
            raise ConfigError(f"--questions-file {args.questions_file} holds no questions: one per line")
    else:
        questions = [validate_question(args.question_text)]
    database = None
    if s.db is not None:
        from coderag.sql.databases import open_database

        database = open_database(s.db)
        database.check()  # an unreachable database or a missing file fails before any model loads
    elif s.transpile:
        raise ConfigError("--transpile needs --db URL: it rewrites SQL into that database's dialect")
    index = SchemaIndex.load(Path(args.index))
    if s.examples and index.examples is None:
        raise ConfigError(f"--examples {s.examples}: the index {args.index} holds no question -> SQL examples: "
                          "rebuild it with `coderag index build --examples K` or `coderag run --examples K`")
    encoder_model = load_encoder(s.encoder or index.encoder_name)
    index.check_compatible(encoder_model)
    generator = make_generator(s)
    answers = [answer_question(q, index=index, encoder_model=encoder_model, generator=generator, k=s.k,
                               min_score=s.min_score, max_tokens=s.max_new_tokens, database=database,
                               transpile=s.transpile, n_candidates=s.n_candidates,
                               temperature=s.sampling_temperature, examples=s.examples)
               for q in questions]
    if database is not None:
        database.close()
    if args.json:
        payload = [a.to_dict() for a in answers]
        print(json.dumps(payload if args.questions_file is not None else payload[0], indent=2, default=str))
        return 0
    for answer in answers:
        if len(answers) > 1:
            print(f"Q: {answer.question}")
        for hit in answer.snippets:
            print(f"[{hit['rank']}] score={hit['score']:.3f} domain={hit['domain']}")
        verdict = sql_verdict_label(answer.allowed, answer.guard_reason)
        if answer.vote is not None:
            print(f"vote: {answer.vote['votes']} of {answer.vote['n']} candidates share the chosen result "
                  f"({answer.vote['survivors']} ran)")
        print(f"SQL ({verdict}):\n{answer.sql or '(no SQL in the reply)'}")
        if answer.execution_error:
            print(f"execution failed{' after one repair' if answer.repaired else ''}: {answer.execution_error}")
        elif answer.rows is not None:
            print(format_rows(answer.rows))
    return 0


def format_rows(rows: list[list], limit: int = 20) -> str:
    """Up to ``limit`` result rows as tab-separated lines, then how many more there were."""
    lines = ["\t".join("NULL" if v is None else (v.hex() if isinstance(v, bytes) else str(v)) for v in row)
             for row in rows[:limit]]
    more = f"\n... {len(rows) - limit} more rows" if len(rows) > limit else ""
    return (f"rows ({len(rows)}):\n" + "\n".join(lines) + more) if rows else "rows (0)"


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="main job: corpus -> index -> retrieval + EM/EX evaluation -> answer a question",
        description="Build the corpus (offline generator by default), embed and index its schemas, score "
                    "retrieval (Recall@k, MRR, nDCG@10) and SQL generation (EM, EX; with and without "
                    "retrieval), answer a sample question, and write results.json.")
    add_settings_flags(run, JobSettings, ("corpus", "n_records", "encoder", "out_dir", "n_eval", "question", "seed",
                                          "eval_fraction", *LLM_FLAGS))
    run.set_defaults(func=_cmd_run)

    ask = sub.add_parser("ask", help="answer one question with SQL from a built index",
                         description="Retrieve schemas from INDEX for the question, generate SQL, guard it; with "
                                     "--db run it read-only on a database (a SQLite file or an SQLAlchemy URL: "
                                     "postgresql://..., mysql+pymysql://...; one repair on error) and print rows; "
                                     "the prompt and the guard use that database's dialect.")
    ask.add_argument("question_text", metavar="QUESTION", nargs="?", help="the question (or --questions-file)")
    ask.add_argument("--questions-file", type=Path, metavar="FILE", help="answer every line of FILE")
    ask.add_argument("--index", required=True, help="index directory (from `coderag run` or `coderag index build`)")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_settings_flags(ask, JobSettings, ("encoder", "min_score", "db", "transpile", *LLM_FLAGS))
    ask.set_defaults(func=_cmd_ask)

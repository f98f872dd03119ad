#!/usr/bin/env python3
"""Mutation check: do the tests notice when the code that decides safety and quality is broken on purpose?

Each mutant below is one named, deliberate breakage of one module (the guard, SQL execution, EX/EM,
retrieval metrics, the gate, promotion, the serving error mapping, the metrics). For each, this script
copies the checkout to a temporary folder, applies the breakage there (never to your files), runs the
tests that cover the module, and reports the mutant as **killed** (a test failed) or **survived** (every
test passed: a gap in the tests, or an equivalent mutant that should be removed from the list). A mutant
whose text no longer occurs in its module is **stale**: update the list when the code changes.

It is not part of the default test run (each mutant re-runs a test file). Usage::

    python3 scripts/mutation_check.py                 # every mutant; exit 1 when one survives or is stale
    python3 scripts/mutation_check.py --only gate     # mutants whose name contains "gate"
    python3 scripts/mutation_check.py --list          # the mutants (and any stale one), without running tests
    python3 scripts/mutation_check.py --json out.json # also write the results as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which must occur exactly once in ``path``) with ``new``; ``tests`` must notice."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


GUARD = ("tests/test_sql_guard.py",)
EXECUTION = ("tests/test_execution.py",)
EX = ("tests/test_execution_match.py",)
EM = ("tests/test_exact_match.py", "tests/test_report_table.py")
RANKING = ("tests/test_evaluation.py",)
GATE = ("tests/test_gate.py",)
PROMOTION = ("tests/test_promotion.py",)
COMPONENTS = ("tests/test_components.py",)
SERVING_ERRORS = ("tests/test_serving_errors.py",)
SERVING_RAG = ("tests/test_serving_rag.py",)
SERVING_HOSTILE = ("tests/test_serving_hostile.py",)

MUTANTS: list[Mutant] = [
    # --- the guard: only one read-only query may reach a database ------------------------------------------
    Mutant("guard-allows-data-modifying-ctes", "coderag/sql/guard.py",
           "exp.DML, exp.DDL, exp.Insert, exp.Update, exp.Delete, exp.Merge,", "exp.DDL, exp.Merge,", GUARD),
    Mutant("guard-allows-two-statements", "coderag/sql/guard.py", "if len(trees) > 1:", "if len(trees) > 2:", GUARD),
    Mutant("guard-allows-non-queries", "coderag/sql/guard.py", "if not isinstance(tree, exp.Query):", "if False:",
           GUARD),
    Mutant("guard-allows-select-into", "coderag/sql/guard.py",
           'if isinstance(node, exp.Select) and node.args.get("into") is not None:', "if False:", GUARD),
    Mutant("guard-allows-forbidden-functions", "coderag/sql/guard.py",
           "if name in FORBIDDEN_FUNCTIONS:\n                return node", "if False:\n                return node",
           GUARD),
    Mutant("guard-allows-empty-sql", "coderag/sql/guard.py",
           'GuardVerdict(False, "refused: there is no SQL to run."', 'GuardVerdict(True, "refused: there is no SQL to run."',
           GUARD),
    Mutant("guard-checks-only-the-top-node", "coderag/sql/guard.py", "for node in tree.walk():", "for node in [tree]:",
           GUARD),
    # --- SQL execution: read-only authorizer, deadline, row cap, read-only files -------------------------------
    Mutant("execution-authorizer-allows-writes", "coderag/sql/execution.py",
           "    if action not in _READ_ACTIONS or _calls_forbidden_function(action, arg2):",
           "    if _calls_forbidden_function(action, arg2):", EXECUTION),
    Mutant("execution-allows-forbidden-functions", "coderag/sql/execution.py",
           'return action == sqlite3.SQLITE_FUNCTION and str(arg2 or "").lower() in FORBIDDEN_FUNCTIONS',
           "return False", EXECUTION),
    Mutant("execution-has-no-deadline", "coderag/sql/execution.py",
           "conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)", "pass", EXECUTION),
    Mutant("execution-row-cap-off-by-one", "coderag/sql/execution.py", "if len(rows) > max_rows:",
           "if len(rows) > max_rows + 1:", EXECUTION),
    Mutant("execution-opens-files-writable", "coderag/sql/execution.py", "?mode=ro", "?mode=rw", EXECUTION),
    Mutant("execution-timeout-is-a-plain-error", "coderag/sql/execution.py", "raise QueryTimeout(",
           "raise SqlExecutionError(", EXECUTION),
    # --- execution accuracy ------------------------------------------------------------------------------------
    Mutant("ex-ignores-order-by", "coderag/evaluation/execution_match.py", "    if order_matters:\n",
           "    if False:\n", EX),
    Mutant("ex-empty-results-differ", "coderag/evaluation/execution_match.py",
           "if not gold and not pred:\n        return True", "if not gold and not pred:\n        return False", EX),
    Mutant("ex-row-count-ignored", "coderag/evaluation/execution_match.py",
           "if len(gold) != len(pred):\n        return False", "if len(gold) != len(pred):\n        return True", EX),
    Mutant("ex-keeps-distinct-by-default", "coderag/evaluation/execution_match.py", "if not keep_distinct:",
           "if keep_distinct:", EX),
    Mutant("ex-test-suite-stops-at-first-database", "coderag/evaluation/execution_match.py",
           "        if not verdict.match:\n", "        if False:\n", EX),
    # --- exact match -------------------------------------------------------------------------------------------
    Mutant("em-empty-sql-matches", "coderag/evaluation/exact_match.py",
           'if not (pred or "").strip() or not (gold or "").strip():\n        return False',
           'if not (pred or "").strip() or not (gold or "").strip():\n        return True', EM),
    Mutant("em-semantic-inverted", "coderag/evaluation/exact_match.py",
           "return canonical_sql(pred, schema, dialect) == canonical_sql(gold, schema, dialect)",
           "return canonical_sql(pred, schema, dialect) != canonical_sql(gold, schema, dialect)", EM),
    Mutant("em-quoted-columns-become-strings", "coderag/evaluation/exact_match.py",
           "identifier.name.lower() not in columns", "identifier.name.lower() in columns", EM),
    Mutant("em-floats-not-rounded", "coderag/evaluation/sql_metrics.py", "rounded = round(value, FLOAT_DIGITS)",
           "rounded = value", EX),
    # --- retrieval metrics -------------------------------------------------------------------------------------
    Mutant("ranking-rank-off-by-one", "coderag/evaluation/ranking.py", "ranking.index(gold) + 1 if gold",
           "ranking.index(gold) + 2 if gold", RANKING),
    Mutant("ranking-recall-strict-cutoff", "coderag/evaluation/ranking.py",
           "sum(r is not None and r <= k for r in ranks)", "sum(r is not None and r < k for r in ranks)", RANKING),
    Mutant("ranking-mrr-without-cutoff", "coderag/evaluation/ranking.py",
           "sum(1.0 / r for r in ranks if r is not None and r <= 10)", "sum(1.0 / r for r in ranks if r is not None)",
           RANKING),
    Mutant("ranking-ndcg-wrong-discount", "coderag/evaluation/ranking.py", "1.0 / math.log2(r + 1)",
           "1.0 / math.log2(r + 2)", RANKING),
    # --- the quality gate --------------------------------------------------------------------------------------
    Mutant("gate-floor-strict", "coderag/release/gate.py", "ok = value >= floor_value", "ok = value > floor_value",
           GATE),
    Mutant("gate-paired-check-always-passes", "coderag/release/gate.py", "ok = comparison.high >= -max_regression",
           "ok = True", GATE),
    Mutant("gate-nan-counts-as-a-number", "coderag/release/gate.py",
           "return None if math.isnan(value) else value", "return value", GATE),
    Mutant("gate-bool-counts-as-a-number", "coderag/release/gate.py",
           "if isinstance(value, bool) or not isinstance(value, (int, float)):",
           "if not isinstance(value, (int, float)):", GATE),
    Mutant("gate-mcnemar-tail-short", "coderag/release/gate.py", "for i in range(0, min(b, c) + 1)",
           "for i in range(0, min(b, c))", GATE),
    Mutant("gate-ignores-max-regression", "coderag/release/gate.py", "needed = deployed - max_regression",
           "needed = deployed", GATE),
    Mutant("gate-uri-means-nothing-deployed", "coderag/release/gate.py", 'if "://" in str(source):\n        #',
           'if False:\n        #', GATE),
    Mutant("gate-always-passes", "coderag/release/gate.py", "GateDecision(passed=not reasons,",
           "GateDecision(passed=True,", GATE),
    # --- GitOps promotion --------------------------------------------------------------------------------------
    Mutant("promotion-prod-need-not-match-staging", "coderag/release/promotion.py",
           "if staging is not None and release != staging:", "if False:", PROMOTION),
    Mutant("promotion-prod-skips-staging", "coderag/release/promotion.py",
           'staging = read_release(repo, "staging") if env == "prod" else None', "staging = None", PROMOTION),
    Mutant("promotion-any-environment", "coderag/release/promotion.py", "if env not in ENVIRONMENTS:", "if False:",
           PROMOTION),
    Mutant("promotion-not-idempotent", "coderag/release/promotion.py", "    if not writes:\n", "    if False:\n",
           PROMOTION),
    Mutant("release-image-accepts-any-reference", "coderag/release/promotion.py",
           '''    if not _IMAGE_REF.match(image):
        raise PromotionError(f"image {image!r} is not <repository>@sha256:<64 lowercase hex digits>")''',
           '''    if False:
        raise PromotionError(f"image {image!r} is not <repository>@sha256:<64 lowercase hex digits>")''',
           ("tests/test_release_image.py",)),
    Mutant("promotion-any-image-reference", "coderag/release/promotion.py",
           "if not _IMAGE_REF.match(release.image):", "if False:", ("tests/test_release_image.py",)),
    # --- serving: error mapping and metrics ---------------------------------------------------------------------
    Mutant("serving-bad-input-is-500", "serving/errors.py",
           "    if isinstance(exc, (QuestionError, ConfigError)):\n        return 400",
           "    if isinstance(exc, (QuestionError, ConfigError)):\n        return 500", SERVING_ERRORS),
    Mutant("serving-backend-down-is-502", "serving/errors.py",
           "    if isinstance(exc, (GeneratorUnavailable, SchemaIndexError, EncoderError)):\n        return 503",
           "    if isinstance(exc, (GeneratorUnavailable, SchemaIndexError, EncoderError)):\n        return 502",
           SERVING_ERRORS),
    Mutant("serving-execution-errors-not-counted", "serving/rag.py",
           "            metrics.execution_errors.labels(service=SERVICE).inc()", "            pass", SERVING_HOSTILE),
    Mutant("serving-execute-latency-not-observed", "serving/rag.py",
           '("generate", "generate"), ("execute", "execute"),', '("generate", "generate"),', SERVING_HOSTILE),
    Mutant("serving-guard-refusals-not-counted", "serving/rag.py",
           "                metrics.guard_refusals.labels(service=SERVICE).inc()", "                pass", SERVING_RAG),
    Mutant("serving-probes-counted-as-requests", "serving/errors.py", 'if route not in ("metrics", "health"):',
           "if True:", ("tests/test_prometheus.py",)),
    Mutant("repair-skips-the-guard", "coderag/generation/answer.py",
           "        sql2, verdict2 = prepare_sql(reply2, dialect, transpile)",
           "        sql2, verdict2 = prepare_sql(reply2, dialect, transpile)\n"
           '        verdict2 = type(verdict2)(True, "allowed: unchecked", "SELECT")', SERVING_HOSTILE),
    # --- the shells and stages that carry those decisions (the breakages an audit found unguarded) ---------------
    Mutant("gate-component-drops-ex-floor", "components/gate.py",
           '{"recall@5": min_recall_at_5, "ex": min_execution_accuracy}', '{"recall@5": min_recall_at_5}', COMPONENTS),
    Mutant("index-stage-skips-held-out-schemas", "coderag/pipeline/stages.py",
           "    return dedupe_schemas(train + held_out)\n", "    return dedupe_schemas(train)\n", COMPONENTS),
    Mutant("cli-ships-without-index-commands", "coderag/cli/__init__.py", '    "coderag.cli.index",\n', "",
           ("tests/test_retrieval.py",)),
    Mutant("fingerprint-hashes-names-only", "coderag/retrieval/encoder.py",
           'digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")', "pass",
           ("tests/test_encoder.py",)),
    Mutant("promotion-any-uri-scheme", "coderag/release/promotion.py", "if not uri.startswith(URI_SCHEMES) or ",
           "if ", PROMOTION),
]


def _copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "*.egg-info")
    shutil.copytree(REPO_ROOT, dest, ignore=ignore, symlinks=True)


def _run_tests(copy: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[str, float]:
    """('passed' | 'failed' | 'timeout', seconds) of the tests, run in the copy with the copy's code."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    if done.returncode not in (0, 1):
        # 2-5: interrupted, internal error, usage error, nothing collected: the list itself is broken.
        raise SystemExit(f"pytest exited {done.returncode} on {' '.join(tests)}:\n{done.stdout[-2000:]}")
    return ("passed" if done.returncode == 0 else "failed"), time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="run mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--timeout-factor", type=float, default=5.0,
                        help="a mutant's tests may run this many times their unmutated time, plus 30 s; longer kills")
    args = parser.parse_args(argv)
    names = [m.name for m in MUTANTS]
    if len(names) != len(set(names)):
        raise SystemExit("mutant names must be unique")
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    if not chosen:
        raise SystemExit(f"no mutant matches {args.only}: see --list")
    if args.list:
        stale = 0
        for m in chosen:
            found = (REPO_ROOT / m.path).read_text(encoding="utf-8").count(m.old) == 1
            stale += not found
            print(f"{m.name:45} {m.path}  <- {' '.join(m.tests)}{'' if found else '  STALE'}")
        return 1 if stale else 0

    results = []
    with tempfile.TemporaryDirectory(prefix="coderag-mutants-") as tmp:
        copy = Path(tmp) / "checkout"
        _copy_checkout(copy)
        shared = REPO_ROOT.parent / "shared"
        if shared.is_dir():  # tests find Spider and the CRDs beside the checkout, as in CI
            (Path(tmp) / "shared").symlink_to(shared)
        budget: dict[tuple[str, ...], float] = {}
        for tests in dict.fromkeys(m.tests for m in chosen):
            status, seconds = _run_tests(copy, tests, 1800.0)
            budget[tests] = 30.0 + args.timeout_factor * seconds
            print(f"baseline {' '.join(tests)}: {status} ({seconds:.0f} s)", flush=True)
            if status != "passed":
                raise SystemExit("the unmutated tests must pass first: fix them, then rerun")
        for i, mutant in enumerate(chosen, 1):
            target = copy / mutant.path
            original = target.read_text(encoding="utf-8")
            count = original.count(mutant.old)
            if count != 1:
                status, seconds = "stale", 0.0
            else:
                target.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
                try:
                    outcome, seconds = _run_tests(copy, mutant.tests, budget[mutant.tests])
                finally:
                    target.write_text(original, encoding="utf-8")
                status = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}[outcome]
            results.append({"name": mutant.name, "path": mutant.path, "status": status, "seconds": round(seconds, 1)})
            print(f"[{i}/{len(chosen)}] {status:16} {mutant.name} ({mutant.path}, {seconds:.0f} s)", flush=True)

    killed = sum(r["status"].startswith("killed") for r in results)
    survived = [r["name"] for r in results if r["status"] == "SURVIVED"]
    stale = [r["name"] for r in results if r["status"] == "stale"]
    score = killed / len(results)
    print(f"\nmutation score: {killed}/{len(results)} killed ({score:.1%}); survived: {', '.join(survived) or 'none'}; "
          f"stale: {', '.join(stale) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "total": len(results), "score": score,
                                         "mutants": results}, indent=2) + "\n", encoding="utf-8")
    return 0 if not survived and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
